// The real ligerd binary: starts in under a second, refuses a second instance (exit 3), exits 0
// within 2 s of SIGTERM and removes its socket, recovers from a SIGKILLed predecessor.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "client/control_client.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using namespace std::chrono_literals;
using testing::TempDir;
using testing::WaitFor;

pid_t Spawn(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(LIGERD_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

// Exit code, or -1 if it did not exit within `timeout`.
int WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  int wstatus = 0;
  const bool exited = WaitFor([&] { return waitpid(pid, &wstatus, WNOHANG) == pid; }, timeout);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &wstatus, 0);
    return -1;
  }
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
}

bool Serving(const std::string& socket) {
  ControlClient client(socket, 200ms);
  auto health = client.Health();
  return health.ok() && *health == grpc::health::v1::HealthCheckResponse::SERVING;
}

class LigerdBinaryTest : public ::testing::Test {
 protected:
  std::vector<std::string> Args() {
    return {LIGERD_BINARY, "--socket=" + socket_, "--cache_dir=" + tmp_.Join("cache"), "--log_level=warning"};
  }
  TempDir tmp_;
  std::string socket_ = tmp_.Join("run/ligerd.sock");
};

TEST_F(LigerdBinaryTest, StartsFastRefusesSecondInstanceAndStopsOnSigterm) {
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t daemon = Spawn(Args());
  ASSERT_TRUE(WaitFor([&] { return Serving(socket_); }, 5s));
  const auto startup = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(startup, 1s) << "ligerd took "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(startup).count() << " ms";

  EXPECT_EQ(WaitExit(Spawn(Args()), 5s), 3) << "a second instance must exit with code 3";
  EXPECT_TRUE(Serving(socket_));

  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(daemon, SIGTERM), 0);
  EXPECT_EQ(WaitExit(daemon, 2s), 0) << "ligerd must exit 0 within 2 s of SIGTERM";
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s);
  EXPECT_EQ(access(socket_.c_str(), F_OK), -1) << "socket left behind";
}

TEST_F(LigerdBinaryTest, RecoversFromAKilledPredecessor) {
  const pid_t first = Spawn(Args());
  ASSERT_TRUE(WaitFor([&] { return Serving(socket_); }, 5s));
  kill(first, SIGKILL);
  waitpid(first, nullptr, 0);
  ASSERT_EQ(access(socket_.c_str(), F_OK), 0) << "a SIGKILLed daemon leaves its socket";
  const pid_t second = Spawn(Args());
  EXPECT_TRUE(WaitFor([&] { return Serving(socket_); }, 5s));
  kill(second, SIGINT);
  EXPECT_EQ(WaitExit(second, 2s), 0);
}

TEST_F(LigerdBinaryTest, BadFlagsExitTwoWithAMessage) {
  EXPECT_EQ(WaitExit(Spawn({LIGERD_BINARY, "--socket=relative"}), 5s), 2);
  EXPECT_EQ(WaitExit(Spawn({LIGERD_BINARY, "--devices=zero"}), 5s), 2);
}

}  // namespace
}  // namespace ligerd
