// The daemon's cache directory at start (server/cache_dir.h): private without --socket_group;
// with it, group-readable (0750, entries 0640) so that a job of another user in the group reads
// the node's kernels (read-only) and a user outside the group cannot; read-only dirs accepted.
#include "server/cache_dir.h"

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>

#include "gtest/gtest.h"
#include "kernels/jit/jit_cache.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {

constexpr uid_t kJobUid = 65533;  // a job's user: neither root (the daemon here) nor nobody
constexpr gid_t kOtherGid = 65533;

// A compiler that must never be called: the job reads what the daemon stored.
class NoCompiler : public kernels::Compiler {
 public:
  std::string VersionTag() const override { return "none"; }
  absl::StatusOr<kernels::CompiledModule> Compile(const kernels::CompileRequest&) const override {
    return absl::InternalError("no compile expected");
  }
};
class EchoCompiler : public kernels::Compiler {
 public:
  std::string VersionTag() const override { return "none"; }
  absl::StatusOr<kernels::CompiledModule> Compile(const kernels::CompileRequest& r) const override {
    return kernels::CompiledModule{kernels::BinaryKind::kCubin, "image of " + r.op};
  }
};

kernels::CompileRequest Request() {
  kernels::CompileRequest r;
  r.op = "op";
  r.variant = "v";
  r.arch = "sm_90";
  r.main = {"m.cuh", "text"};
  return r;
}

mode_t ModeOf(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}
gid_t GroupOf(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 ? st.st_gid : 0;
}

int InChild(uid_t uid, gid_t gid, const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(30);
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(100);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

TEST(PrepareCacheDir, PrivateWithoutAGroup) {
  testing::TempDir tmp;
  const std::string dir = tmp.Join("cache");
  ASSERT_TRUE(PrepareCacheDir(dir, std::nullopt).ok());
  EXPECT_EQ(ModeOf(dir), 0700u);
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);  // ours, opened up by hand: private again
  ASSERT_TRUE(PrepareCacheDir(dir, std::nullopt).ok());
  EXPECT_EQ(ModeOf(dir), 0700u);
}

TEST(PrepareCacheDir, SocketGroupReadsTheNodeCacheOthersCannot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the job as another user";
  testing::TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  const std::string dir = tmp.Join("cache");
  // An entry written before the directory was shared (0600), and a tuning dir.
  std::string entry;
  {
    auto cache = kernels::JitCache::Open(dir, std::make_shared<EchoCompiler>());
    ASSERT_TRUE(cache.ok()) << cache.status();
    ASSERT_TRUE((*cache)->Get(Request()).ok());
    entry = (*cache)->EntryPath(Request(), (*cache)->KeyFor(Request())).string();
    ASSERT_EQ(mkdir((dir + "/tuning").c_str(), 0700), 0);
  }
  EXPECT_EQ(ModeOf(entry), 0600u);
  auto access = PrepareCacheDir(dir, testing::kNogroupGid);
  ASSERT_TRUE(access.ok()) << access.status();
  EXPECT_FALSE(access->read_only);
  EXPECT_EQ(ModeOf(dir), 0750u);
  EXPECT_EQ(GroupOf(dir), testing::kNogroupGid);
  EXPECT_EQ(ModeOf(dir + "/tuning"), 0750u);
  EXPECT_EQ(ModeOf(entry), 0640u);
  EXPECT_EQ(GroupOf(entry), testing::kNogroupGid);
  // An entry the daemon writes now gets the group and 0640 too.
  {
    auto cache = kernels::JitCache::Open(dir, std::make_shared<EchoCompiler>());
    ASSERT_TRUE(cache.ok()) << cache.status();
    kernels::CompileRequest later = Request();
    later.op = "later";
    ASSERT_TRUE((*cache)->Get(later).ok());
    const std::string fresh = (*cache)->EntryPath(later, (*cache)->KeyFor(later)).string();
    EXPECT_EQ(ModeOf(fresh), 0640u);
    EXPECT_EQ(GroupOf(fresh), testing::kNogroupGid);
  }

  // A job of another user in the group: reads the entry (no compile), read-only.
  EXPECT_EQ(InChild(kJobUid, testing::kNogroupGid, [&]() -> int {
              auto cache = kernels::JitCache::Open(dir, std::make_shared<NoCompiler>());
              if (!cache.ok()) return 1;
              if (!(*cache)->read_only()) return 2;
              auto m = (*cache)->Get(Request());
              return m.ok() && (*m)->image == "image of op" ? 0 : 3;
            }),
            0);
  // A user outside the group cannot read it at all.
  EXPECT_EQ(InChild(kJobUid, kOtherGid, [&]() -> int {
              auto cache = kernels::JitCache::Open(dir, std::make_shared<NoCompiler>());
              return !cache.ok() && cache.status().message().find("cannot read") != std::string::npos ? 0 : 1;
            }),
            0);
}

TEST(PrepareCacheDir, ReadOnlyDirectoryIsAcceptedAsItIs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the daemon as another user";
  testing::TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  const std::string dir = tmp.Join("precompiled");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);  // root's: read-only for nobody
  EXPECT_EQ(InChild(testing::kNobodyUid, testing::kNogroupGid, [&]() -> int {
              auto access = PrepareCacheDir(dir, std::nullopt);
              return access.ok() && access->read_only ? 0 : 1;
            }),
            0);
  EXPECT_EQ(ModeOf(dir), 0755u) << "a read-only cache dir must not be changed";
}

}  // namespace
}  // namespace ligerd
