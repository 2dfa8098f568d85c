// The socket and its directory are the user's alone (daemon-anchors.md: Unix socket security).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/unix_socket.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using testing::ModeOf;
using testing::TempDir;

TEST(SocketDirectory, CreatedOwnerOnly) {
  TempDir tmp;
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 0700u);
}

// Only a directory ligerd creates gets its mode set: an existing one (e.g. /tmp for
// --socket=/tmp/x.sock) is used as it is when safe, never chmodded for everyone else.
TEST(SocketDirectory, ExistingDirectoryKeepsItsMode) {
  TempDir tmp;
  ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0755), 0);
  chmod(tmp.Join("d").c_str(), 0755);
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 0755u);
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), getegid()).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 0755u);
}

TEST(SocketDirectory, ExistingStickyWorldWritableDirectoryIsUsedAsIs) {
  TempDir tmp;  // like /tmp: anyone may write, only owners may remove or rename
  ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0700), 0);
  ASSERT_EQ(chmod(tmp.Join("d").c_str(), 01777), 0);
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 01777u);
}

TEST(SocketDirectory, ExistingDirectoryWritableByOthersIsRefused) {
  TempDir tmp;  // without the sticky bit anyone could replace the socket
  for (mode_t mode : {0777, 0770, 0722}) {
    ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0700), 0);
    ASSERT_EQ(chmod(tmp.Join("d").c_str(), mode), 0);
    auto status = PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << std::oct << mode;
    EXPECT_NE(status.message().find("writable by"), absl::string_view::npos) << status;
    EXPECT_EQ(ModeOf(tmp.Join("d")), mode) << "a refused directory is left as it was";
    ASSERT_EQ(rmdir(tmp.Join("d").c_str()), 0);
  }
}

TEST(SocketDirectory, ExistingDirectoryOfRootIsUsedAsIs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to own a directory as root and be another uid";
  TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0711), 0);  // nobody may pass through
  ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0700), 0);
  ASSERT_EQ(chmod(tmp.Join("d").c_str(), 01777), 0);
  // Run as nobody in a child: a root-owned sticky directory (/tmp) is fine for another user.
  const pid_t child = fork();
  if (child == 0) {
    if (setgid(testing::kNogroupGid) != 0 || setuid(testing::kNobodyUid) != 0) _exit(3);
    _exit(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt).ok() ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
  EXPECT_EQ(ModeOf(tmp.Join("d")), 01777u);
}

TEST(SocketDirectory, GroupModeIs0710) {
  TempDir tmp;
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/s"), getegid()).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 0710u);
}

TEST(SocketDirectory, SymlinkIsRefused) {
  TempDir tmp;
  ASSERT_EQ(mkdir(tmp.Join("real").c_str(), 0700), 0);
  ASSERT_EQ(symlink(tmp.Join("real").c_str(), tmp.Join("link").c_str()), 0);
  auto status = PrepareSocketDirectory(tmp.Join("link/ligerd.sock"), std::nullopt);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("not a directory"), absl::string_view::npos);
}

TEST(SocketDirectory, DirectoryOfAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a directory owned by another uid";
  TempDir tmp;
  ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0700), 0);
  ASSERT_EQ(chown(tmp.Join("d").c_str(), testing::kNobodyUid, testing::kNogroupGid), 0);
  auto status = PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("belongs to uid"), absl::string_view::npos);
}

TEST(ListeningSocket, OwnerOnlyByDefault) {
  TempDir tmp;
  auto socket = ListeningSocket::Bind(tmp.Join("s"), std::nullopt);
  ASSERT_TRUE(socket.ok()) << socket.status();
  EXPECT_EQ(ModeOf(tmp.Join("s")), 0600u);
}

TEST(ListeningSocket, GroupReadWriteWithSocketGroup) {
  TempDir tmp;
  auto socket = ListeningSocket::Bind(tmp.Join("s"), getegid());
  ASSERT_TRUE(socket.ok()) << socket.status();
  EXPECT_EQ(ModeOf(tmp.Join("s")), 0660u);
}

TEST(ListeningSocket, ExistingPathIsAnError) {
  TempDir tmp;
  auto first = ListeningSocket::Bind(tmp.Join("s"), std::nullopt);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(ListeningSocket::Bind(tmp.Join("s"), std::nullopt).ok());
}

}  // namespace
}  // namespace ligerd
