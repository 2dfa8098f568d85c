// The socket and its directory are the user's alone (daemon-anchors.md: Unix socket security).
#include <gtest/gtest.h>
#include <sys/stat.h>
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

TEST(SocketDirectory, ExistingLooseDirectoryIsTightened) {
  TempDir tmp;
  ASSERT_EQ(mkdir(tmp.Join("d").c_str(), 0777), 0);
  chmod(tmp.Join("d").c_str(), 0777);
  ASSERT_TRUE(PrepareSocketDirectory(tmp.Join("d/ligerd.sock"), std::nullopt).ok());
  EXPECT_EQ(ModeOf(tmp.Join("d")), 0700u);
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
