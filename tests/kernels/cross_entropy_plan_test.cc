// Cross-entropy argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/catalogue.h"
#include "kernels/ops/cross_entropy.h"
#include "kernels/ops/cross_entropy_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;

// An sm_80 device unless `cc` says otherwise: the two-pass ce_fwd (clusters need sm_90).
absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t, const std::vector<double>& s,
                            int blocks_per_sm = 1, int cc = 80, const LaunchConfig* tuned = nullptr) {
  OpCall c;
  c.tensors = t;
  c.scalars = s;
  c.tuned = tuned;
  DeviceInfo d = testing::FakeDevice(blocks_per_sm);
  d.compute_capability = cc;
  return PlanOp(op, c, d);
}

template <class P>
P Params(const OpPlan& p, size_t i = 0) {
  return testing::LaunchParams<P>(p, i);
}

using testing::ExpectInvalid;

struct Fwd {
  std::vector<TensorView> t;
  std::vector<double> s = {-100, 0.0, 0.0, 1, 0.0, 0};  // ignore, lss, ls, mean, softcap, token scaling
};
// X [rows, V] in place (dX = X), loss only outputs.
Fwd MakeFwd(int64_t rows, int64_t v, DType dt = DType::kBFloat16, bool in_place = true) {
  Fwd f;
  f.t = {Tensor(Addr(0), dt, {rows, v}),
         Tensor(Addr(1), DType::kInt64, {rows}),
         TensorView{},
         Tensor(Addr(3), DType::kFloat32, {4}),
         TensorView{},
         in_place ? Tensor(Addr(0), dt, {rows, v}) : Tensor(Addr(5), dt, {rows, v}),
         Tensor(Addr(6), DType::kFloat32, {rows}),
         TensorView{},
         TensorView{}};
  return f;
}

TEST(CrossEntropyPlan, InPlaceForwardAtLlama3Shape) {
  Fwd f = MakeFwd(16384, 128256);
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
  EXPECT_EQ(p->variant.tag, "xbf16");
  EXPECT_EQ(p->launches[0].block[0], 1024u);
  // 251 KiB rows: 24 MiB of L2 holds ~98 rows, fewer than the SMs, so one block per SM.
  EXPECT_EQ(p->launches[0].grid[0], 132u);
  const auto q = Params<LigerdCeFwdParams>(*p);
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.dx, Addr(0));
  EXPECT_EQ(q.rows, 16384);
  EXPECT_EQ(q.cols, 128256);
  EXPECT_EQ(q.x_stride, 128256);
  EXPECT_EQ(q.weight, nullptr);
  EXPECT_EQ(q.pred, nullptr);
  EXPECT_EQ(q.ignore_index, -100);
  EXPECT_EQ(q.reduction, LIGERD_CE_REDUCE_MEAN);
}

TEST(CrossEntropyPlan, SmallRowsGetSmallerBlocksAndMoreOfThem) {
  Fwd f = MakeFwd(4096, 32000);
  auto p = Plan("cross_entropy_fwd", f.t, f.s, /*blocks_per_sm=*/2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 512u);  // 4000 vectors / 8 per thread
  EXPECT_EQ(p->launches[0].grid[0], 264u);   // 62.5 KiB rows: 2 per SM fit the L2 budget
  Fwd one = MakeFwd(1, 50257, DType::kFloat32);
  p = Plan("cross_entropy_fwd", one.t, one.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  EXPECT_EQ(p->variant.tag, "xf32");
}

TEST(CrossEntropyPlan, SoftcapIsItsOwnVariant) {
  Fwd f = MakeFwd(8, 50257);
  f.s[4] = 30.0;
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->variant.tag, "xbf16.softcap");
  EXPECT_FLOAT_EQ(Params<LigerdCeFwdParams>(*p).softcap, 30.f);
}

// The plain module (LIGERD_CE_FEATURES=0: one row loop, no argmax, smoothing or weights) serves
// calls with none of them; each of the three needs the ".full" one, with softcap or without.
TEST(CrossEntropyPlan, ArgmaxSmoothingOrWeightsTakeTheFullVariant) {
  auto defines = [](const OpPlan& p) { return absl::StrJoin(p.variant.defines, " "); };
  Fwd f = MakeFwd(8, 1000);
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->variant.tag, "xbf16");
  EXPECT_NE(defines(*p).find("LIGERD_CE_FEATURES=0"), std::string::npos) << defines(*p);
  for (int which = 0; which < 3; ++which) {
    Fwd g = MakeFwd(8, 1000);
    if (which == 0) g.t[8] = Tensor(Addr(8), DType::kInt64, {8});     // pred (argmax)
    if (which == 1) g.s[2] = 0.1;                                     // label smoothing
    if (which == 2) g.t[2] = Tensor(Addr(2), DType::kFloat32, {1000});  // class weights
    p = Plan("cross_entropy_fwd", g.t, g.s);
    ASSERT_TRUE(p.ok()) << which << ": " << p.status();
    EXPECT_EQ(p->variant.tag, "xbf16.full") << which;
    EXPECT_NE(defines(*p).find("LIGERD_CE_FEATURES=1"), std::string::npos) << defines(*p);
    g.s[4] = 30.0;  // softcap too
    p = Plan("cross_entropy_fwd", g.t, g.s);
    ASSERT_TRUE(p.ok()) << which << ": " << p.status();
    EXPECT_EQ(p->variant.tag, "xbf16.softcap.full") << which;
  }
  // Every planned variant is one the catalogue compiles (precompile covers what plans use).
  const OpSpec* spec = FindOp("cross_entropy_fwd");
  ASSERT_NE(spec, nullptr);
  std::vector<std::string> tags;
  for (const KernelVariant& v : spec->variants) tags.push_back(v.tag);
  for (const char* t : {"xbf16", "xbf16.full", "xbf16.softcap", "xbf16.softcap.full", "xf32", "xf16.full"})
    EXPECT_NE(std::find(tags.begin(), tags.end(), t), tags.end()) << t;
  // The count and scale modules have no such dimension.
  EXPECT_EQ(absl::StrJoin(FindOp("cross_entropy_scale")->variants[1].defines, " ").find("FEATURES"),
            std::string::npos);
}

TEST(CrossEntropyPlan, LossOnlyAndOutOfPlaceAndStridedRows) {
  Fwd f = MakeFwd(8, 1000);
  f.t[5] = TensorView{};  // no gradient
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params<LigerdCeFwdParams>(*p).dx, nullptr);
  // Rows of a wider buffer (x[:, :1000] of [8, 1024]) and a strided target.
  f = MakeFwd(8, 1000, DType::kBFloat16, /*in_place=*/false);
  f.t[0] = Tensor(Addr(0), DType::kBFloat16, {8, 1000}, {1024, 1});
  f.t[1] = Tensor(Addr(1), DType::kInt64, {8}, {3});
  p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  const auto q = Params<LigerdCeFwdParams>(*p);
  EXPECT_EQ(q.x_stride, 1024);
  EXPECT_EQ(q.dx_stride, 1000);
  EXPECT_EQ(q.target_stride, 3);
}

TEST(CrossEntropyPlan, RejectsBadInputs) {
  Fwd f = MakeFwd(8, 1000);
  f.t[1] = Tensor(Addr(1), DType::kInt64, {7});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "cross_entropy_fwd: tensor 'target' has shape [7], expected [8]");
  f = MakeFwd(8, 1000);
  f.t[1] = Tensor(Addr(1), DType::kInt32, {8});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'target' has dtype int32");
  f = MakeFwd(8, 1000);
  f.t[2] = Tensor(Addr(2), DType::kFloat32, {999});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'weight' has shape [999], expected [1000]");
  f = MakeFwd(8, 1000);
  f.t[3] = Tensor(Addr(3), DType::kFloat32, {3});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'denom'");
  f = MakeFwd(8, 1000);
  f.t[0] = Tensor(Addr(0), DType::kBFloat16, {8, 1000}, {1, 8});
  f.t[5] = TensorView{};
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "contiguous last dim");
  f = MakeFwd(8, 1000);
  f.s[3] = 3;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "reduction must be 0 (none), 1 (mean) or 2 (sum)");
  f = MakeFwd(8, 1000);
  f.s[2] = 1.5;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "label_smoothing must be in [0, 1]");
  f = MakeFwd(8, 1000);
  f.s[4] = -1;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "softcap must be > 0");
  f = MakeFwd(8, 1000);
  f.s[0] = -0.5;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "ignore_index must be an integer");
  f = MakeFwd(8, 1000);
  f.t[5] = Tensor(Addr(0) + 2, DType::kBFloat16, {8, 1000});  // overlaps X, not exactly X
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "output 'dX' overlaps tensor 'X'");
  f = MakeFwd(8, 0);
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "no classes");
}

TEST(CrossEntropyPlan, NoRowsIsNothingToDo) {
  Fwd f = MakeFwd(0, 1000);
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->launches.empty());
}

TEST(CrossEntropyPlan, CountChecksClassesAndTargets) {
  std::vector<TensorView> t = {Tensor(Addr(0), DType::kInt64, {100}), TensorView{},
                               Tensor(Addr(2), DType::kFloat32, {4})};
  auto p = Plan("cross_entropy_count", t, {-100, 50257});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "ce_count");
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  const auto q = Params<LigerdCeCountParams>(*p);
  EXPECT_EQ(q.rows, 100);
  EXPECT_EQ(q.cols, 50257);
  EXPECT_EQ(q.ignore_index, -100);
  ExpectInvalid(Plan("cross_entropy_count", t, {-100, 0}), "num_classes must be in [1, 2^31]");
  t[1] = Tensor(Addr(1), DType::kFloat32, {10});
  ExpectInvalid(Plan("cross_entropy_count", t, {-100, 50257}), "tensor 'weight' has shape [10], expected [50257]");
}

TEST(CrossEntropyPlan, ScaleTakesOneFactorOrOnePerRow) {
  std::vector<TensorView> t = {Tensor(Addr(0), DType::kBFloat16, {128256, 4096}), Tensor(Addr(1), DType::kFloat32, {1})};
  auto p = Plan("cross_entropy_scale", t, {}, 8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_scale");
  EXPECT_EQ(Params<LigerdCeScaleParams>(*p).per_row, 0);
  t[1] = Tensor(Addr(1), DType::kFloat32, {128256});
  p = Plan("cross_entropy_scale", t, {}, 8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params<LigerdCeScaleParams>(*p).per_row, 1);
  t[1] = Tensor(Addr(1), DType::kFloat32, {3});
  ExpectInvalid(Plan("cross_entropy_scale", t, {}), "tensor 's' has shape [3], expected [1] or [128256]");
}

TEST(CrossEntropyConfig, DefaultIsLegalForAllShapes) {
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
    for (int64_t v : {1, 2, 7, 100, 1000, 32000, 50257, 128256, 151936, 262144, 1 << 22})
      for (int64_t rows : {1, 7, 8192, 16384}) {
        LaunchConfig c = CrossEntropyDefaultConfig(x, rows, v, 132, 2);
        EXPECT_TRUE(CrossEntropyCheckConfig(c).ok()) << v;
        EXPECT_GE(c.grid, 1);
        EXPECT_LE(c.grid, rows);
        EXPECT_LE(c.grid, 264);
      }
  LaunchConfig bad;
  bad.threads_per_row = 100;
  bad.rows_per_block = 1;
  EXPECT_FALSE(CrossEntropyCheckConfig(bad).ok());
}


// ---- ce_fwd_cluster ----------------------------------------------------------------------

struct ClusterCase {
  DType dtype;
  int64_t vocab;
  int cluster;  // 0: does not fit 8 CTAs of the default stash: ce_fwd
};

// Hand-computed: slice = ceil(floor(V / (16 / b)) / C) * 16 bytes; the smallest C with slice <=
// 64 KiB (65536 bytes), else the smallest with slice <= 100 KiB (102400 bytes), else ce_fwd.
// E.g. bf16 128256: 16032 vectors; C = 3 -> 85504 B (over 64 KiB), C = 4 -> 64128 B. bf16 32000:
// 4000 vectors, C = 1 -> 64000 B. bf16 262144: 32768 vectors, C = 8 -> exactly 65536 B. fp32
// 50257: 12564 vectors; C = 3 -> 67008 B (just over), C = 4 -> 50256 B. fp32 151936: 37984
// vectors, C = 8 -> 75968 B (over 64 KiB), so the 100 KiB rule: C = 5 -> 121552 B, C = 6 ->
// 101296 B. fp32 262144: 65536 vectors, C = 8 -> 131072 B: over both, so ce_fwd.
const ClusterCase kClusterCases[] = {
    {DType::kBFloat16, 32000, 1},  {DType::kBFloat16, 50257, 2},  {DType::kBFloat16, 128256, 4},
    {DType::kBFloat16, 151936, 5}, {DType::kBFloat16, 262144, 8}, {DType::kFloat32, 32000, 2},
    {DType::kFloat32, 50257, 4},   {DType::kFloat32, 128256, 8},  {DType::kFloat32, 151936, 6},
    {DType::kFloat32, 262144, 0},  {DType::kFloat16, 32000, 1},   {DType::kFloat16, 50257, 2},
    {DType::kFloat16, 128256, 4},  {DType::kFloat16, 151936, 5},  {DType::kFloat16, 262144, 8},
};

TEST(CrossEntropyCluster, PlannerPicksTheClusterKernelOnSm90) {
  for (const ClusterCase& k : kClusterCases) {
    const std::string what = absl::StrCat(DTypeName(k.dtype), " V=", k.vocab);
    EXPECT_EQ(CrossEntropyDefaultCluster(k.dtype, k.vocab), k.cluster) << what;
    Fwd f = MakeFwd(2048, k.vocab, k.dtype);  // (the fake tensors are 4 GiB apart)
    auto p = Plan("cross_entropy_fwd", f.t, f.s, /*blocks_per_sm=*/2, /*cc=*/90);
    ASSERT_TRUE(p.ok()) << what << ": " << p.status();
    ASSERT_EQ(p->launches.size(), 1u) << what;
    const KernelLaunch& l = p->launches[0];
    if (k.cluster == 0) {
      EXPECT_EQ(l.kernel, "ce_fwd") << what;
      EXPECT_EQ(l.cluster, 0u) << what;
      EXPECT_EQ(l.shared_bytes, 0u) << what;
      EXPECT_EQ(p->config.cluster, 1) << what;
      continue;
    }
    EXPECT_EQ(l.kernel, "ce_fwd_cluster") << what;
    EXPECT_EQ(l.cluster, static_cast<unsigned>(k.cluster)) << what;
    EXPECT_EQ(p->config.cluster, k.cluster) << what;
    const int64_t vw = 16 / DTypeBytes(k.dtype);
    const int64_t slice = (k.vocab / vw + k.cluster - 1) / k.cluster * 16;
    EXPECT_EQ(l.shared_bytes, static_cast<unsigned>(slice)) << what;
    EXPECT_LE(slice, kCrossEntropyClusterBudget) << what;
    EXPECT_EQ(p->config.shared_bytes, slice) << what;
    // The slices cover every vector of the row, whatever its alignment.
    EXPECT_GE(slice / 16 * k.cluster, k.vocab / vw) << what;
    // Without an active-cluster oracle: floor(132 SMs x 2 blocks / C) clusters, whole clusters.
    EXPECT_EQ(l.grid[0], static_cast<unsigned>(132 * 2 / k.cluster * k.cluster)) << what;
    EXPECT_EQ(l.grid[0] % l.cluster, 0u) << what;
    EXPECT_LE(l.block[0], 512u) << what;
    EXPECT_GE(l.block[0], 128u) << what;
    EXPECT_TRUE(CrossEntropyCheckConfig(p->config).ok()) << what;
  }
}

TEST(CrossEntropyCluster, SameParamsAsTheTwoPassKernel) {
  Fwd f = MakeFwd(16384, 128256);
  auto a = Plan("cross_entropy_fwd", f.t, f.s, 2, /*cc=*/80);
  auto b = Plan("cross_entropy_fwd", f.t, f.s, 2, /*cc=*/90);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->launches[0].kernel, "ce_fwd");
  EXPECT_EQ(b->launches[0].kernel, "ce_fwd_cluster");
  EXPECT_EQ(a->launches[0].params, b->launches[0].params);
  EXPECT_EQ(a->variant.tag, b->variant.tag);  // one module holds both kernels
  // 4 CTAs per row, 256 threads each (4008 vectors: >= 16 per thread).
  EXPECT_EQ(b->launches[0].block[0], 256u);
  EXPECT_EQ(b->launches[0].cluster, 4u);
}

TEST(CrossEntropyCluster, FallsBackToTheTwoPassKernel) {
  // Below sm_90 (no clusters), on sm_120 (100 KiB of shared memory per SM), without a gradient
  // (one read of the row already), and when tests disable it.
  for (int cc : {80, 86, 89, 120}) {
    Fwd f = MakeFwd(64, 128256);
    auto p = Plan("cross_entropy_fwd", f.t, f.s, 2, cc);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->launches[0].kernel, "ce_fwd") << cc;
    EXPECT_EQ(p->launches[0].cluster, 0u) << cc;
  }
  for (int cc : {90, 100, 103}) {
    Fwd f = MakeFwd(64, 128256);
    auto p = Plan("cross_entropy_fwd", f.t, f.s, 2, cc);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->launches[0].kernel, "ce_fwd_cluster") << cc;
  }
  Fwd f = MakeFwd(64, 128256);
  f.t[5] = TensorView{};
  auto p = Plan("cross_entropy_fwd", f.t, f.s, 2, 90);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
  f = MakeFwd(64, 128256);
  ::setenv("LIGERD_CE_CLUSTER", "0", 1);
  p = Plan("cross_entropy_fwd", f.t, f.s, 2, 90);
  ::unsetenv("LIGERD_CE_CLUSTER");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
  // A cluster that cannot be resident at all (occupancy 0 with its shared memory) falls back too.
  OpCall c;
  c.tensors = f.t;
  c.scalars = f.s;
  DeviceInfo d = testing::FakeDevice(2);
  d.blocks_per_sm = [](std::string_view, const KernelVariant&, std::string_view, int, size_t smem) {
    return absl::StatusOr<int>(smem > 0 ? 0 : 2);
  };
  p = PlanOp("cross_entropy_fwd", c, d);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
}

TEST(CrossEntropyCluster, GridFollowsTheActiveClusterOracle) {
  Fwd f = MakeFwd(16384, 128256);
  OpCall c;
  c.tensors = f.t;
  c.scalars = f.s;
  DeviceInfo d = testing::FakeDevice(2);
  int asked_cluster = 0;
  size_t asked_smem = 0;
  d.active_clusters = [&](std::string_view, const KernelVariant&, std::string_view kernel, int, size_t smem,
                          int cluster) -> absl::StatusOr<int> {
    EXPECT_EQ(kernel, "ce_fwd_cluster");
    asked_cluster = cluster;
    asked_smem = smem;
    return 40;  // fewer than floor(264 / 4) = 66: a cluster's CTAs must share a GPC
  };
  auto p = PlanOp("cross_entropy_fwd", c, d);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(asked_cluster, 4);
  EXPECT_EQ(asked_smem, 64128u);
  EXPECT_EQ(p->launches[0].grid[0], 160u);
  // Fewer rows than clusters: one cluster per row.
  Fwd small = MakeFwd(7, 128256);
  c.tensors = small.t;
  p = PlanOp("cross_entropy_fwd", c, d);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].grid[0], 28u);
}

TEST(CrossEntropyCluster, TunedConfigsAreChecked) {
  Fwd f = MakeFwd(1024, 128256);
  LaunchConfig t;
  t.threads_per_row = 256;
  t.rows_per_block = 1;
  t.cluster = 4;
  t.shared_bytes = static_cast<int>(CrossEntropyClusterSliceBytes(DType::kBFloat16, 128256, 4));
  EXPECT_EQ(t.shared_bytes, 4008 * 16);
  auto p = Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd_cluster");
  EXPECT_EQ(p->launches[0].cluster, 4u);
  EXPECT_EQ(p->launches[0].block[0], 256u);
  EXPECT_EQ(p->launches[0].grid[0], 132u * 2 / 4 * 4);
  // Two CTAs of 125 KiB (one per SM) is legal through the tuner.
  t.cluster = 2;
  t.shared_bytes = static_cast<int>(CrossEntropyClusterSliceBytes(DType::kBFloat16, 128256, 2));
  t.grid = 64;
  p = Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].grid[0], 64u);
  EXPECT_EQ(p->launches[0].shared_bytes, 128256u);
  t.grid = 63;  // not whole clusters
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t), "not whole clusters of 2");
  t.grid = 0;
  t.shared_bytes -= 16;  // one vector short
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t), "hold less than the 128256-byte slice");
  t.shared_bytes += 16;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 80, &t), "needs sm_90");
  t.cluster = 9;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t), "cluster of 9 CTAs");
  t.cluster = 1;
  t.shared_bytes = kCrossEntropyClusterMaxSmem + 16;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &t), "shared memory of");
  LaunchConfig two_pass;
  two_pass.threads_per_row = 1024;
  two_pass.rows_per_block = 1;
  two_pass.cluster = 2;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &two_pass), "takes no cluster");
  two_pass.cluster = 1;
  p = Plan("cross_entropy_fwd", f.t, f.s, 2, 90, &two_pass);  // the tuner may choose ce_fwd on sm_90
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
  Fwd loss_only = MakeFwd(1024, 128256);
  loss_only.t[5] = TensorView{};
  t.shared_bytes = 128256;
  t.cluster = 2;
  ExpectInvalid(Plan("cross_entropy_fwd", loss_only.t, loss_only.s, 2, 90, &t), "forward with dX");
}

}  // namespace
}  // namespace ligerd::kernels
