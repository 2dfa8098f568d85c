// The cache directory against what an operator's node can hold (issue 17): entries that are
// links, FIFOs, devices or oversized; corrupt entries (logged); writes that fail (precompile says
// so); read-only directories (a complete precompiled cache, another user's); the node daemon's
// group-readable cache read by a job of another user (read-only, trusted owner).
//
// Read-only cases run in a child process as nobody: root (these tests' usual user in CI) may
// write anywhere, so only another uid sees a directory as read-only.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/jit/jit_cache.h"
#include "kernels/precompile.h"
#include "kernels/tuning/tuning_db.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::FakeCompiler;
using testing::SampleRequest;
using testing::TempDir;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr uid_t kOtherUid = 65533;  // an owner that is neither root nor nobody

// Collects CacheLog/TuningLog lines for the test's lifetime.
class LogCapture {
 public:
  LogCapture() {
    SetCacheLogSink([this](std::string_view l) { Add(l); });
    SetTuningLogSink([this](std::string_view l) { Add(l); });
  }
  ~LogCapture() {
    SetCacheLogSink(nullptr);
    SetTuningLogSink(nullptr);
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const std::string& l : lines_) out += l + "\n";
    return out;
  }

 private:
  void Add(std::string_view l) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.emplace_back(l);
  }
  std::mutex mu_;
  std::vector<std::string> lines_;
};

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `body` in a child as nobody; its gtest failures are reported through the exit status
// (the number of failed checks, capped) and what it printed.
void AsNobody(const std::function<int()>& body) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a child as nobody";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(30);
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0) ::_exit(100);
    ::_exit(body());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "child (as nobody) failed check #" << WEXITSTATUS(status);
}

// A cache with one valid entry for SampleRequest(); returns the entry's path.
std::filesystem::path FillOneEntry(const std::filesystem::path& dir) {
  auto cache = JitCache::Open(dir, std::make_shared<FakeCompiler>());
  EXPECT_TRUE(cache.ok()) << cache.status();
  EXPECT_TRUE((*cache)->Get(SampleRequest()).ok());
  return (*cache)->EntryPath(SampleRequest(), (*cache)->KeyFor(SampleRequest()));
}

TEST(CacheFiles, LinksFifosDevicesAndOversizedFilesAreRefusedWithoutBlocking) {
  TempDir dir;
  ::alarm(20);  // a FIFO that blocked the read would otherwise hang the suite
  const auto regular = dir.path() / "regular";
  { std::ofstream(regular) << "0123456789"; }
  EXPECT_EQ(*ReadWholeFile(regular), "0123456789");
  EXPECT_EQ(ReadWholeFile(regular, 9).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ReadWholeFile(dir.path() / "missing").status().code(), absl::StatusCode::kNotFound);

  const auto link = dir.path() / "link";
  ASSERT_EQ(::symlink(regular.c_str(), link.c_str()), 0);
  auto l = ReadWholeFile(link);
  EXPECT_EQ(l.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(l.status().message(), "symbolic link")) << l.status();

  const auto fifo = dir.path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto f = ReadWholeFile(fifo);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(f.status().message(), "FIFO")) << f.status();

  auto dev = ReadWholeFile("/dev/zero");  // endless: only the file-type check stops it
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(dev.status().message(), "character device")) << dev.status();
  EXPECT_EQ(ReadWholeFile(dir.path()).status().code(), absl::StatusCode::kFailedPrecondition);

  // A lock file that is a FIFO or a link is refused too (never blocks, never follows).
  EXPECT_EQ(FileLock::Acquire(fifo).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FileLock::Acquire(link).status().code(), absl::StatusCode::kFailedPrecondition);
  ::alarm(0);
}

// Every kind of special file planted at an entry's path: the cache logs it, removes it (the
// link, not its target) and stores a fresh, valid entry.
TEST(JitCacheDir, SpecialFilesAtAnEntryAreLoggedRemovedAndRebuilt) {
  TempDir dir;
  const auto path = FillOneEntry(dir.path());
  const std::string good = ReadFile(path);
  const auto target = dir.path() / "target";
  { std::ofstream(target) << "do not touch"; }
  const std::vector<std::pair<std::string, std::function<void()>>> plants = {
      {"link to /dev/zero", [&] { ASSERT_EQ(::symlink("/dev/zero", path.c_str()), 0); }},
      {"link to a file", [&] { ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0); }},
      {"FIFO", [&] { ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0); }},
      {"oversized", [&] {
         UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT, 0600));
         ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(kMaxCacheFileBytes + 1)), 0);  // sparse
       }},
      {"corrupt", [&] { std::ofstream(path) << good.substr(0, good.size() / 2); }},
  };
  ::alarm(60);
  for (const auto& [what, plant] : plants) {
    ::unlink(path.c_str());
    plant();
    LogCapture log;
    auto compiler = std::make_shared<FakeCompiler>();
    auto cache = JitCache::Open(dir.path(), compiler);
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto m = (*cache)->Get(SampleRequest());
    ASSERT_TRUE(m.ok()) << what << ": " << m.status();
    EXPECT_EQ(compiler->calls.load(), 1) << what;
    EXPECT_EQ((*cache)->stats().corrupt_entries, 1u) << what;
    EXPECT_TRUE(absl::StrContains(log.All(), "is unusable")) << what << ": no log line; log:\n" << log.All();
    struct stat st;
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << what;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << what;
    EXPECT_EQ(ReadFile(path), good) << what;
    EXPECT_EQ(ReadFile(target), "do not touch") << what;
  }
  ::alarm(0);
}

TEST(JitCacheDir, FailedStoresAreLoggedAndFailPrecompile) {
  TempDir dir;
  LogCapture log;
  auto cache = JitCache::Open(dir.path(), std::make_shared<FakeCompiler>());
  ASSERT_TRUE(cache.ok());
  // A directory where the entry should go: it cannot be removed by unlink or replaced by rename,
  // so the compiled kernel is served but not stored.
  const CompileRequest req = SampleRequest();
  const auto path = (*cache)->EntryPath(req, (*cache)->KeyFor(req));
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  ASSERT_TRUE((*cache)->Get(req).ok());
  EXPECT_EQ((*cache)->stats().write_failures, 1u);
  EXPECT_TRUE(absl::StrContains(log.All(), "cannot store JIT cache entry")) << log.All();

  // Precompile: one variant's entry path blocked the same way -> not ok, counted.
  TempDir pdir;
  auto pcache = JitCache::Open(pdir.path(), std::make_shared<FakeCompiler>());
  ASSERT_TRUE(pcache.ok());
  const OpSpec* spec = AllOps().front();
  const CompileRequest first = MakeCompileRequest(*spec, spec->variants.front(), "sm_90");
  const auto blocked = (*pcache)->EntryPath(first, (*pcache)->KeyFor(first));
  ASSERT_EQ(::mkdir(blocked.c_str(), 0700), 0);
  auto report = PrecompileAllInto(**pcache, "sm_90", nullptr, 2);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->failures.empty());
  EXPECT_EQ(report->unstored, 1u);
  EXPECT_FALSE(report->ok()) << "a precompile that could not store a kernel must fail";
}

TEST(JitCacheDir, GroupReadableDirectoryGetsGroupReadableEntries) {
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0750), 0);
  const auto path = FillOneEntry(dir.path());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  auto db = TuningDb::Shared(dir.path(), GpuIdentity{"Test GPU", 4, 90});
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_EQ(::stat(TuningDb::DirFor(dir.path()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  TuningEntry e;
  e.key = {"rms_norm_fwd", "bf16", 1024, 4096};
  ASSERT_TRUE((*db)->Store({e}).ok());
  ASSERT_EQ(::stat((*db)->file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  // A private directory keeps private entries.
  TempDir priv;
  ASSERT_EQ(::stat(FillOneEntry(priv.path()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// A complete cache that this process cannot write (root's, mode 0755; or the process's own
// after chmod a-w) is used as it is: hits are served, misses compile into memory, nothing is
// written, and the tuning DB answers lookups but refuses stores.
TEST(JitCacheDir, ReadOnlyCompleteCacheIsAccepted) {
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const auto cache_dir = dir.path() / "cache";
  ASSERT_EQ(::mkdir(cache_dir.c_str(), 0755), 0);
  const auto path = FillOneEntry(cache_dir);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  const GpuIdentity gpu{"Test GPU", 4, 90};
  {
    auto db = TuningDb::Shared(cache_dir, gpu);
    ASSERT_TRUE(db.ok());
    TuningEntry e;
    e.key = {"rms_norm_fwd", "bf16", 1024, 4096};
    e.config.threads_per_row = 128;
    ASSERT_TRUE((*db)->Store({e}).ok());
    ASSERT_EQ(::chmod(TuningDb::DirFor(cache_dir).c_str(), 0755), 0);
    ASSERT_EQ(::chmod((*db)->file().c_str(), 0644), 0);
  }
  AsNobody([&]() -> int {
    LogCapture log;
    auto compiler = std::make_shared<FakeCompiler>();
    auto cache = JitCache::Open(cache_dir, compiler);
    if (!cache.ok() || !(*cache)->read_only()) return 1;
    if (!absl::StrContains(log.All(), "read-only")) return 2;
    if (!(*cache)->Get(SampleRequest()).ok() || compiler->calls.load() != 0) return 3;  // a hit
    CompileRequest other = SampleRequest();
    other.variant = "not.in.the.cache";
    if (!(*cache)->Get(other).ok() || compiler->calls.load() != 1) return 4;  // memory compile
    if ((*cache)->stats().memory_only != 1) return 5;
    if (std::filesystem::exists((*cache)->EntryPath(other, (*cache)->KeyFor(other)))) return 6;
    auto db = TuningDb::Shared(cache_dir, gpu);
    if (!db.ok() || !(*db)->read_only()) return 7;
    auto hit = (*db)->Lookup({"rms_norm_fwd", "bf16", 1024, 4096});
    if (!hit || hit->config.threads_per_row != 128) return 8;
    absl::Status store = (*db)->Store({});
    if (store.code() != absl::StatusCode::kFailedPrecondition || !absl::StrContains(store.message(), "read-only"))
      return 9;
    // Precompile into it is an error, not a silent success.
    if (PrecompileAllInto(**cache, "sm_90", nullptr, 1).ok()) return 10;
    return 0;
  });
  // Its own directory, made read-only (chmod a-w): the same.
  TempDir own;
  ASSERT_EQ(::chmod(own.path().c_str(), 0755), 0);
  const auto own_cache = own.path() / "cache";
  ASSERT_EQ(::mkdir(own_cache.c_str(), 0700), 0);
  ASSERT_EQ(::chown(own_cache.c_str(), kNobody, kNogroup), 0);
  AsNobody([&]() -> int {
    if (!JitCache::Open(own_cache, std::make_shared<FakeCompiler>()).ok()) return 1;
    if (::chmod(own_cache.c_str(), 0500) != 0) return 2;
    auto cache = JitCache::Open(own_cache, std::make_shared<FakeCompiler>());
    if (!cache.ok() || !(*cache)->read_only()) return 3;
    return (*cache)->Get(SampleRequest()).ok() ? 0 : 4;
  });
}

// The node daemon's cache (owned by its user, group-readable) read by a job of another user:
// refused unless that owner is trusted (the Python client passes the node socket's owner), then
// read-only. A group-writable one is refused even when trusted.
TEST(JitCacheDir, AnotherUsersCacheIsReadOnlyAndOnlyWhenItsOwnerIsTrusted) {
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const auto node = dir.path() / "node";
  ASSERT_EQ(::mkdir(node.c_str(), 0755), 0);
  const auto path = FillOneEntry(node);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ASSERT_EQ(::chown(node.c_str(), kOtherUid, kNogroup), 0);
  ASSERT_EQ(::chown(path.c_str(), kOtherUid, kNogroup), 0);
  AsNobody([&]() -> int {
    auto refused = JitCache::Open(node, std::make_shared<FakeCompiler>());
    if (refused.ok() || !absl::StrContains(refused.status().message(), "owned by uid")) return 1;
    auto compiler = std::make_shared<FakeCompiler>();
    auto cache = JitCache::Open(node, compiler, kOtherUid);
    if (!cache.ok() || !(*cache)->read_only()) return 2;
    if (!(*cache)->Get(SampleRequest()).ok() || compiler->calls.load() != 0) return 3;
    return 0;
  });
  ASSERT_EQ(::chmod(node.c_str(), 0775), 0);
  AsNobody([&]() -> int {
    auto cache = JitCache::Open(node, std::make_shared<FakeCompiler>(), kOtherUid);
    return !cache.ok() && absl::StrContains(cache.status().message(), "writable by group") ? 0 : 1;
  });
}

}  // namespace
}  // namespace ligerd::kernels
