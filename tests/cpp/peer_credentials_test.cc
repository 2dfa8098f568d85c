// Other users are refused, for real: a forked child drops to `nobody` and connects.
#include "server/peer_credentials.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "server/daemon.h"
#include "tests/cpp/fake_ipc.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using testing::TempDir;

TEST(CheckPeer, AdmitsOwnUidAndRoot) {
  PeerPolicy policy{1000, std::nullopt};
  EXPECT_TRUE(CheckPeer({1, 1000, 1000}, policy).ok());
  EXPECT_TRUE(CheckPeer({1, 0, 0}, policy).ok());
}

TEST(CheckPeer, RefusesOtherUidsNamingThem) {
  PeerPolicy policy{1000, std::nullopt};
  auto status = CheckPeer({42, 1001, 1001}, policy);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(status.message().find("uid 1001"), absl::string_view::npos);
}

TEST(CheckPeer, AdmitsTheConfiguredGroupByPrimaryGid) {
  PeerPolicy policy{1000, gid_t{77}};
  EXPECT_TRUE(CheckPeer({1, 1001, 77}, policy).ok());
  EXPECT_FALSE(CheckPeer({1, 1001, 78}, policy).ok());
}

TEST(GetPeerCredentials, ReportsThisProcess) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  auto peer = GetPeerCredentials(fds[0]);
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(peer->pid, getpid());
  EXPECT_EQ(peer->uid, geteuid());
  close(fds[0]);
  close(fds[1]);
}

// Child exit codes.
constexpr int kConnectDenied = 10;   // connect() failed with EACCES (file-system permissions)
constexpr int kConnectFailed = 11;
constexpr int kClosedByDaemon = 20;  // connected, then the daemon hung up without a word
constexpr int kDaemonSpoke = 21;     // connected and the daemon answered (HTTP/2 SETTINGS)
constexpr int kNoAnswer = 22;

// In the child: optionally drop to nobody, connect, send the HTTP/2 preface, and report what
// happened. Only raw syscalls: the parent has threads, so the child must not touch gRPC.
[[noreturn]] void ConnectAs(bool drop_to_nobody, const std::string& path) {
  if (drop_to_nobody) {
    if (setgroups(0, nullptr) != 0 || setgid(testing::kNogroupGid) != 0 || setuid(testing::kNobodyUid) != 0) _exit(99);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    _exit(errno == EACCES ? kConnectDenied : kConnectFailed);
  }
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
  [[maybe_unused]] ssize_t w = send(fd, kPreface, sizeof(kPreface) - 1, MSG_NOSIGNAL);
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 3000) <= 0) _exit(kNoAnswer);
  char buf[64];
  const ssize_t n = recv(fd, buf, sizeof(buf), 0);
  _exit(n > 0 ? kDaemonSpoke : kClosedByDaemon);
}

int RunChild(bool drop_to_nobody, const std::string& path) {
  const pid_t child = fork();
  if (child == 0) ConnectAs(drop_to_nobody, path);
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

class PeerRefusalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another uid (nobody)";
    // The temp dir's parent must be traversable by nobody for the second test.
    chmod(tmp_.path().c_str(), 0755);
    config_.socket_path = tmp_.Join("run/ligerd.sock");
    config_.cache_dir = tmp_.Join("cache");
    DaemonFacts facts;
    auto daemon = Daemon::Start(config_, facts, &opener_);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }
  testing::FakeIpcOpener opener_;
  TempDir tmp_;
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(PeerRefusalTest, SameUserIsAdmitted) {
  EXPECT_EQ(RunChild(false, config_.socket_path), kDaemonSpoke);
  EXPECT_EQ(daemon_->refused_connections(), 0u);
}

TEST_F(PeerRefusalTest, OtherUserCannotEvenReachTheSocket) {
  EXPECT_EQ(RunChild(true, config_.socket_path), kConnectDenied);
}

TEST_F(PeerRefusalTest, OtherUserIsRefusedByPeerCredentialsWhenPermissionsAreOpen) {
  // Open the file-system permissions, as a careless admin might: SO_PEERCRED still refuses.
  chmod(tmp_.Join("run").c_str(), 0711);
  chmod(config_.socket_path.c_str(), 0666);
  EXPECT_EQ(RunChild(true, config_.socket_path), kClosedByDaemon);
  EXPECT_EQ(daemon_->refused_connections(), 1u);
  EXPECT_EQ(RunChild(false, config_.socket_path), kDaemonSpoke) << "the daemon keeps serving its user";
}

}  // namespace
}  // namespace ligerd
