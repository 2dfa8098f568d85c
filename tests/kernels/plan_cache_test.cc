// PlanCache: a cached plan with the addresses patched in is byte-for-byte what PlanOp plans;
// errors are never cached; geometry, alignment, aliasing and scalars are all part of the key.
#include "kernels/plan_cache.h"

#include <chrono>
#include <cstdio>
#include <cstring>
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
  std::printf("[plan cache] rms_norm_bwd: PlanOp %.3f us, cached %.3f us per call\n", direct, cached);
  EXPECT_GT(cache.stats().hits, 0u);
}

}  // namespace
}  // namespace ligerd::kernels
