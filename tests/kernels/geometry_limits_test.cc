// Hostile tensor geometry (issue 17): records whose sizes and strides overflow int64 products,
// empty dims followed by huge or negative ones, and the plan cache's hit path with addresses a
// miss would refuse. Every case must end in a clear INVALID_ARGUMENT that names the op and the
// tensor: never a hang (each call runs under a watchdog), a crash or a plan.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/plan_cache.h"
#include "kernels/tuning/tuning_db.h"
#include "kernels/validate.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::FakeDevice;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t k2p40 = int64_t{1} << 40;
constexpr int64_t k2p62 = int64_t{1} << 62;

void* Addr(int i, uintptr_t base = 0) {
  return reinterpret_cast<void*>(uintptr_t{0x100000000} * (i + 1) + base);
}

// Explicit sizes and strides (the test helper's row-major strides would overflow themselves).
TensorView View(void* data, DType dt, std::vector<int64_t> sizes, std::vector<int64_t> strides) {
  TensorView t;
  t.data = data;
  t.dtype = dt;
  t.ndim = static_cast<int32_t>(sizes.size());
  for (int i = 0; i < t.ndim; ++i) {
    t.sizes[i] = sizes[i];
    t.strides[i] = strides[i];
  }
  return t;
}

// Runs `f` on its own thread; a call that does not return within `seconds` is a hang: the test
// binary reports it and exits (the thread cannot be stopped) instead of waiting for ctest.
template <typename F>
auto WithinSeconds(const char* what, int seconds, F f) -> decltype(f()) {
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto result = task.get_future();
  std::thread(std::move(task)).detach();
  if (result.wait_for(std::chrono::seconds(seconds)) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s did not return within %d s\n", what, seconds);
    std::fflush(stderr);
    std::_Exit(3);
  }
  return result.get();
}

void ExpectInvalid(const absl::Status& s, const std::vector<std::string>& fragments) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  for (const std::string& f : fragments)
    EXPECT_NE(s.message().find(f), absl::string_view::npos)
        << "message: " << s.message() << "\nexpected to contain: " << f;
}

// rms_norm_fwd (X, W, Y, RSTD) with X and Y as given; W and RSTD fitted when they can be.
struct FwdCall {
  std::vector<TensorView> t;
  std::vector<double> s = {1e-6, 0.0, 0.0};
  OpCall Get() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    return c;
  }
};

FwdCall Fwd(TensorView x, TensorView y, int64_t n, int64_t rows) {
  const DType dt = x.dtype;
  return {{x, View(Addr(1), dt, {n}, {1}), y,
           View(Addr(3), DType::kFloat32, {rows}, {1})}};
}

absl::Status PlanStatus(const FwdCall& c) {
  return WithinSeconds("PlanOp", 20, [&] { return PlanOp("rms_norm_fwd", c.Get(), FakeDevice()).status(); });
}

// ---- validate.cc helpers: checked products --------------------------------------------------

TEST(GeometryLimits, NumElementsSaturatesInsteadOfWrapping) {
  EXPECT_EQ(NumElements(View(Addr(0), DType::kFloat32, {k2p40, k2p40}, {0, 0})), kMax);
  EXPECT_EQ(NumElements(View(Addr(0), DType::kFloat32, {int64_t{1} << 32, int64_t{1} << 32}, {0, 0})), kMax)
      << "2^64 wraps to 0 in int64";
  EXPECT_EQ(NumElements(View(Addr(0), DType::kFloat32, {0, k2p62, k2p62}, {0, 0, 0})), 0);
  EXPECT_EQ(NumElements(View(Addr(0), DType::kFloat32, {k2p62, k2p62, 0}, {0, 0, 0})), 0);
  EXPECT_EQ(NumElements(View(Addr(0), DType::kFloat32, {3, 5, 7}, {35, 7, 1})), 105);
}

TEST(GeometryLimits, ByteExtentChecksEveryDimEvenAfterAnEmptyOne) {
  uint64_t bytes = 123;
  EXPECT_FALSE(ByteExtent(View(Addr(0), DType::kFloat32, {0, k2p62, k2p62}, {1, k2p62, 1}), &bytes))
      << "an empty dim must not hide the overflow of the others";
  EXPECT_FALSE(ByteExtent(View(Addr(0), DType::kFloat32, {0, 4}, {4, -1}), &bytes))
      << "negative stride after an empty dim";
  EXPECT_FALSE(ByteExtent(View(Addr(0), DType::kFloat32, {0, -4}, {4, 1}), &bytes))
      << "negative size after an empty dim";
  EXPECT_FALSE(ByteExtent(View(Addr(0), DType::kFloat32, {k2p40, k2p40}, {k2p40, 1}), &bytes));
  ASSERT_TRUE(ByteExtent(View(Addr(0), DType::kFloat32, {0, 4096}, {4096, 1}), &bytes));
  EXPECT_EQ(bytes, 0u);
  ASSERT_TRUE(ByteExtent(View(Addr(0), DType::kBFloat16, {3, 4096}, {8192, 1}), &bytes));
  EXPECT_EQ(bytes, uint64_t{(2 * 8192 + 4095 + 1) * 2});
}

TEST(GeometryLimits, AsRowsRefusesRowCountsThatOverflow) {
  // Broadcast leading dims (stride 0) keep the extent tiny while rows = 2^80.
  auto m = AsRows("rms_norm_fwd", "X", View(Addr(0), DType::kFloat32, {k2p40, k2p40, 8}, {0, 0, 1}));
  ExpectInvalid(m.status(), {"rms_norm_fwd", "'X'"});
  auto wrap = AsRows("rms_norm_fwd", "X",
                     View(Addr(0), DType::kFloat32, {int64_t{1} << 32, int64_t{1} << 32, 8}, {0, 0, 1}));
  ExpectInvalid(wrap.status(), {"rms_norm_fwd", "'X'"});
  auto ok = AsRows("rms_norm_fwd", "X", View(Addr(0), DType::kFloat32, {2, 3, 8}, {24, 8, 1}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->rows, 6);
}

TEST(GeometryLimits, NoInternalOverlapDoesNotWrap) {
  // Strides 1, 2, 3: the dim of stride 3 overlaps; the span of the first two (2^63 + 1) wraps
  // negative in int64 and used to hide it.
  const TensorView t = View(Addr(0), DType::kFloat32, {2, k2p62 + 1, 2}, {1, 2, 3});
  EXPECT_FALSE(NoInternalOverlap(t));
  // 2 x 2^32 x 2^32 with a broadcast outer dim: the expected stride of dim 0 (2^64) wraps to 0.
  EXPECT_FALSE(IsContiguous(
      View(Addr(0), DType::kFloat32, {2, int64_t{1} << 32, int64_t{1} << 32}, {0, int64_t{1} << 32, 1})));
}

// ---- the generic checks (CheckCall, through PlanOp) -----------------------------------------

TEST(GeometryLimits, EmptyDimDoesNotHideHugeDimsAfterIt) {
  const DType dt = DType::kBFloat16;
  // {0, 2^62, 2^62}: no element, but the dims after the empty one overflow every product.
  const TensorView x = View(Addr(0), dt, {0, k2p62, k2p62}, {1, k2p62, 1});
  const TensorView y = View(Addr(2), dt, {0, k2p62, k2p62}, {1, k2p62, 1});
  ExpectInvalid(PlanStatus(Fwd(x, y, k2p62, 0)), {"rms_norm_fwd: tensor 'X'", "too large"});
  // Same with strides 0 (the byte span of the non-empty dims stays tiny).
  const TensorView x0 = View(Addr(0), dt, {0, k2p62, k2p62}, {0, 0, 1});
  ExpectInvalid(PlanStatus(Fwd(x0, y, k2p62, 0)), {"rms_norm_fwd: tensor 'X'", "too large"});
}

TEST(GeometryLimits, BroadcastInputWhoseElementCountOverflows) {
  const DType dt = DType::kBFloat16;
  // 2^40 x 2^40 x 8 elements through stride-0 leading dims: X's bytes are tiny, its element
  // count (and every rows product) is not.
  const TensorView x = View(Addr(0), dt, {k2p40, k2p40, 8}, {0, 0, 1});
  const TensorView y = View(Addr(2), dt, {k2p40, k2p40, 8}, {0, 0, 1});
  ExpectInvalid(PlanStatus(Fwd(x, y, 8, 1)), {"rms_norm_fwd: tensor 'X'", "too large"});
  const TensorView x2 = View(Addr(0), dt, {k2p40, k2p40}, {0, 1});
  ExpectInvalid(PlanStatus(Fwd(x2, x2, k2p40, k2p40)), {"rms_norm_fwd: tensor 'X'", "too large"});
}

TEST(GeometryLimits, NegativeSizesAndStridesAfterAnEmptyDim) {
  const DType dt = DType::kBFloat16;
  const TensorView y = View(Addr(2), dt, {0, 8}, {8, 1});
  ExpectInvalid(PlanStatus(Fwd(View(Addr(0), dt, {0, -8}, {8, 1}), y, 8, 0)),
                {"rms_norm_fwd: tensor 'X'", "size -8 in dim 1"});
  ExpectInvalid(PlanStatus(Fwd(View(Addr(0), dt, {0, 8}, {8, -1}), y, 8, 0)),
                {"rms_norm_fwd: tensor 'X'", "negative stride -1 in dim 1"});
  ExpectInvalid(PlanStatus(Fwd(View(Addr(0), dt, {0, 2, 8}, {16, -8, 1}), y, 8, 0)),
                {"rms_norm_fwd: tensor 'X'", "negative stride -8 in dim 1"});
  // The output too.
  ExpectInvalid(PlanStatus(Fwd(View(Addr(0), dt, {0, 8}, {8, 1}), View(Addr(2), dt, {0, 8}, {-8, 1}), 8, 0)),
                {"rms_norm_fwd: tensor 'Y'", "negative stride"});
}

// ---- tuning keys ------------------------------------------------------------------------------

TEST(GeometryLimits, TuningKeyOfAnyRowCountTerminates) {
  for (int64_t rows : {kMax, kMax - 1, k2p62 + 1, k2p62, k2p62 - 1}) {
    const TuningKey k = WithinSeconds("MakeTuningKey", 10, [rows] {
      return MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, rows, 4096});
    });
    EXPECT_GE(k.rows_bucket, rows) << "rows " << rows;
  }
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, k2p62, 8}).rows_bucket, k2p62);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, k2p62 - 1, 8}).rows_bucket, k2p62);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, k2p62 + 1, 8}).rows_bucket, kMax);
}

TEST(GeometryLimits, RowTuningShapeRefusesRowCountsThatOverflow) {
  const TensorView x = View(Addr(0), DType::kBFloat16, {k2p40, k2p40, 8}, {0, 0, 1});
  OpCall call;
  call.tensors = std::span<const TensorView>(&x, 1);
  EXPECT_FALSE(RowTuningShape(0)(call).has_value());
  const TensorView neg = View(Addr(0), DType::kBFloat16, {0, -3, 8}, {0, 8, 1});
  call.tensors = std::span<const TensorView>(&neg, 1);
  EXPECT_FALSE(RowTuningShape(0)(call).has_value()) << "negative size";
}

// A plan-cache miss with a tuning DB asks for the call's tuning key, as the executor does: a
// record of 2^63-1 rows of width 0 must be refused, not spin in the rounding to a power of two.
TEST(GeometryLimits, PlanCacheMissWithTuningDbRefusesHugeRowsWithoutHanging) {
  const DType dt = DType::kBFloat16;
  FwdCall c{{View(Addr(0), dt, {kMax, 0}, {1, 1}), View(Addr(1), dt, {0}, {1}),
             View(Addr(2), dt, {kMax, 0}, {1, 1}), View(Addr(3), DType::kFloat32, {kMax}, {1})}};
  PlanCache cache;
  int lookups = 0;
  PlanCache::ConfigSource source;
  source.generation = 1;
  source.lookup = [&lookups](const OpCall& call) -> std::optional<LaunchConfig> {
    ++lookups;
    const OpSpec* spec = FindOp("rms_norm_fwd");
    const std::optional<TuningShape> shape = spec->tuning_shape(call);
    if (shape.has_value()) (void)MakeTuningKey("rms_norm_fwd", *shape);
    return std::nullopt;
  };
  const absl::Status s = WithinSeconds("PlanCache::Plan with a tuning DB", 20, [&] {
    return cache.Plan("rms_norm_fwd", c.Get(), FakeDevice(), source).status();
  });
  ExpectInvalid(s, {"rms_norm_fwd: tensor 'X'", "too large"});
  EXPECT_EQ(lookups, 0) << "the tuning DB is asked only about calls that passed the generic checks";
  EXPECT_EQ(cache.size(), 0u);
}

// ---- the plan cache's hit path runs the per-call address checks --------------------------------

struct Fwd2 {
  std::vector<TensorView> t;
  std::vector<double> s = {1e-6, 0.0, 0.0};
  OpCall Get() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    return c;
  }
};

Fwd2 GoodFwd(int64_t rows, int64_t n, uintptr_t base = 0) {
  const DType dt = DType::kBFloat16;
  return {{View(Addr(0, base), dt, {rows, n}, {n, 1}), View(Addr(1, base), dt, {n}, {1}),
           View(Addr(2, base), dt, {rows, n}, {n, 1}), View(Addr(3, base), DType::kFloat32, {rows}, {1})}};
}

TEST(GeometryLimits, CachedPlanRefusesAnOutputOverlappingAnInput) {
  PlanCache cache;
  const DeviceInfo dev = FakeDevice();
  const Fwd2 good = GoodFwd(64, 4096);
  ASSERT_TRUE(cache.Plan("rms_norm_fwd", good.Get(), dev).ok());
  ASSERT_TRUE(cache.Plan("rms_norm_fwd", GoodFwd(64, 4096, 0x1000).Get(), dev).ok());
  ASSERT_EQ(cache.stats().hits, 1u);

  // Same geometry and alignment, Y one row into X: a hit by key, refused by PlanOp.
  Fwd2 bad = good;
  bad.t[2].data = static_cast<char*>(good.t[0].data) + 4096 * 2;
  const absl::Status direct = PlanOp("rms_norm_fwd", bad.Get(), dev).status();
  ExpectInvalid(direct, {"rms_norm_fwd: output 'Y' overlaps tensor 'X'"});
  const absl::Status cached = cache.Plan("rms_norm_fwd", bad.Get(), dev).status();
  ExpectInvalid(cached, {"rms_norm_fwd: output 'Y' overlaps tensor 'X'"});
  EXPECT_EQ(cached, direct);
  // RSTD inside W: another output, another input.
  Fwd2 bad2 = good;
  bad2.t[3].data = static_cast<char*>(good.t[1].data) + 16;
  ExpectInvalid(cache.Plan("rms_norm_fwd", bad2.Get(), dev).status(),
                {"rms_norm_fwd: output 'RSTD' overlaps tensor 'W'"});
  // Y overlapping RSTD (two outputs).
  Fwd2 bad3 = good;
  bad3.t[3].data = static_cast<char*>(good.t[2].data) + 64 * 4096 * 2 - 16;
  ExpectInvalid(cache.Plan("rms_norm_fwd", bad3.Get(), dev).status(),
                {"rms_norm_fwd: output 'Y' overlaps tensor 'RSTD'"});
  // The good geometry still hits and plans.
  ASSERT_TRUE(cache.Plan("rms_norm_fwd", GoodFwd(64, 4096, 0x2000).Get(), dev).ok());
}

TEST(GeometryLimits, CachedPlanRefusesOverlapWithATuningDbToo) {
  PlanCache cache;
  const DeviceInfo dev = FakeDevice();
  PlanCache::ConfigSource source;
  source.generation = 3;
  source.lookup = [](const OpCall&) -> std::optional<LaunchConfig> { return std::nullopt; };
  const Fwd2 good = GoodFwd(64, 4096);
  ASSERT_TRUE(cache.Plan("rms_norm_fwd", good.Get(), dev, source).ok());
  Fwd2 bad = good;
  bad.t[2].data = static_cast<char*>(good.t[0].data) + 4096 * 2 * 3;
  ExpectInvalid(cache.Plan("rms_norm_fwd", bad.Get(), dev, source).status(),
                {"rms_norm_fwd: output 'Y' overlaps tensor 'X'"});
}

TEST(GeometryLimits, CachedInPlaceBackwardAcceptsTheExactAliasOnly) {
  PlanCache cache;
  const DeviceInfo dev = FakeDevice();
  const DType dt = DType::kBFloat16;
  const int64_t rows = 1000, n = 4096;
  auto make = [&](void* dx) {
    return std::vector<TensorView>{
        View(Addr(0), dt, {rows, n}, {n, 1}), View(Addr(1), dt, {rows, n}, {n, 1}),
        View(Addr(2), dt, {n}, {1}),          View(Addr(3), DType::kFloat32, {rows}, {1}),
        View(dx, dt, {rows, n}, {n, 1}),      View(Addr(5), dt, {n}, {1})};
  };
  const std::vector<double> scalars = {0.0, 0.0};
  auto plan = [&](const std::vector<TensorView>& t) {
    OpCall c;
    c.tensors = t;
    c.scalars = scalars;
    c.workspace = Addr(10);
    c.workspace_bytes = size_t{1} << 30;
    return cache.Plan("rms_norm_bwd", c, dev);
  };
  // dX exactly dY (the declared alias): planned, then a hit.
  ASSERT_TRUE(plan(make(Addr(0))).ok());
  ASSERT_TRUE(plan(make(Addr(0))).ok());
  // dX separate: planned, then a call of that key with dX half a row into X.
  ASSERT_TRUE(plan(make(Addr(4))).ok());
  const auto hits = cache.stats().hits;
  auto bad = plan(make(static_cast<char*>(Addr(1)) + n));
  ExpectInvalid(bad.status(), {"rms_norm_bwd: output 'dX' overlaps tensor 'X'"});
  EXPECT_EQ(cache.stats().hits, hits + 1) << "the refusal came from the cached path";
  // dX one row past dY: overlaps dY, and is not the exact alias dY allows.
  auto shifted = plan(make(static_cast<char*>(Addr(0)) + n * 2));
  ExpectInvalid(shifted.status(), {"rms_norm_bwd: output 'dX' overlaps tensor 'dY'", "may only be exactly 'dY'"});
}

TEST(GeometryLimits, AddressRangesThatWrapAreRefusedOnBothPaths) {
  PlanCache cache;
  const DeviceInfo dev = FakeDevice();
  const Fwd2 good = GoodFwd(64, 4096);
  ASSERT_TRUE(cache.Plan("rms_norm_fwd", good.Get(), dev).ok());
  Fwd2 bad = good;
  // 16-byte aligned like the original, 256 bytes below the top of the address space: the
  // tensor's 512 KiB would wrap around to address 0.
  bad.t[0].data = reinterpret_cast<void*>(~uintptr_t{0} - 255);
  ExpectInvalid(PlanOp("rms_norm_fwd", bad.Get(), dev).status(), {"rms_norm_fwd: tensor 'X'", "address"});
  ExpectInvalid(cache.Plan("rms_norm_fwd", bad.Get(), dev).status(), {"rms_norm_fwd: tensor 'X'", "address"});
}

// Random records over every op, sizes and strides drawn from a palette of edge values (empty,
// huge, negative, INT64_MAX), addresses sometimes overlapping: through the plan cache with a
// tuning DB source that computes the tuning key as the executor does, twice (miss, then hit).
// Every call returns (watchdog), and every refusal is INVALID_ARGUMENT starting with the op.
TEST(GeometryLimits, RandomHostileRecordsAreRefusedCleanly) {
  const int64_t palette[] = {0, 1, 2, 3, 8, 64, 4096, 4097, int64_t{1} << 31, k2p40, k2p62 - 1, k2p62,
                             k2p62 + 1, kMax - 1, kMax, -1, -4096, std::numeric_limits<int64_t>::min()};
  const DType dtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32, DType::kInt64};
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  auto next = [&rng] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  auto pick = [&](uint64_t n) { return next() % n; };
  auto size_value = [&]() -> int64_t {
    return pick(3) == 0 ? palette[pick(std::size(palette))] : static_cast<int64_t>(pick(9));
  };
  const DeviceInfo dev = FakeDevice();
  PlanCache cache(64);
  PlanCache::ConfigSource source;
  source.generation = 1;
  std::string current_op;
  source.lookup = [&current_op](const OpCall& call) -> std::optional<LaunchConfig> {
    const OpSpec* spec = FindOp(current_op);
    if (spec == nullptr || !spec->tuning_shape) return std::nullopt;
    const std::optional<TuningShape> shape = spec->tuning_shape(call);
    if (shape.has_value()) (void)MakeTuningKey(current_op, *shape);
    return std::nullopt;
  };
  int refused = 0, planned = 0;
  WithinSeconds("random hostile records", 240, [&] {
    for (int iter = 0; iter < 20000; ++iter) {
      const OpSpec& spec = *AllOps()[pick(AllOps().size())];
      current_op = spec.name;
      std::vector<TensorView> t(spec.tensors.size());
      std::vector<double> scalars(spec.scalars.size(), 0.0);
      for (double& x : scalars) x = pick(2) == 0 ? 1e-6 : static_cast<double>(pick(3));
      // Half the records: a valid call (the op's tuning problem) with one or two fields broken.
      std::optional<TuningProblem> problem;
      if (spec.tuning_problem && pick(2) == 0) {
        const int64_t rows_options[] = {1, 7, 64, 4096}, cols_options[] = {8, 100, 4096, 5120};
        absl::StatusOr<TuningProblem> p = spec.tuning_problem(
            {spec.tensors[0].dtypes[0], rows_options[pick(4)], cols_options[pick(4)]});
        if (p.ok() && p->tensors.size() == t.size() && p->scalars.size() == scalars.size()) problem = *p;
      }
      if (problem.has_value()) {
        scalars = problem->scalars;
        for (size_t i = 0; i < t.size(); ++i) {
          const ScratchTensor& st = problem->tensors[i];
          if (!st.present) continue;
          std::vector<int64_t> strides(st.sizes.size());
          int64_t stride = 1;
          for (int d = static_cast<int>(st.sizes.size()) - 1; d >= 0; --d) {
            strides[d] = stride;
            stride *= st.sizes[d];
          }
          t[i] = View(Addr(static_cast<int>(i)), st.dtype, st.sizes, strides);
        }
        for (int breaks = 1 + static_cast<int>(pick(2)); breaks > 0; --breaks) {
          TensorView& v = t[pick(t.size())];
          if (!v.present()) continue;
          switch (pick(4)) {
            case 0: v.sizes[pick(v.ndim)] = size_value(); break;
            case 1: v.strides[pick(v.ndim)] = size_value(); break;
            case 2: v.data = static_cast<char*>(t[pick(t.size())].data ? t[pick(t.size())].data : v.data) + 16 * pick(4); break;
            default: v.sizes[pick(v.ndim)] = 0; v.sizes[pick(v.ndim)] = size_value(); break;
          }
          if (v.data == nullptr) v.data = Addr(11);
        }
      }
      for (size_t i = 0; i < t.size() && !problem.has_value(); ++i) {
        const TensorParam& p = spec.tensors[i];
        if (p.optional && pick(4) == 0) continue;
        TensorView& v = t[i];
        v.dtype = pick(8) == 0 ? dtypes[pick(std::size(dtypes))] : p.dtypes[pick(p.dtypes.size())];
        v.ndim = static_cast<int32_t>(1 + pick(kMaxDims));
        const bool contiguous = pick(2) == 0;
        int64_t stride = 1;
        for (int d = v.ndim - 1; d >= 0; --d) {
          v.sizes[d] = size_value();
          if (contiguous) {
            v.strides[d] = stride;
            if (__builtin_mul_overflow(stride, std::max<int64_t>(v.sizes[d], 1), &stride)) stride = 1;
          } else {
            v.strides[d] = size_value();
          }
        }
        // Far apart, or on top of an earlier tensor (a few elements in, or exactly).
        uintptr_t addr = uintptr_t{0x100000000} * (i + 1);
        if (i > 0 && pick(4) == 0) addr = reinterpret_cast<uintptr_t>(t[pick(i)].data) + 16 * pick(3);
        if (addr == 0) addr = 0x1000;
        v.data = reinterpret_cast<void*>(addr);
      }
      OpCall call;
      call.tensors = t;
      call.scalars = scalars;
      call.workspace = Addr(12);
      call.workspace_bytes = size_t{1} << 40;
      for (int twice = 0; twice < 2; ++twice) {
        const absl::StatusOr<OpPlan> plan =
            pick(2) == 0 ? cache.Plan(spec.name, call, dev, source) : cache.Plan(spec.name, call, dev);
        if (plan.ok()) {
          ++planned;
          continue;
        }
        ++refused;
        ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << spec.name << ": " << plan.status();
        ASSERT_EQ(plan.status().message().substr(0, spec.name.size()), spec.name) << plan.status();
      }
    }
  });
  EXPECT_GT(refused, 0);
  std::printf("random hostile records: %d planned, %d refused\n", planned, refused);
}

}  // namespace
}  // namespace ligerd::kernels
