// The real ligerd binary: starts in under a second, refuses a second instance (exit 3), exits 0
// within 2 s of SIGTERM and removes its socket, recovers from a SIGKILLed predecessor.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/control_client.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using namespace std::chrono_literals;
using testing::TempDir;
using testing::WaitFor;

// `stderr_path`: where the child's stderr goes ("" = inherited). `nofile`: RLIMIT_NOFILE (0 = as is).
pid_t Spawn(const std::vector<std::string>& args, const std::string& stderr_path = "", rlim_t nofile = 0) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (!stderr_path.empty()) {
      const int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || dup2(fd, 2) < 0) _exit(126);
    }
    if (nofile != 0) {
      const rlimit limit{nofile, nofile};
      if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(125);
    }
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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST_F(LigerdBinaryTest, BadFlagsExitTwoWithAMessage) {
  EXPECT_EQ(WaitExit(Spawn({LIGERD_BINARY, "--socket=relative"}), 5s), 2);
  EXPECT_EQ(WaitExit(Spawn({LIGERD_BINARY, "--devices=zero"}), 5s), 2);
  // Every bad flag or flag value exits 2 (systemd's RestartPreventExitStatus=2 stops retrying a
  // typo), with a message naming the flag.
  const std::string err = tmp_.Join("stderr");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{LIGERD_BINARY, "--sockt=/tmp/x.sock"}, "sockt"},
      {{LIGERD_BINARY, "--nosuchflag"}, "nosuchflag"},
      {{LIGERD_BINARY, "--socket"}, "socket"},
      {{LIGERD_BINARY, "--max_sessions=lots"}, "max_sessions"},
      {{LIGERD_BINARY, "--max_sessions=0"}, "max_sessions"},
      {{LIGERD_BINARY, "--idle_connection_timeout_s=-1"}, "idle_connection_timeout_s"},
      {{LIGERD_BINARY, "--log_level=loud"}, "log_level"},
      {{LIGERD_BINARY, "--socket=/tmp/a.sock", "extra"}, "extra"},
  };
  for (const auto& [args, name] : cases) {
    EXPECT_EQ(WaitExit(Spawn(args, err), 5s), 2) << args.back();
    const std::string message = ReadFile(err);
    EXPECT_NE(message.find(name), std::string::npos) << args.back() << ": " << message;
  }
}

// --help and --version answer (absl's built-in flags are not refused as unknown), on stdout.
TEST_F(LigerdBinaryTest, HelpAndVersionAnswer) {
  const std::string out = tmp_.Join("stdout");
  for (const auto& [flag, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--help", "--socket"}, {"--helpfull", "--socket"}, {"--version", "ligerd "}}) {
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
      execl(LIGERD_BINARY, LIGERD_BINARY, flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const int code = WaitExit(pid, 5s);
    EXPECT_TRUE(code == 0 || code == 1) << flag << " exited " << code;  // absl: 0 version, 1 help
    const std::string text = ReadFile(out);
    EXPECT_NE(text.find(expected), std::string::npos) << flag << ": " << text.substr(0, 400);
    EXPECT_EQ(text.find("unknown flag"), std::string::npos) << flag << ": " << text.substr(0, 400);
  }
}

// utime + stime of `pid`, in milliseconds.
long CpuMs(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return (utime + stime) * 1000 / sysconf(_SC_CLK_TCK);
}

int RawConnect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Out of fds, the acceptor backs off (no busy loop) and logs about once a second (not every
// failure); once fds free up, a new connection is served again.
TEST_F(LigerdBinaryTest, FdExhaustionBacksOffRateLimitsItsLogAndRecovers) {
  const std::string log = tmp_.Join("log");
  std::vector<std::string> args = Args();
  args.back() = "--log_level=info";
  const pid_t daemon = Spawn(args, log, /*nofile=*/48);
  ASSERT_TRUE(WaitFor([&] { return Serving(socket_); }, 5s)) << ReadFile(log);
  std::vector<int> connections;
  for (int i = 0; i < 100; ++i) {
    const int fd = RawConnect(socket_);
    if (fd >= 0) connections.push_back(fd);
  }
  ASSERT_TRUE(WaitFor([&] { return ReadFile(log).find("Too many open files") != std::string::npos; }, 5s))
      << "the daemon never ran out of fds: " << ReadFile(log);
  const long cpu0 = CpuMs(daemon);
  const size_t log0 = ReadFile(log).size();
  std::this_thread::sleep_for(2s);
  const long cpu_ms = CpuMs(daemon) - cpu0;
  const size_t log_bytes = ReadFile(log).size() - log0;
  EXPECT_LT(cpu_ms, 300) << "the acceptor spins while out of fds";
  EXPECT_LT(log_bytes, 2048u) << "the acceptor logs every failure:\n" << ReadFile(log).substr(0, 4096);
  for (int fd : connections) close(fd);
  EXPECT_TRUE(WaitFor([&] { return Serving(socket_); }, 5s)) << "no recovery once fds are free";
  kill(daemon, SIGTERM);
  EXPECT_EQ(WaitExit(daemon, 3s), 0);
}

}  // namespace
}  // namespace ligerd
