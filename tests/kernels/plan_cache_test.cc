// PlanCache: a cached plan with the addresses patched in is byte-for-byte what PlanOp plans;
// errors are never cached; geometry, alignment, aliasing and scalars are all part of the key.
#include "kernels/plan_cache.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

// Fake, 256-byte aligned device addresses (never dereferenced); `base` moves a whole call.
void* Addr(int i, uintptr_t base = 0) {
  return reinterpret_cast<void*>(uintptr_t{0x100000000} * (i + 1) + base);
}

using testing::FakeDevice;
using testing::Tensor;

struct Call {
  std::string op;
  std::vector<TensorView> t;
  std::vector<double> s;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  bool check_ws = true;
  OpCall Get() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    c.workspace = ws;
    c.workspace_bytes = ws_bytes;
    c.check_workspace = check_ws;
    return c;
  }
};

Call Fwd(int64_t rows, int64_t n, uintptr_t base = 0) {
  const DType dt = DType::kBFloat16;
  return {"rms_norm_fwd",
          {Tensor(Addr(0, base), dt, {rows, n}), Tensor(Addr(1, base), dt, {n}),
           Tensor(Addr(2, base), dt, {rows, n}), Tensor(Addr(3, base), DType::kFloat32, {rows})},
          {1e-6, 0.0, 0.0}};
}

Call Bwd(int64_t rows, int64_t n, bool in_place, uintptr_t base = 0) {
  const DType dt = DType::kBFloat16;
  Call c{"rms_norm_bwd",
         {Tensor(Addr(0, base), dt, {rows, n}), Tensor(Addr(1, base), dt, {rows, n}),
          Tensor(Addr(2, base), dt, {n}), Tensor(Addr(3, base), DType::kFloat32, {rows}),
          Tensor(in_place ? Addr(0, base) : Addr(4, base), dt, {rows, n}),
          Tensor(Addr(5, base), dt, {n})},
         {0.0, 0.0}};
  c.ws = Addr(10, base);
  c.ws_bytes = size_t{1} << 30;
  return c;
}

void ExpectSamePlan(const OpPlan& a, const OpPlan& b) {
  EXPECT_EQ(a.variant.tag, b.variant.tag);
  EXPECT_EQ(a.workspace_bytes, b.workspace_bytes);
  ASSERT_EQ(a.launches.size(), b.launches.size());
  for (size_t i = 0; i < a.launches.size(); ++i) {
    EXPECT_EQ(a.launches[i].kernel, b.launches[i].kernel);
    EXPECT_EQ(a.launches[i].shared_bytes, b.launches[i].shared_bytes);
    for (int d = 0; d < 3; ++d) {
      EXPECT_EQ(a.launches[i].grid[d], b.launches[i].grid[d]);
      EXPECT_EQ(a.launches[i].block[d], b.launches[i].block[d]);
    }
    EXPECT_EQ(a.launches[i].params, b.launches[i].params) << "launch " << i;
  }
}

// Plans `c` through the cache and directly, and compares.
void Check(PlanCache& cache, const Call& c) {
  const OpCall call = c.Get();
  auto direct = PlanOp(c.op, call, FakeDevice());
  auto cached = cache.Plan(c.op, call, FakeDevice());
  ASSERT_TRUE(direct.ok()) << direct.status();
  ASSERT_TRUE(cached.ok()) << cached.status();
  ExpectSamePlan(*cached, *direct);
}

TEST(PlanCacheTest, HitPatchesAddresses) {
  PlanCache cache;
  Check(cache, Fwd(64, 4096));
  Check(cache, Fwd(64, 4096, 0x123400));  // same geometry, every tensor elsewhere
  Check(cache, Fwd(64, 4096, 0x777700));
  EXPECT_EQ(cache.stats().misses, 1u);
  EXPECT_EQ(cache.stats().hits, 2u);
  EXPECT_EQ(cache.stats().uncacheable, 0u);
}

TEST(PlanCacheTest, BackwardWithWorkspaceAndInPlace) {
  PlanCache cache;
  for (bool in_place : {true, false}) {
    Check(cache, Bwd(1000, 4096, in_place));
    Check(cache, Bwd(1000, 4096, in_place, 0xabc000));
  }
  EXPECT_EQ(cache.stats().misses, 2u);  // aliasing is part of the key
  EXPECT_EQ(cache.stats().hits, 2u);
  // The workspace query (no workspace, no check) and the launch are separate keys.
  Call q = Bwd(1000, 4096, true);
  q.ws = nullptr;
  q.ws_bytes = 0;
  q.check_ws = false;
  Check(cache, q);
  Check(cache, q);
}

TEST(PlanCacheTest, KeyCoversGeometryAlignmentAndScalars) {
  PlanCache cache;
  Check(cache, Fwd(64, 4096));
  Check(cache, Fwd(65, 4096));
  Check(cache, Fwd(64, 2048));
  Call misaligned = Fwd(64, 4096);  // X and Y 2-byte aligned: not vectorised
  misaligned.t[0].data = static_cast<char*>(misaligned.t[0].data) + 2;
  misaligned.t[2].data = static_cast<char*>(misaligned.t[2].data) + 2;
  Check(cache, misaligned);
  Call eps = Fwd(64, 4096);
  eps.s[0] = 1e-5;
  Check(cache, eps);
  Call gemma = Fwd(64, 4096);
  gemma.s[2] = 1.0;
  Check(cache, gemma);
  Call no_w = Fwd(64, 4096);
  no_w.t[1].data = nullptr;
  Check(cache, no_w);
  EXPECT_EQ(cache.stats().hits, 0u);
  EXPECT_EQ(cache.stats().misses, 7u);
}

TEST(PlanCacheTest, ErrorsAreNotCachedAndKeepTheirMessage) {
  PlanCache cache;
  Call bad = Fwd(64, 4096);
  bad.t[1].sizes[0] = 4095;
  bad.t[1].ndim = 1;
  for (int i = 0; i < 2; ++i) {
    auto direct = PlanOp(bad.op, bad.Get(), FakeDevice());
    auto cached = cache.Plan(bad.op, bad.Get(), FakeDevice());
    ASSERT_FALSE(cached.ok());
    EXPECT_EQ(cached.status(), direct.status());
  }
  EXPECT_EQ(cache.size(), 0u);
  // Too little workspace: an error even after the same geometry was planned with enough.
  Call ok = Bwd(1000, 4096, true);
  Check(cache, ok);
  Call small = ok;
  small.ws_bytes = 16;
  for (int i = 0; i < 2; ++i) {
    auto cached = cache.Plan(small.op, small.Get(), FakeDevice());
    ASSERT_FALSE(cached.ok());
    EXPECT_NE(cached.status().message().find("workspace"), std::string::npos) << cached.status();
  }
}

TEST(PlanCacheTest, BoundedSize) {
  PlanCache cache(4);
  for (int rows = 1; rows <= 20; ++rows) Check(cache, Fwd(rows, 256));
  EXPECT_LE(cache.size(), 4u);
}

// Configs from the tuning DB (ConfigSource): the DB is asked only on a miss, a tuned plan and a
// default plan of one geometry are cached apart, a new generation asks again, and a stored
// config the op refuses gives the default plan (reported once per miss).
TEST(PlanCacheTest, ConfigSourceIsAskedOnlyOnAMissAndKeyedByGeneration) {
  PlanCache cache;
  const DeviceInfo dev = FakeDevice();
  const Call c = Bwd(16384, 4096, true);
  LaunchConfig stored;  // a legal non-default shape: 512 threads x 1 vector, one row per block
  stored.threads_per_row = 512;
  stored.rows_per_block = 1;
  stored.iters = 1;
  stored.vectorized = true;
  stored.grid = 132;
  int lookups = 0, rejections = 0;
  std::optional<LaunchConfig> db = stored;
  PlanCache::ConfigSource source;
  source.generation = 7;
  source.lookup = [&](const OpCall&) {
    ++lookups;
    return db;
  };
  source.rejected = [&](const LaunchConfig&, const absl::Status&) { ++rejections; };

  OpCall tuned_call = c.Get();
  tuned_call.tuned = &stored;
  auto want_tuned = PlanOp(c.op, tuned_call, dev);
  auto want_default = PlanOp(c.op, c.Get(), dev);
  ASSERT_TRUE(want_tuned.ok() && want_default.ok());
  ASSERT_NE(want_tuned->launches[0].kernel + std::to_string(want_tuned->launches[0].grid[0]),
            want_default->launches[0].kernel + std::to_string(want_default->launches[0].grid[0]))
      << "the test needs a stored config that differs from the default";

  for (int i = 0; i < 3; ++i) {  // a miss, then hits: one lookup, the tuned plan every time
    const Call moved = Bwd(16384, 4096, true, uintptr_t{0x1000} * i);
    auto got = cache.Plan(moved.op, moved.Get(), dev, source);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->tuned);
    OpCall direct = moved.Get();
    direct.tuned = &stored;
    ExpectSamePlan(*got, *PlanOp(moved.op, direct, dev));
  }
  EXPECT_EQ(lookups, 1);
  // The plain (default) plan of the same geometry is its own entry.
  auto plain = cache.Plan(c.op, c.Get(), dev);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->tuned);
  ExpectSamePlan(*plain, *want_default);
  // The DB changed (its entry is gone): a new generation is a miss, and the default comes back.
  db.reset();
  source.generation = 8;
  auto after = cache.Plan(c.op, c.Get(), dev, source);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->tuned);
  ExpectSamePlan(*after, *want_default);
  EXPECT_EQ(lookups, 2);
  // A stored config the op refuses (8 threads cannot hold a 4096-wide row): the default plan.
  LaunchConfig bad = stored;
  bad.threads_per_row = 8;
  db = bad;
  source.generation = 9;
  auto refused = cache.Plan(c.op, c.Get(), dev, source);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->tuned);
  ExpectSamePlan(*refused, *want_default);
  EXPECT_EQ(rejections, 1);
  // A bad call fails with its own error, stored config or not, and is not reported as the DB's.
  Call broken = c;
  broken.t[1] = Tensor(Addr(1), DType::kBFloat16, {16384, 4095});
  auto err = cache.Plan(broken.op, broken.Get(), dev, source);
  EXPECT_FALSE(err.ok());
  EXPECT_EQ(err.status().message(), PlanOp(broken.op, broken.Get(), dev).status().message());
  EXPECT_EQ(rejections, 1);
}

// Not a pass/fail timing: prints what a hit costs next to a full PlanOp on this machine.
TEST(PlanCacheTest, ReportsCost) {
  PlanCache cache;
  const Call c = Bwd(16384, 4096, true);
  const OpCall call = c.Get();
  const DeviceInfo dev = FakeDevice();
  ASSERT_TRUE(cache.Plan(c.op, call, dev).ok());
  constexpr int kIters = 20000;
  auto time = [&](auto&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) fn();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kIters;
  };
  const double direct = time([&] { (void)PlanOp(c.op, call, dev); });
  const double cached = time([&] { (void)cache.Plan(c.op, call, dev); });
  // The executor's path with a tuning DB: the same hit, keyed by the DB's generation.
  PlanCache::ConfigSource source;
  source.generation = 1;
  source.lookup = [](const OpCall&) { return std::optional<LaunchConfig>(); };
  ASSERT_TRUE(cache.Plan(c.op, call, dev, source).ok());
  const double sourced = time([&] { (void)cache.Plan(c.op, call, dev, source); });
  std::printf("[plan cache] rms_norm_bwd: PlanOp %.3f us, cached %.3f us, cached via the DB's generation %.3f us per call\n",
              direct, cached, sourced);
  EXPECT_GT(cache.stats().hits, 0u);
}

}  // namespace
}  // namespace ligerd::kernels
