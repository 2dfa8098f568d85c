#include "server/instance_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using testing::TempDir;

// Leaves a socket file behind, as a SIGKILLed daemon does.
void MakeStaleSocket(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
}

TEST(InstanceLock, SecondInstanceIsRefusedWithTheHoldersPid) {
  TempDir tmp;
  auto first = InstanceLock::Acquire(tmp.Join("s"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->removed_stale());
  auto second = InstanceLock::Acquire(tmp.Join("s"));
  ASSERT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(second.status().message().find(absl::StrCat("pid ", getpid())), absl::string_view::npos)
      << second.status();
}

TEST(InstanceLock, ReleasedLockCanBeTakenAgain) {
  TempDir tmp;
  { ASSERT_TRUE(InstanceLock::Acquire(tmp.Join("s")).ok()); }
  EXPECT_TRUE(InstanceLock::Acquire(tmp.Join("s")).ok());
}

TEST(InstanceLock, StaleSocketFromAKilledInstanceIsRemoved) {
  TempDir tmp;
  const std::string path = tmp.Join("s");
  // A child takes the lock, leaves a socket file, and is killed without cleaning up.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = InstanceLock::Acquire(path);
    if (!lock.ok()) _exit(1);
    MakeStaleSocket(path);
    raise(SIGKILL);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wstatus));
  ASSERT_EQ(testing::ModeOf(path) != 0, true) << "the killed child should have left a socket";
  auto lock = InstanceLock::Acquire(path);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_TRUE(lock->removed_stale());
  EXPECT_EQ(access(path.c_str(), F_OK), -1);
}

TEST(InstanceLock, NonSocketAtThePathIsNotDeleted) {
  TempDir tmp;
  std::ofstream(tmp.Join("s")) << "precious";
  auto lock = InstanceLock::Acquire(tmp.Join("s"));
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(access(tmp.Join("s").c_str(), F_OK), 0);
}

TEST(InstanceLock, ReleaseRemovesTheSocketFile) {
  TempDir tmp;
  {
    auto lock = InstanceLock::Acquire(tmp.Join("s"));
    ASSERT_TRUE(lock.ok());
    MakeStaleSocket(tmp.Join("s"));  // stands in for the live socket
  }
  EXPECT_EQ(access(tmp.Join("s").c_str(), F_OK), -1);
}

}  // namespace
}  // namespace ligerd
