// JIT cache: keys, memory/disk layers, atomic writes, corruption, once-per-key across threads
// and processes. Uses a fake compiler so these run in milliseconds.
#include "kernels/jit/jit_cache.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/jit/cache_entry.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::FakeCompiler;
using testing::SampleRequest;
using testing::TempDir;

std::shared_ptr<JitCache> OpenCache(const std::filesystem::path& dir,
                                    std::shared_ptr<FakeCompiler> compiler) {
  auto cache = JitCache::Open(dir, std::move(compiler));
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? *cache : nullptr;
}

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteFile(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

TEST(JitCacheKey, EveryComponentChangesTheKey) {
  const CompileRequest base = SampleRequest();
  const Digest256 k0 = JitCacheKey(base, "nvrtc-13.0");
  EXPECT_EQ(k0, JitCacheKey(base, "nvrtc-13.0")) << "the key must be deterministic";

  std::vector<std::pair<std::string, std::function<void(CompileRequest&)>>> edits = {
      {"op", [](CompileRequest& r) { r.op = "other_op"; }},
      {"variant", [](CompileRequest& r) { r.variant = "xf16.llama"; }},
      {"arch", [](CompileRequest& r) { r.arch = "sm_80"; }},
      {"arch kind", [](CompileRequest& r) { r.arch = "compute_90"; }},
      {"main name", [](CompileRequest& r) { r.main.name = "kernels/ops/x.cuh"; }},
      {"main text", [](CompileRequest& r) { r.main.text = "extern \"C\" __global__ void k2() {}"; }},
      {"header name", [](CompileRequest& r) { r.headers[0].name = "kernels/ops/c2.cuh"; }},
      {"header text", [](CompileRequest& r) { r.headers[0].text = "// common v2"; }},
      {"extra header", [](CompileRequest& r) { r.headers.push_back({"h.h", ""}); }},
      {"option", [](CompileRequest& r) { r.options[1] = "-DLIGERD_XT=ligerd::bf16"; }},
      {"extra option", [](CompileRequest& r) { r.options.push_back("-lineinfo"); }},
      {"option order", [](CompileRequest& r) { std::swap(r.options[0], r.options[1]); }},
      // Length prefixes: moving a character between adjacent fields must change the key.
      {"field boundary", [](CompileRequest& r) { r.op += "x"; r.variant = r.variant.substr(1); }},
  };
  std::set<Digest256> seen = {k0};
  for (auto& [what, edit] : edits) {
    CompileRequest r = base;
    edit(r);
    const Digest256 k = JitCacheKey(r, "nvrtc-13.0");
    EXPECT_NE(k, k0) << what;
    EXPECT_TRUE(seen.insert(k).second) << what << " collides with another edit";
  }
  EXPECT_NE(JitCacheKey(base, "nvrtc-13.1"), k0) << "compiler version";
}

TEST(JitCache, MemoryThenDiskThenNothingToCompile) {
  TempDir dir;
  auto compiler = std::make_shared<FakeCompiler>();
  auto cache = OpenCache(dir.path(), compiler);
  const CompileRequest req = SampleRequest();

  auto a = cache->Get(req);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = cache->Get(req);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(compiler->calls.load(), 1);
  EXPECT_EQ((*a)->image, (*b)->image);
  JitCacheStats s = cache->stats();
  EXPECT_EQ(s.compiles, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.memory_hits, 1u);

  // The entry is on disk under a readable name; no temp files are left behind.
  const auto path = cache->EntryPath(req, cache->KeyFor(req));
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_NE(path.filename().string().find("test_op.xbf16.llama.sm_90."), std::string::npos);
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();

  // A second process (here: a second cache instance) finds it on disk.
  auto compiler2 = std::make_shared<FakeCompiler>();
  auto cache2 = OpenCache(dir.path(), compiler2);
  auto c = cache2->Get(req);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(compiler2->calls.load(), 0);
  EXPECT_EQ(cache2->stats().disk_hits, 1u);
  EXPECT_EQ((*c)->image, (*a)->image);

  // A different compiler version is a different key: recompiles, keeps the old entry.
  auto compiler3 = std::make_shared<FakeCompiler>("fake-2");
  auto cache3 = OpenCache(dir.path(), compiler3);
  ASSERT_TRUE(cache3->Get(req).ok());
  EXPECT_EQ(compiler3->calls.load(), 1);
}

TEST(JitCache, DirectoryIsCreatedPrivateAndUnsafeOnesAreRefused) {
  TempDir dir;
  const auto sub = dir.path() / "a" / "b";
  auto cache = JitCache::Open(sub, std::make_shared<FakeCompiler>());
  ASSERT_TRUE(cache.ok()) << cache.status();
  struct stat st;
  ASSERT_EQ(::stat(sub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  const auto open_dir = dir.path() / "world_writable";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  auto bad = JitCache::Open(open_dir, std::make_shared<FakeCompiler>());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition) << bad.status();
  EXPECT_NE(bad.status().message().find("writable by group or others"), absl::string_view::npos);
}

TEST(CacheEntry, RoundTripAndEveryKindOfDamageIsDetected) {
  CompiledModule m;
  m.kind = BinaryKind::kPtx;
  m.image = std::string("some ptx text\0", 14);
  const Digest256 key = Sha256Of("key");
  const std::string good = EncodeCacheEntry(key, m);
  auto back = DecodeCacheEntry(good, key);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->image, m.image);
  EXPECT_EQ(back->kind, BinaryKind::kPtx);

  auto expect_loss = [&](const std::string& bytes, const Digest256& k, const char* what) {
    auto r = DecodeCacheEntry(bytes, k);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << what << ": " << r.status();
  };
  expect_loss("", key, "empty");
  expect_loss(good.substr(0, 40), key, "truncated header");
  expect_loss(good.substr(0, good.size() - 1), key, "truncated payload");
  expect_loss(good + "x", key, "trailing garbage");
  expect_loss(good, Sha256Of("other key"), "wrong key");
  for (size_t pos : {size_t{0}, size_t{8}, size_t{12}, size_t{20}, size_t{50}, size_t{60},
                     good.size() - 1}) {
    std::string bad = good;
    bad[pos] ^= 0x5a;
    expect_loss(bad, key, ("flipped byte " + std::to_string(pos)).c_str());
  }
}

// Damage the on-disk entry in several ways; each time a fresh cache must notice, delete,
// recompile (counting a corrupt entry) and serve the right image.
TEST(JitCache, CorruptOrTruncatedEntryIsDeletedAndRecompiled) {
  TempDir dir;
  const CompileRequest req = SampleRequest();
  std::string good_image;
  std::filesystem::path path;
  {
    auto cache = OpenCache(dir.path(), std::make_shared<FakeCompiler>());
    auto m = cache->Get(req);
    ASSERT_TRUE(m.ok());
    good_image = (*m)->image;
    path = cache->EntryPath(req, cache->KeyFor(req));
  }
  const std::string good_bytes = ReadFile(path);
  std::vector<std::pair<std::string, std::string>> damages = {
      {"truncated to 10 bytes", good_bytes.substr(0, 10)},
      {"truncated mid payload", good_bytes.substr(0, good_bytes.size() - 3)},
      {"payload bit flip", [&] { std::string b = good_bytes; b.back() ^= 1; return b; }()},
      {"bad magic", [&] { std::string b = good_bytes; b[0] = 'X'; return b; }()},
      {"empty file", ""},
  };
  for (const auto& [what, bytes] : damages) {
    WriteFile(path, bytes);
    auto compiler = std::make_shared<FakeCompiler>();
    auto cache = OpenCache(dir.path(), compiler);
    auto m = cache->Get(req);
    ASSERT_TRUE(m.ok()) << what << ": " << m.status();
    EXPECT_EQ((*m)->image, good_image) << what;
    EXPECT_EQ(compiler->calls.load(), 1) << what;
    EXPECT_EQ(cache->stats().corrupt_entries, 1u) << what;
    EXPECT_EQ(ReadFile(path), good_bytes) << what << ": entry rewritten intact";
  }
}

TEST(JitCache, CompileErrorIsReturnedAndNothingIsStored) {
  TempDir dir;
  auto compiler = std::make_shared<FakeCompiler>();
  compiler->fail = true;
  auto cache = OpenCache(dir.path(), compiler);
  const CompileRequest req = SampleRequest();
  auto m = cache->Get(req);
  EXPECT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("oops"), absl::string_view::npos) << m.status();
  EXPECT_EQ(cache->stats().compile_failures, 1u);
  EXPECT_FALSE(std::filesystem::exists(cache->EntryPath(req, cache->KeyFor(req))));
  compiler->fail = false;  // a later call retries
  EXPECT_TRUE(cache->Get(req).ok());
}

TEST(JitCache, ConcurrentThreadsCompileEachKeyOnce) {
  TempDir dir;
  auto compiler = std::make_shared<FakeCompiler>();
  compiler->delay_ms = 100;  // keep the compile window open while the others arrive
  auto cache = OpenCache(dir.path(), compiler);
  constexpr int kThreads = 8, kKeys = 3;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kKeys; ++k) {
        CompileRequest r = SampleRequest();
        r.variant = absl::StrCat("v", (k + t) % kKeys);
        if (!cache->Get(r).ok()) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(compiler->calls.load(), kKeys);
  EXPECT_EQ(cache->stats().compiles, static_cast<uint64_t>(kKeys));
}

// Several processes share one cache directory: across all of them, each key compiles once.
// The fake compiler appends a line per compile to a shared log (O_APPEND).
TEST(JitCache, ConcurrentProcessesCompileEachKeyOnce) {
  TempDir dir;
  const auto log = dir.path() / "compiles.log";
  constexpr int kProcs = 4, kKeys = 3;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: no gtest assertions, just an exit code.
      auto compiler = std::make_shared<FakeCompiler>();
      compiler->delay_ms = 150;
      compiler->log_path = log.string();
      auto cache = JitCache::Open(dir.path() / "cache", compiler);
      if (!cache.ok()) ::_exit(10);
      for (int k = 0; k < kKeys; ++k) {
        CompileRequest r = SampleRequest();
        r.variant = absl::StrCat("v", (k + p) % kKeys);
        auto m = (*cache)->Get(r);
        if (!m.ok() || (*m)->image.find(r.variant) == std::string::npos) ::_exit(11);
      }
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  std::ifstream in(log);
  std::multiset<std::string> compiled;
  for (std::string line; std::getline(in, line);) compiled.insert(line.substr(0, line.rfind(' ')));
  EXPECT_EQ(compiled.size(), static_cast<size_t>(kKeys)) << "compiles across processes";
  for (int k = 0; k < kKeys; ++k)
    EXPECT_EQ(compiled.count(absl::StrCat("test_op v", k)), 1u) << "key " << k;
}

}  // namespace
}  // namespace ligerd::kernels
