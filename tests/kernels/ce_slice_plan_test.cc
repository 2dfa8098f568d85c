// Vocabulary-sliced cross-entropy (ce_slice_stats, ce_slice_grad): argument checking and planning,
// no CUDA (fake pointers, a fake device).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/ce_slice_params.h"
#include "kernels/plan_cache.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::ExpectInvalid;
using testing::Tensor;
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }

constexpr DType kBf16 = DType::kBFloat16, kF32 = DType::kFloat32, kF16 = DType::kFloat16;
constexpr DType kI64 = DType::kInt64;
constexpr unsigned kBlock = 256;  // ce_slice.cc's block: one row per block, 8 warps

struct Call {
  std::string op;
  std::vector<TensorView> t;
  std::vector<double> s;
  absl::StatusOr<OpPlan> Plan(const DeviceInfo& dev = testing::FakeDevice()) const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    return PlanOp(op, c, dev);
  }
};

// ce_slice_stats over the classes [v0, v0 + n) of a [rows, vocab] logits buffer (X a column slice
// of it, row stride vocab), with class weights [vocab] and idx. Scalars: v0, first, softcap.
Call Stats(int64_t rows, int64_t n, int64_t v0, int64_t vocab, DType dt = kBf16) {
  return {"ce_slice_stats",
          {Tensor(Addr(0) + v0 * DTypeBytes(dt), dt, {rows, n}, {vocab, 1}), Tensor(Addr(1), kI64, {rows}),
           Tensor(Addr(2), kF32, {vocab}), Tensor(Addr(3), kF32, {rows, 4}), Tensor(Addr(4), kI64, {rows})},
          {static_cast<double>(v0), 0.0, 0.0}};
}
// ce_slice_grad over the same slice, in place (dX = X). Scalars: v0, softcap, ignore_index.
Call Grad(int64_t rows, int64_t n, int64_t v0, int64_t vocab, DType dt = kBf16) {
  const TensorView x = Tensor(Addr(0) + v0 * DTypeBytes(dt), dt, {rows, n}, {vocab, 1});
  return {"ce_slice_grad",
          {x, Tensor(Addr(1), kI64, {rows}), Tensor(Addr(2), kF32, {vocab}), Tensor(Addr(3), kF32, {rows, 4}), x},
          {static_cast<double>(v0), 0.0, -100.0}};
}

const KernelLaunch& OnlyLaunch(const absl::StatusOr<OpPlan>& p) {
  static const KernelLaunch none;
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok() || p->launches.size() != 1) {
    ADD_FAILURE() << "expected one launch";
    return none;
  }
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.block[0], kBlock);
  EXPECT_EQ(k.block[1], 1u);
  EXPECT_EQ(k.grid[1], 1u);
  EXPECT_EQ(k.shared_bytes, 0u) << "no dynamic shared memory";
  EXPECT_EQ(k.cluster, 0u);
  EXPECT_EQ(p->workspace_bytes, 0u) << "no workspace";
  return k;
}

TEST(CeSlicePlan, CatalogueEntries) {
  const OpSpec* s = FindOp("ce_slice_stats");
  const OpSpec* g = FindOp("ce_slice_grad");
  ASSERT_NE(s, nullptr);
  ASSERT_NE(g, nullptr);
  std::vector<std::string> names;
  for (const TensorParam& t : s->tensors) names.push_back(t.name + (t.optional ? "?" : "") + (t.output ? "->" : ""));
  EXPECT_EQ(names, (std::vector<std::string>{"X", "target", "weight?", "stats->", "idx?->"}));
  names.clear();
  for (const TensorParam& t : g->tensors) names.push_back(t.name + (t.optional ? "?" : "") + (t.output ? "->" : ""));
  EXPECT_EQ(names, (std::vector<std::string>{"X", "target", "weight?", "coef", "dX->"}));
  EXPECT_EQ(g->tensors[4].may_alias, "X") << "the gradient is written over the logits";
  EXPECT_EQ(s->scalars, (std::vector<std::string>{"v0", "first", "softcap"}));
  EXPECT_EQ(g->scalars, (std::vector<std::string>{"v0", "softcap", "ignore_index"}));
  // One variant per logits dtype, each compiling one of the two kernels.
  for (const OpSpec* op : {s, g}) {
    EXPECT_EQ(op->main.name, "kernels/ops/ce_slice.cuh");
    ASSERT_EQ(op->variants.size(), 3u) << op->name;
    const char* tags[] = {"xf32", "xbf16", "xf16"};
    const char* types[] = {"LIGERD_XT=float", "LIGERD_XT=ligerd::bf16", "LIGERD_XT=ligerd::f16"};
    const std::string part = op == s ? "LIGERD_CE_SLICE_PART=0" : "LIGERD_CE_SLICE_PART=1";
    for (size_t i = 0; i < 3; ++i) {
      const KernelVariant& v = op->variants[i];
      EXPECT_EQ(v.tag, tags[i]);
      EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), part), v.defines.end()) << v.tag;
      EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), types[i]), v.defines.end()) << v.tag;
    }
    EXPECT_FALSE(static_cast<bool>(op->candidates)) << op->name << ": not tuned";
  }
}

// The sliced path's shape: 2048 tokens, a 4096-class slice of Llama 3's 128256-class logits.
TEST(CeSlicePlan, StatsOfAVocabularySlice) {
  Call c = Stats(2048, 4096, 8192, 128256);
  c.s = {8192, 0, 30.0};
  auto p = c.Plan();
  const KernelLaunch& k = OnlyLaunch(p);
  EXPECT_EQ(k.kernel, "ce_slice_stats");
  EXPECT_EQ(k.grid[0], 264u) << "persistent: 132 SMs x 2 resident blocks (the fake oracle)";
  EXPECT_EQ(p->variant.tag, "xbf16");
  const auto q = testing::LaunchParams<LigerdCeSliceStatsParams>(*p);
  EXPECT_EQ(q.x, Addr(0) + 8192 * 2);
  EXPECT_EQ(q.target, reinterpret_cast<const long long*>(Addr(1)));
  EXPECT_EQ(q.weight, reinterpret_cast<const float*>(Addr(2))) << "the whole vector: the kernel adds v0";
  EXPECT_EQ(q.stats, reinterpret_cast<float*>(Addr(3)));
  EXPECT_EQ(q.idx, reinterpret_cast<long long*>(Addr(4)));
  EXPECT_EQ(q.rows, 2048);
  EXPECT_EQ(q.x_stride, 128256);
  EXPECT_EQ(q.n, 4096);
  EXPECT_EQ(q.v0, 8192);
  EXPECT_EQ(q.first, 0);
  EXPECT_FLOAT_EQ(q.softcap, 30.f);
}

TEST(CeSlicePlan, StatsFirstSliceWithoutOptionalTensors) {
  Call c = Stats(7, 1000, 0, 1000, kF32);
  c.t[2] = TensorView{};  // no class weights
  c.t[4] = TensorView{};  // no argmax
  c.s = {0, 1, 0};
  auto p = c.Plan();
  const KernelLaunch& k = OnlyLaunch(p);
  EXPECT_EQ(k.grid[0], 7u) << "no more blocks than rows";
  EXPECT_EQ(p->variant.tag, "xf32");
  const auto q = testing::LaunchParams<LigerdCeSliceStatsParams>(*p);
  EXPECT_EQ(q.weight, nullptr);
  EXPECT_EQ(q.idx, nullptr);
  EXPECT_EQ(q.first, 1);
  EXPECT_EQ(q.v0, 0);
  EXPECT_EQ(q.x_stride, 1000);
  EXPECT_EQ(q.softcap, 0.f);
}

TEST(CeSlicePlan, GradInPlace) {
  Call c = Grad(2048, 4096, 8192, 128256);
  c.s = {8192, 30.0, -100};
  auto p = c.Plan();
  const KernelLaunch& k = OnlyLaunch(p);
  EXPECT_EQ(k.kernel, "ce_slice_grad");
  EXPECT_EQ(k.grid[0], 264u);
  EXPECT_EQ(p->variant.tag, "xbf16");
  const auto q = testing::LaunchParams<LigerdCeSliceGradParams>(*p);
  EXPECT_EQ(q.x, Addr(0) + 8192 * 2);
  EXPECT_EQ(q.dx, q.x) << "dX is exactly X";
  EXPECT_EQ(q.target, reinterpret_cast<const long long*>(Addr(1)));
  EXPECT_EQ(q.weight, reinterpret_cast<const float*>(Addr(2)));
  EXPECT_EQ(q.coef, reinterpret_cast<const float*>(Addr(3)));
  EXPECT_EQ(q.rows, 2048);
  EXPECT_EQ(q.x_stride, 128256);
  EXPECT_EQ(q.dx_stride, 128256);
  EXPECT_EQ(q.n, 4096);
  EXPECT_EQ(q.v0, 8192);
  EXPECT_EQ(q.ignore_index, -100);
  EXPECT_FLOAT_EQ(q.softcap, 30.f);
}

TEST(CeSlicePlan, GradToItsOwnBufferAtOddShapes) {
  // fp16, 5 x 7 at class 3 of a 13-class buffer (an unaligned start: the kernel takes the head
  // element by element), dX dense; no weights, ignore_index 0.
  Call c = Grad(5, 7, 3, 13, kF16);
  c.t[2] = TensorView{};
  c.t[4] = Tensor(Addr(4), kF16, {5, 7});
  c.s = {3, 0, 0};
  auto p = c.Plan();
  const KernelLaunch& k = OnlyLaunch(p);
  EXPECT_EQ(k.grid[0], 5u);
  EXPECT_EQ(p->variant.tag, "xf16");
  const auto q = testing::LaunchParams<LigerdCeSliceGradParams>(*p);
  EXPECT_EQ(q.x, Addr(0) + 6);
  EXPECT_EQ(q.dx, Addr(4));
  EXPECT_EQ(q.weight, nullptr);
  EXPECT_EQ(q.x_stride, 13);
  EXPECT_EQ(q.dx_stride, 7);
  EXPECT_EQ(q.n, 7);
  EXPECT_EQ(q.ignore_index, 0);
  // One row of one class (its row stride is anything).
  Call one = Grad(1, 1, 41, 50, kF32);
  one.t[0].strides[0] = one.t[4].strides[0] = 0;
  EXPECT_EQ(OnlyLaunch(one.Plan()).grid[0], 1u);
}

TEST(CeSlicePlan, PersistentGridFollowsTheOccupancyOracle) {
  EXPECT_EQ(OnlyLaunch(Stats(100000, 4096, 0, 4096).Plan(testing::FakeDevice(8))).grid[0], 132u * 8);
  EXPECT_EQ(OnlyLaunch(Grad(100000, 4096, 0, 4096).Plan(testing::FakeDevice(3))).grid[0], 132u * 3);
  // Without an oracle: 8 blocks of 256 threads per SM (2048 resident threads).
  DeviceInfo bare;
  bare.sm_count = 132;
  EXPECT_EQ(OnlyLaunch(Stats(100000, 4096, 0, 4096).Plan(bare)).grid[0], 132u * 8);
  EXPECT_EQ(OnlyLaunch(Grad(500, 4096, 0, 4096).Plan(bare)).grid[0], 500u);
  // A kernel that cannot be resident is an internal error, not a grid of 0.
  auto p = Stats(16, 4096, 0, 4096).Plan(testing::FakeDevice(0));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInternal) << p.status();
  EXPECT_NE(p.status().message().find("ce_slice_stats: kernel ce_slice_stats cannot run"), std::string::npos)
      << p.status();
}

// The plan cache patches the addresses of a hit into the parameter blocks (the blocks hold the
// tensors' own addresses and no padding garbage): a call at new addresses gets exactly the plan
// PlanOp makes for it, with no call planned from scratch.
TEST(CeSlicePlan, PlansAreCacheable) {
  PlanCache cache;
  const DeviceInfo dev = testing::FakeDevice();
  for (const Call& base : {Stats(300, 4096, 8192, 128256), Grad(300, 4096, 8192, 128256)}) {
    for (int64_t shift : {0, 0x40000000}) {
      Call c = base;
      for (TensorView& t : c.t)
        if (t.present()) t.data = static_cast<char*>(t.data) + shift;
      OpCall oc;
      oc.tensors = c.t;
      oc.scalars = c.s;
      auto cached = cache.Plan(c.op, oc, dev);
      auto fresh = c.Plan(dev);
      ASSERT_TRUE(cached.ok() && fresh.ok()) << cached.status() << " " << fresh.status();
      ASSERT_EQ(cached->launches.size(), 1u);
      EXPECT_EQ(cached->launches[0].params, fresh->launches[0].params) << c.op << " shift " << shift;
    }
  }
  EXPECT_EQ(cache.stats().hits, 2u);
  EXPECT_EQ(cache.stats().misses, 2u);
  EXPECT_EQ(cache.stats().uncacheable, 0u);
}

TEST(CeSlicePlan, NoRowsIsNothingToDo) {
  for (int64_t n : {0, 4096}) {
    for (const Call& c : {Stats(0, n, 0, 4096), Grad(0, n, 0, 4096)}) {
      auto p = c.Plan();
      ASSERT_TRUE(p.ok()) << c.op << ": " << p.status();
      EXPECT_TRUE(p->launches.empty()) << c.op;
      EXPECT_EQ(p->variant.tag, "xbf16") << c.op;
    }
  }
}

TEST(CeSlicePlan, StatsArgumentErrorsNameOpAndTensor) {
  const std::string op = "ce_slice_stats: ";
  // dtypes (the generic checks, from the entry).
  { Call c = Stats(6, 4096, 0, 4096); c.t[0].dtype = kI64;
    ExpectInvalid(c.Plan(), op + "tensor 'X' has dtype int64, expected one of float32, bfloat16, float16"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[3].dtype = kBf16;
    ExpectInvalid(c.Plan(), op + "tensor 'stats' has dtype bfloat16, expected one of float32"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[1].dtype = DType::kInt32;
    ExpectInvalid(c.Plan(), op + "tensor 'target' has dtype int32, expected one of int64"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[2].dtype = kBf16;
    ExpectInvalid(c.Plan(), op + "tensor 'weight' has dtype bfloat16, expected one of float32"); }
  // Ranks.
  { Call c = Stats(6, 4096, 0, 4096); c.t[0] = Tensor(Addr(0), kBf16, {2, 3, 4096});
    ExpectInvalid(c.Plan(), op + "tensor 'X' has shape [2, 3, 4096], expected 2-D [rows, n]"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[0] = Tensor(Addr(0), kBf16, {4096});
    ExpectInvalid(c.Plan(), op + "tensor 'X' has shape [4096], expected 2-D [rows, n]"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[1] = Tensor(Addr(1), kI64, {6, 1});
    ExpectInvalid(c.Plan(), op + "tensor 'target' has shape [6, 1], expected [6] (one per row of X)"); }
  // stats must be [rows, 4], contiguous.
  { Call c = Stats(6, 4096, 0, 4096); c.t[3] = Tensor(Addr(3), kF32, {6, 3});
    ExpectInvalid(c.Plan(), op + "tensor 'stats' has shape [6, 3], expected [6, 4]"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[3] = Tensor(Addr(3), kF32, {24});
    ExpectInvalid(c.Plan(), op + "tensor 'stats' has shape [24], expected [6, 4]"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[3] = Tensor(Addr(3), kF32, {6, 4}, {8, 1});
    ExpectInvalid(c.Plan(), op + "tensor 'stats' must be contiguous"); }
  // Lengths against X's rows.
  { Call c = Stats(6, 4096, 0, 4096); c.t[1] = Tensor(Addr(1), kI64, {5});
    ExpectInvalid(c.Plan(), op + "tensor 'target' has shape [5], expected [6] (one per row of X)"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[1] = Tensor(Addr(1), kI64, {6}, {2});
    ExpectInvalid(c.Plan(), op + "tensor 'target' must be contiguous"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(4), kI64, {7});
    ExpectInvalid(c.Plan(), op + "tensor 'idx' has shape [7], expected [6] (one per row of X)"); }
  // Class weights: one per class up to v0 + n at least, contiguous.
  { Call c = Stats(6, 4096, 8192, 128256); c.t[2] = Tensor(Addr(2), kF32, {8192 + 4095});
    ExpectInvalid(c.Plan(), op + "tensor 'weight' has 12287 classes, fewer than v0 + n = 8192 + 4096"); }
  { Call c = Stats(6, 4096, 8192, 128256); c.t[2] = Tensor(Addr(2), kF32, {8192 + 4096});
    EXPECT_TRUE(c.Plan().ok()) << "exactly v0 + n classes: " << c.Plan().status(); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[2] = Tensor(Addr(2), kF32, {4096}, {2});
    ExpectInvalid(c.Plan(), op + "tensor 'weight' must be contiguous, got stride 2"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[2] = Tensor(Addr(2), kF32, {2, 4096});
    ExpectInvalid(c.Plan(), op + "tensor 'weight' has shape [2, 4096], expected 1-D [V]"); }
  // X's layout: unit last stride, rows that do not overlap, at least one class.
  { Call c = Stats(6, 4096, 0, 4096); c.t[0].strides[1] = 2; c.t[0].strides[0] = 8192;
    ExpectInvalid(c.Plan(), op + "tensor 'X' must have a contiguous last dim (stride 1), got stride 2"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[0] = Tensor(Addr(0), kBf16, {6, 4096}, {1, 6});  // transposed
    ExpectInvalid(c.Plan(), op + "tensor 'X' must have a contiguous last dim"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[0].strides[0] = 100;
    ExpectInvalid(c.Plan(), op + "tensor 'X' has overlapping rows (row stride 100 < 4096 columns)"); }
  { Call c = Stats(6, 0, 0, 4096); ExpectInvalid(c.Plan(), op + "tensor 'X' has rows but no classes"); }
  // Scalars.
  { Call c = Stats(6, 4096, 0, 4096); c.s[0] = -1;
    ExpectInvalid(c.Plan(), op + "scalar 'v0' (the slice's first class) must be >= 0, got -1"); }
  { Call c = Stats(6, 4096, 0, 4096); c.s[0] = 0.5; ExpectInvalid(c.Plan(), op + "scalar 'v0' must be an integer, got 0.5"); }
  { Call c = Stats(6, 4096, 0, 4096); c.s[1] = 2;
    ExpectInvalid(c.Plan(), op + "scalar 'first' must be 0 (update the statistics) or 1 (initialise them), got 2"); }
  { Call c = Stats(6, 4096, 0, 4096); c.s[1] = -1; ExpectInvalid(c.Plan(), op + "scalar 'first' must be 0"); }
  { Call c = Stats(6, 4096, 0, 4096); c.s[1] = 0.5; ExpectInvalid(c.Plan(), op + "scalar 'first' must be an integer"); }
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    Call c = Stats(6, 4096, 0, 4096);
    c.s[2] = bad;
    ExpectInvalid(c.Plan(), op + "scalar 'softcap' must be > 0 (or 0 for none) and finite, got ");
  }
  // Outputs overlapping anything (the generic checks).
  { Call c = Stats(6, 4096, 0, 4096); c.t[3].data = Addr(0) + 64;
    ExpectInvalid(c.Plan(), op + "output 'stats' overlaps tensor 'X'"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[4].data = Addr(1);
    ExpectInvalid(c.Plan(), op + "output 'idx' overlaps tensor 'target'"); }
  { Call c = Stats(6, 4096, 0, 4096); c.t[3].data = nullptr; ExpectInvalid(c.Plan(), op + "tensor 'stats' is required"); }
  { Call c = Stats(6, 4096, 0, 4096); c.s.pop_back();
    ExpectInvalid(c.Plan(), op + "expected 3 scalars (v0, first, softcap), got 2"); }
}

TEST(CeSlicePlan, GradArgumentErrorsNameOpAndTensor) {
  const std::string op = "ce_slice_grad: ";
  { Call c = Grad(6, 4096, 0, 4096); c.t[3].dtype = kBf16;
    ExpectInvalid(c.Plan(), op + "tensor 'coef' has dtype bfloat16, expected one of float32"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(4), kF32, {6, 4096});
    ExpectInvalid(c.Plan(), op + "tensor 'dX' has dtype float32, expected bfloat16 (dtype of X)"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(4), kBf16, {6, 4095});
    ExpectInvalid(c.Plan(), op + "tensor 'dX' has shape [6, 4095], expected [6, 4096] (shape of X)"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[0] = c.t[4] = Tensor(Addr(0), kBf16, {1, 6, 4096});
    ExpectInvalid(c.Plan(), op + "tensor 'X' has shape [1, 6, 4096], expected 2-D [rows, n]"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[3] = Tensor(Addr(3), kF32, {6, 2});
    ExpectInvalid(c.Plan(), op + "tensor 'coef' has shape [6, 2], expected [6, 4] (lse, A, B, C per row of X)"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[3] = Tensor(Addr(3), kF32, {6, 4}, {1, 6});
    ExpectInvalid(c.Plan(), op + "tensor 'coef' must be contiguous"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[1] = Tensor(Addr(1), kI64, {12});
    ExpectInvalid(c.Plan(), op + "tensor 'target' has shape [12], expected [6]"); }
  { Call c = Grad(6, 4096, 4096, 8191);
    ExpectInvalid(c.Plan(), op + "tensor 'weight' has 8191 classes, fewer than v0 + n = 4096 + 4096"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(4), kBf16, {6, 4096}, {8192, 2});
    ExpectInvalid(c.Plan(), op + "tensor 'dX' must have a contiguous last dim"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(4), kBf16, {6, 4096}, {4000, 1});
    ExpectInvalid(c.Plan(), op + "tensor 'dX' has overlapping rows (row stride 4000 < 4096 columns)"); }
  // dX may be exactly X, nothing else of it: shifted, or the same memory at another pitch.
  { Call c = Grad(6, 4096, 0, 4096); c.t[4].data = static_cast<char*>(c.t[0].data) + 16;
    ExpectInvalid(c.Plan(), op + "output 'dX' overlaps tensor 'X' (it may only be exactly 'X')"); }
  { Call c = Grad(6, 2048, 0, 4096); c.t[4] = Tensor(c.t[0].data, kBf16, {6, 2048});
    ExpectInvalid(c.Plan(), op + "output 'dX' overlaps tensor 'X' (it may only be exactly 'X')"); }
  { Call c = Grad(6, 4096, 0, 4096); c.t[4] = Tensor(Addr(3), kBf16, {6, 4096});
    ExpectInvalid(c.Plan(), op + "output 'dX' overlaps tensor 'coef'"); }
  { Call c = Grad(6, 4096, 0, 4096); c.s[0] = -4096;
    ExpectInvalid(c.Plan(), op + "scalar 'v0' (the slice's first class) must be >= 0, got -4096"); }
  for (double bad : {-0.5, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    Call c = Grad(6, 4096, 0, 4096);
    c.s[1] = bad;
    ExpectInvalid(c.Plan(), op + "scalar 'softcap' must be > 0 (or 0 for none) and finite");
  }
  for (double bad : {-100.5, std::nan(""), 1e300}) {
    Call c = Grad(6, 4096, 0, 4096);
    c.s[2] = bad;
    ExpectInvalid(c.Plan(), op + "scalar 'ignore_index' must be an integer");
  }
  { Call c = Grad(6, 0, 0, 4096); ExpectInvalid(c.Plan(), op + "tensor 'X' has rows but no classes"); }
}

}  // namespace
}  // namespace ligerd::kernels
