// Limits that keep one peer from making the daemon unreachable for the node: per-pid, per-uid and
// total connection caps, the idle-connection timeout, per-pid / per-uid / total session caps, and
// the systemd units' open-file limit that the default caps must fit in.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client/control_client.h"
#include "server/daemon.h"
#include "server/session_registry.h"
#include "tests/cpp/fake_ipc.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using namespace std::chrono_literals;
using testing::TempDir;
using testing::WaitFor;

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

// An admitted connection gets gRPC's SETTINGS frame; a refused one is closed with nothing sent.
enum class Outcome { kAdmitted, kClosed, kSilent };
Outcome Wait(int fd, std::chrono::milliseconds timeout = 3s) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return Outcome::kSilent;
  char buffer[256];
  return read(fd, buffer, sizeof(buffer)) > 0 ? Outcome::kAdmitted : Outcome::kClosed;
}

// True once the peer closed `fd` (after whatever it sent).
bool ClosedWithin(int fd, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buffer[256];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) return true;
    }
  }
  return false;
}

class ConnectionLimitsTest : public ::testing::Test {
 protected:
  void Start() {
    config_.socket_path = tmp_.Join("run/ligerd.sock");
    config_.cache_dir = tmp_.Join("cache");
    auto daemon = Daemon::Start(config_, DaemonFacts{}, &opener_);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
  }
  int Connect() {
    const int fd = RawConnect(config_.socket_path);
    fds_.push_back(fd);
    return fd;
  }

  testing::FakeIpcOpener opener_;
  TempDir tmp_;
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
  std::vector<int> fds_;
};

TEST_F(ConnectionLimitsTest, PerPidCapClosesTheExtraConnectionAndFreesOnClose) {
  config_.max_connections_per_pid = 3;
  Start();
  std::vector<int> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(Connect());
    ASSERT_EQ(Wait(open.back()), Outcome::kAdmitted) << i;
  }
  EXPECT_EQ(Wait(Connect()), Outcome::kClosed) << "a 4th connection from one pid must be refused";
  EXPECT_EQ(daemon_->refused_connections(), 1u);
  close(open[0]);
  fds_.erase(std::find(fds_.begin(), fds_.end(), open[0]));
  ASSERT_TRUE(WaitFor([&] { return daemon_->open_connections() == 2; }, 3s)) << "closed connection still counted";
  EXPECT_EQ(Wait(Connect()), Outcome::kAdmitted);
}

// Another process of the same user hits the per-uid cap (and only the total cap at its own).
TEST_F(ConnectionLimitsTest, PerUidAndTotalCaps) {
  config_.max_connections_per_uid = 2;
  Start();
  ASSERT_EQ(Wait(Connect()), Outcome::kAdmitted);
  ASSERT_EQ(Wait(Connect()), Outcome::kAdmitted);
  const pid_t child = fork();
  if (child == 0) _exit(Wait(RawConnect(config_.socket_path)) == Outcome::kClosed ? 0 : 1);
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "same uid, other pid: refused";
}

TEST_F(ConnectionLimitsTest, TotalCap) {
  config_.max_connections = 2;
  Start();
  ASSERT_EQ(Wait(Connect()), Outcome::kAdmitted);
  ASSERT_EQ(Wait(Connect()), Outcome::kAdmitted);
  EXPECT_EQ(Wait(Connect()), Outcome::kClosed);
}

// A connection that sends nothing (or stops calling) is closed after the idle timeout, and a
// client that was idle simply reconnects on its next call.
TEST_F(ConnectionLimitsTest, IdleConnectionsAreClosed) {
  config_.idle_connection_timeout_ms = 300;
  Start();
  const int raw = Connect();
  ASSERT_EQ(Wait(raw), Outcome::kAdmitted);
  EXPECT_TRUE(ClosedWithin(raw, 3s)) << "an idle raw connection must be closed";
  ControlClient client(config_.socket_path);
  ASSERT_TRUE(client.Health().ok());
  EXPECT_TRUE(WaitFor([&] { return daemon_->open_connections() == 0; }, 3s));
  // The first call after the server's GOAWAY may race the channel's reconnect (UNAVAILABLE, as
  // gRPC documents for a closing connection); within a few seconds the client must be back.
  EXPECT_TRUE(WaitFor([&] { return client.Health().ok(); }, 3s)) << "the client reconnects after an idle close";
}

class SessionLimitsTest : public ::testing::Test {
 protected:
  std::unique_ptr<SessionRegistry> Registry(SessionLimits limits) {
    limits.ring_capacity = 16;
    return std::make_unique<SessionRegistry>(limits, std::vector<DeviceState>{{0, true}}, true, &opener_);
  }
  static ligerd::v1::OpenSessionRequest Request(pid_t pid) {
    ligerd::v1::OpenSessionRequest request;
    request.set_protocol_version(2);
    request.set_client_pid(pid);
    return request;
  }
  absl::Status Open(SessionRegistry& registry, pid_t pid) {
    return registry.Open(Request(pid), PeerCredentials{pid, getuid(), getgid()}, 2, 2).status();
  }
  // Live processes to open sessions for (a session watches its process through a pidfd).
  pid_t Sleeper() {
    const pid_t pid = fork();
    if (pid == 0) {
      pause();
      _exit(0);
    }
    children_.push_back(pid);
    return pid;
  }
  void TearDown() override {
    for (pid_t pid : children_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  testing::FakeIpcOpener opener_;
  std::vector<pid_t> children_;
};

TEST_F(SessionLimitsTest, PerPidCapIsResourceExhaustedNamingTheFlag) {
  SessionLimits limits;
  limits.max_sessions_per_pid = 2;
  auto registry = Registry(limits);
  ASSERT_TRUE(Open(*registry, getpid()).ok());
  ASSERT_TRUE(Open(*registry, getpid()).ok());
  absl::Status third = Open(*registry, getpid());
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("--max_sessions_per_pid=2"), absl::string_view::npos) << third;
  EXPECT_TRUE(Open(*registry, Sleeper()).ok()) << "other processes are not limited by it";
}

TEST_F(SessionLimitsTest, PerUidCap) {
  SessionLimits limits;
  limits.max_sessions_per_uid = 2;
  auto registry = Registry(limits);
  ASSERT_TRUE(Open(*registry, Sleeper()).ok());
  ASSERT_TRUE(Open(*registry, Sleeper()).ok());
  absl::Status third = Open(*registry, Sleeper());
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("--max_sessions_per_uid=2"), absl::string_view::npos) << third;
}

TEST_F(SessionLimitsTest, TotalCap) {
  SessionLimits limits;
  limits.max_sessions = 1;
  auto registry = Registry(limits);
  ASSERT_TRUE(Open(*registry, getpid()).ok());
  absl::Status second = Open(*registry, Sleeper());
  EXPECT_EQ(second.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(second.message().find("--max_sessions=1"), absl::string_view::npos) << second;
}

// Both systemd units raise the open-file limit, and the default caps fit in it.
TEST(SystemdUnits, LimitNofileHoldsTheDefaultCaps) {
  const DaemonConfig defaults;
  const SessionLimits session_defaults;
  EXPECT_EQ(defaults.max_sessions, session_defaults.max_sessions);
  EXPECT_LT(defaults.max_sessions_per_pid, defaults.max_sessions);
  EXPECT_LT(defaults.max_sessions_per_uid, defaults.max_sessions);
  EXPECT_LT(defaults.max_connections_per_uid, defaults.max_connections);
  EXPECT_LE(defaults.max_connections + 2 * defaults.max_sessions + 256, 65536u);
  for (const char* unit : {"ligerd.service", "ligerd-system.service"}) {
    std::ifstream in(std::string(LIGERD_SOURCE_DIR "/deploy/systemd/") + unit);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_NE(text.str().find("\nLimitNOFILE=65536\n"), std::string::npos) << unit;
  }
}

}  // namespace
}  // namespace ligerd
