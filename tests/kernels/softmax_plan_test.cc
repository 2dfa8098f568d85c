// Softmax argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/softmax.h"
#include "kernels/ops/softmax_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Tensor;
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }

constexpr DType kBf16 = DType::kBFloat16, kF32 = DType::kFloat32, kF16 = DType::kFloat16;

using testing::ExpectInvalid;

template <typename P>
P Params(const KernelLaunch& k) {
  P p;
  EXPECT_EQ(k.params.size(), sizeof(P));
  std::memcpy(&p, k.params.data(), sizeof(P));
  return p;
}

struct Call {
  std::string op;
  std::vector<TensorView> t;
  std::vector<double> s;
  absl::StatusOr<OpPlan> Plan(const LaunchConfig* tuned = nullptr) const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    c.tuned = tuned;
    return PlanOp(op, c, testing::FakeDevice());
  }
};

// X [rows, n] -> Y [rows, n]; dY, Y -> dX, all contiguous at distinct addresses.
Call Fwd(int64_t rows, int64_t n, DType dt = kBf16) {
  return {"softmax_fwd", {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n})}, {}};
}
Call Bwd(int64_t rows, int64_t n, DType dt = kBf16) {
  return {"softmax_bwd",
          {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}), Tensor(Addr(2), dt, {rows, n})},
          {}};
}

// The one kernel a plan launches, and its block.
struct Shape {
  std::string kernel;
  unsigned threads, rows_per_block, grid;
};
Shape PlannedShape(const Call& c) {
  auto p = c.Plan();
  EXPECT_TRUE(p.ok()) << c.op << ": " << p.status();
  if (!p.ok() || p->launches.size() != 1) {
    ADD_FAILURE() << c.op << ": expected one launch";
    return {};
  }
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.block[2], 1u);
  EXPECT_EQ(k.grid[1], 1u);
  EXPECT_EQ(k.shared_bytes, 0u) << "no dynamic shared memory";
  EXPECT_EQ(p->workspace_bytes, 0u) << "no workspace";
  return {k.kernel, k.block[0], k.block[1], k.grid[0]};
}

TEST(SoftmaxPlan, CatalogueEntries) {
  const OpSpec* f = FindOp("softmax_fwd");
  const OpSpec* b = FindOp("softmax_bwd");
  ASSERT_NE(f, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(f->tensors.size(), 2u);
  EXPECT_EQ(f->tensors[0].name, "X");
  EXPECT_EQ(f->tensors[1].name, "Y");
  EXPECT_TRUE(f->tensors[1].output);
  ASSERT_EQ(b->tensors.size(), 3u);
  EXPECT_EQ(b->tensors[0].name, "dY");
  EXPECT_EQ(b->tensors[1].name, "Y");
  EXPECT_EQ(b->tensors[2].name, "dX");
  EXPECT_EQ(b->tensors[2].may_alias, "dY") << "dX over dY, in place";
  EXPECT_TRUE(f->scalars.empty());
  EXPECT_TRUE(b->scalars.empty());
  EXPECT_EQ(f->main.name, "kernels/ops/softmax.cuh");
  EXPECT_NE(f->main.text.find("softmax_fwd"), std::string_view::npos);
  // One variant per dtype and direction (nothing else is a compile-time choice).
  for (const OpSpec* op : {f, b}) {
    ASSERT_EQ(op->variants.size(), 3u) << op->name;
    EXPECT_EQ(op->variants[0].tag, "xf32");
    EXPECT_EQ(op->variants[1].tag, "xbf16");
    EXPECT_EQ(op->variants[2].tag, "xf16");
    const std::string dir = op == b ? "LIGERD_SOFTMAX_BWD=1" : "LIGERD_SOFTMAX_BWD=0";
    for (const KernelVariant& v : op->variants)
      EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), dir), v.defines.end()) << v.tag;
  }
  EXPECT_EQ(SoftmaxMaxIters(false), 8);
  EXPECT_EQ(SoftmaxMaxIters(true), 4);
}

TEST(SoftmaxPlan, ForwardAtTheLlamaShape) {
  Call c = Fwd(16384, 4096);
  auto p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.kernel, "softmax_fwd_i4_v") << "128 threads x 4 vectors of 8 = 4096";
  EXPECT_EQ(k.block[0], 128u);
  EXPECT_EQ(k.block[1], 2u) << "two rows fill a 256-thread block";
  EXPECT_EQ(k.grid[0], 8192u);
  EXPECT_EQ(p->variant.tag, "xbf16");
  const auto q = Params<LigerdSoftmaxFwdParams>(k);
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.y, Addr(1));
  EXPECT_EQ(q.rows, 16384);
  EXPECT_EQ(q.x_stride, 4096);
  EXPECT_EQ(q.y_stride, 4096);
  EXPECT_EQ(q.n, 4096);
}

TEST(SoftmaxPlan, BackwardAtTheLlamaShape) {
  Call c = Bwd(16384, 4096);
  auto p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u) << "no weight gradient, no reduction";
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.kernel, "softmax_bwd_i2_v") << "256 threads x 2 vectors of 8 = 4096";
  EXPECT_EQ(k.block[0], 256u);
  EXPECT_EQ(k.block[1], 1u);
  EXPECT_EQ(k.grid[0], 16384u) << "one block per row group, not a persistent grid";
  const auto q = Params<LigerdSoftmaxBwdParams>(k);
  EXPECT_EQ(q.dy, Addr(0));
  EXPECT_EQ(q.y, Addr(1));
  EXPECT_EQ(q.dx, Addr(2));
  EXPECT_EQ(q.rows, 16384);
  EXPECT_EQ(q.n, 4096);
  EXPECT_EQ(q.dy_stride, 4096);
}

TEST(SoftmaxPlan, ShapesFromOneElementToAVocabularyRow) {
  struct Case {
    const char* op;
    int64_t rows, n;
    DType dt;
    Shape want;
  };
  const Case cases[] = {
      // One element: a one-lane row, 32 rows (one warp) per block.
      {"softmax_fwd", 1, 1, kBf16, {"softmax_fwd_i1_s", 1, 32, 1}},
      {"softmax_bwd", 1, 1, kBf16, {"softmax_bwd_i1_s", 1, 32, 1}},
      // 3 x 5, 5 x 7: odd widths take element accesses, two or four lanes a row.
      {"softmax_fwd", 3, 5, kF32, {"softmax_fwd_i3_s", 2, 16, 1}},
      {"softmax_fwd", 5, 7, kF16, {"softmax_fwd_i4_s", 2, 16, 1}},
      {"softmax_bwd", 5, 7, kF16, {"softmax_bwd_i2_s", 4, 8, 1}},
      // 33 x 1000 bf16: 125 vectors, 32 lanes x 4.
      {"softmax_fwd", 33, 1000, kBf16, {"softmax_fwd_i4_v", 32, 1, 33}},
      // Square fp32: 1024 vectors of 4.
      {"softmax_fwd", 4096, 4096, kF32, {"softmax_fwd_i4_v", 256, 1, 4096}},
      {"softmax_bwd", 4096, 4096, kF32, {"softmax_bwd_i2_v", 512, 1, 4096}},
      // (2, 37, 8191) flattened: odd, 8191 elements at 1024 threads x 8 in registers.
      {"softmax_fwd", 74, 8191, kBf16, {"softmax_fwd_i8_s", 1024, 1, 74}},
      {"softmax_bwd", 74, 8191, kBf16, {"softmax_bwd_loop_s", 1024, 1, 74}},
      // The longest rows in registers: 8 x 1024 vectors forward, 3 x 1024 backward.
      {"softmax_fwd", 8, 65536, kBf16, {"softmax_fwd_i8_v", 1024, 1, 8}},
      {"softmax_fwd", 8, 32768, kF32, {"softmax_fwd_i8_v", 1024, 1, 8}},
      {"softmax_bwd", 8, 24576, kBf16, {"softmax_bwd_i3_v", 1024, 1, 8}},
      {"softmax_bwd", 8, 24576 + 8, kBf16, {"softmax_bwd_loop_v", 1024, 1, 8}},
      // Past them: streamed, one row per 1024-thread block.
      {"softmax_fwd", 8, 65536 + 8, kBf16, {"softmax_fwd_loop_v", 1024, 1, 8}},
      {"softmax_fwd", 2, 70000, kF32, {"softmax_fwd_loop_v", 1024, 1, 2}},
      {"softmax_bwd", 2, 70000, kF32, {"softmax_bwd_loop_v", 1024, 1, 2}},
      {"softmax_fwd", 4, 151936, kBf16, {"softmax_fwd_loop_v", 1024, 1, 4}},
      {"softmax_bwd", 4, 151936, kBf16, {"softmax_bwd_loop_v", 1024, 1, 4}},
      {"softmax_fwd", 4096, 151936, kF16, {"softmax_fwd_loop_v", 1024, 1, 4096}},
  };
  for (const Case& c : cases) {
    const Call call = std::string(c.op) == "softmax_fwd" ? Fwd(c.rows, c.n, c.dt) : Bwd(c.rows, c.n, c.dt);
    const Shape got = PlannedShape(call);
    const std::string what = absl::StrCat(c.op, " ", DTypeName(c.dt), " ", c.rows, "x", c.n);
    EXPECT_EQ(got.kernel, c.want.kernel) << what;
    EXPECT_EQ(got.threads, c.want.threads) << what;
    EXPECT_EQ(got.rows_per_block, c.want.rows_per_block) << what;
    EXPECT_EQ(got.grid, c.want.grid) << what;
  }
}

TEST(SoftmaxPlan, EveryDefaultCoversItsRowAndIsLegal) {
  for (bool backward : {false, true})
    for (DType dt : {kF32, kBf16, kF16})
      for (int64_t n : std::vector<int64_t>{1, 2, 3, 7, 8, 31, 64, 100, 1000, 1024, 4095, 4096, 8191, 8192,
                                            12288, 16384, 24576, 32000, 32768, 65536, 65537, 128256, 151936,
                                            int64_t{1} << 20})
        for (bool vec : {true, false}) {
          const int width = 16 / DTypeBytes(dt);
          if (vec && n % width != 0) continue;
          const LaunchConfig c = SoftmaxDefaultConfig(backward, 4096, n, dt, vec, 132);
          const std::string what = absl::StrCat(backward ? "bwd " : "fwd ", DTypeName(dt), " n=", n, vec ? " v" : " s");
          EXPECT_TRUE(SoftmaxCheckConfig(backward, c, n, dt, vec).ok())
              << what << ": " << SoftmaxCheckConfig(backward, c, n, dt, vec);
          const int64_t nvec = vec ? n / width : n;
          if (c.iters > 0) {
            EXPECT_GE(int64_t{c.threads_per_row} * c.iters, nvec) << what;
          }
          EXPECT_LE(c.threads_per_row * c.rows_per_block, 1024) << what;
          EXPECT_EQ(c.grid, 0) << what;
        }
}

TEST(SoftmaxPlan, LayoutsRanksAndStrides) {
  // 1-D: one row. 4-D: leading dims flatten.
  {
    Call c{"softmax_fwd", {Tensor(Addr(0), kF32, {4096}), Tensor(Addr(1), kF32, {4096})}, {}};
    auto p = c.Plan();
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(Params<LigerdSoftmaxFwdParams>(p->launches[0]).rows, 1);
  }
  {
    Call c{"softmax_fwd", {Tensor(Addr(0), kBf16, {2, 3, 4, 512}), Tensor(Addr(1), kBf16, {2, 3, 4, 512})}, {}};
    auto p = c.Plan();
    ASSERT_TRUE(p.ok()) << p.status();
    const auto q = Params<LigerdSoftmaxFwdParams>(p->launches[0]);
    EXPECT_EQ(q.rows, 24);
    EXPECT_EQ(q.n, 512);
  }
  // Rows at a wider pitch, each tensor its own: read in place, strides passed through.
  {
    Call c = Fwd(96, 2048);
    c.t[0] = Tensor(Addr(0), kBf16, {96, 2048}, {2112, 1});
    c.t[1] = Tensor(Addr(1), kBf16, {96, 2048}, {4096, 1});
    auto p = c.Plan();
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->launches[0].kernel, "softmax_fwd_i4_v") << "pitches of whole vectors stay vectorised";
    const auto q = Params<LigerdSoftmaxFwdParams>(p->launches[0]);
    EXPECT_EQ(q.x_stride, 2112);
    EXPECT_EQ(q.y_stride, 4096);
  }
  // An unaligned start (x[:, 5:]) or a pitch that is not whole vectors: element accesses.
  {
    Call c = Bwd(96, 2048);
    c.t[0] = Tensor(Addr(0) + 10, kBf16, {96, 2048}, {2112, 1});
    EXPECT_EQ(c.Plan()->launches[0].kernel.substr(c.Plan()->launches[0].kernel.size() - 2), "_s");
    Call d = Fwd(96, 2048);
    d.t[1] = Tensor(Addr(1), kBf16, {96, 2048}, {2050, 1});
    EXPECT_EQ(d.Plan()->launches[0].kernel.substr(d.Plan()->launches[0].kernel.size() - 2), "_s");
  }
}

TEST(SoftmaxPlan, InPlaceBackward) {
  Call c = Bwd(64, 4096);
  c.t[2] = c.t[0];  // dX is dY
  auto p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  const auto q = Params<LigerdSoftmaxBwdParams>(p->launches[0]);
  EXPECT_EQ(q.dx, q.dy);
  EXPECT_EQ(q.dx_stride, q.dy_stride);
}

TEST(SoftmaxPlan, NoRowsIsNothingToDo) {
  for (const Call& c : {Fwd(0, 4096), Bwd(0, 4096), Fwd(0, 0), Bwd(0, 0)}) {
    auto p = c.Plan();
    ASSERT_TRUE(p.ok()) << c.op << ": " << p.status();
    EXPECT_TRUE(p->launches.empty()) << c.op;
  }
}

TEST(SoftmaxPlan, ForwardArgumentErrorsNameOpAndTensor) {
  { Call c = Fwd(6, 4096); c.t[1].sizes[1] = 4095;
    ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'Y' has shape [6, 4095], expected [6, 4096] (shape of X)"); }
  { Call c = Fwd(6, 4096); c.t[1].dtype = kF16;
    ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'Y' has dtype float16, expected bfloat16 (dtype of X)"); }
  { Call c = Fwd(6, 4096); c.t[0].dtype = DType::kInt64;
    ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'X' has dtype int64, expected one of float32, bfloat16, float16"); }
  { Call c{"softmax_fwd", {Tensor(Addr(0), kBf16, {1, 1, 2, 3, 8}), Tensor(Addr(1), kBf16, {1, 1, 2, 3, 8})}, {}};
    ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'X' has 5 dims, expected 1 to 4"); }
  { Call c = Fwd(3, 0); ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'X' has hidden size 0 (a softmax over no elements is undefined)"); }
  { Call c = Fwd(6, 4096); c.t[0] = Tensor(Addr(0), kBf16, {6, 4096}, {1, 6});  // transposed
    ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'X'"); }
  { Call c = Fwd(6, 4096); c.t[1].strides[0] = 8; ExpectInvalid(c.Plan(), "softmax_fwd: output 'Y' has overlapping rows"); }
  { Call c = Fwd(6, 4096); c.t[1].data = Addr(0) + 64;
    ExpectInvalid(c.Plan(), "softmax_fwd: output 'Y' overlaps tensor 'X'"); }
  { Call c = Fwd(6, 4096); c.t[1].data = nullptr; ExpectInvalid(c.Plan(), "softmax_fwd: tensor 'Y' is required"); }
  { Call c = Fwd(6, 4096); c.t.pop_back(); ExpectInvalid(c.Plan(), "softmax_fwd: expected 2 tensors (X, Y), got 1"); }
  { Call c = Fwd(6, 4096); c.s = {1.0}; ExpectInvalid(c.Plan(), "softmax_fwd: expected 0 scalars"); }
}

TEST(SoftmaxPlan, BackwardArgumentErrorsNameOpAndTensor) {
  { Call c = Bwd(6, 4096); c.t[0].sizes[0] = 5;
    ExpectInvalid(c.Plan(), "softmax_bwd: tensor 'dY' has shape [5, 4096], expected [6, 4096] (shape of Y)"); }
  { Call c = Bwd(6, 4096); c.t[2].dtype = kF32;
    ExpectInvalid(c.Plan(), "softmax_bwd: tensor 'dX' has dtype float32, expected bfloat16 (dtype of Y)"); }
  { Call c = Bwd(6, 4096); c.t[2] = c.t[1];  // dX over Y: only dY may be aliased
    ExpectInvalid(c.Plan(), "softmax_bwd: output 'dX' overlaps tensor 'Y' (it may only be exactly 'dY')"); }
  { Call c = Bwd(6, 4096); c.t[2] = Tensor(Addr(0) + 16, kBf16, {6, 4096});  // dY shifted: not exactly dY
    ExpectInvalid(c.Plan(), "softmax_bwd: output 'dX' overlaps tensor 'dY'"); }
  { Call c = Bwd(3, 0); ExpectInvalid(c.Plan(), "softmax_bwd: tensor 'Y' has hidden size 0"); }
  { Call c = Bwd(6, 4096); c.t[1].data = nullptr; ExpectInvalid(c.Plan(), "softmax_bwd: tensor 'Y' is required"); }
  { Call c = Bwd(6, 4096); c.t[2].strides[0] = 0; ExpectInvalid(c.Plan(), "softmax_bwd: output 'dX'"); }
}

TEST(SoftmaxPlan, TunedConfigsAreCheckedLikeAnyInput) {
  LaunchConfig c;
  c.threads_per_row = 256;
  c.rows_per_block = 2;
  c.iters = 2;
  c.vectorized = true;
  auto p = Fwd(16384, 4096).Plan(&c);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "softmax_fwd_i2_v");
  EXPECT_EQ(p->launches[0].grid[0], 8192u);
  // Too few threads x vectors for the row.
  c.threads_per_row = 64;
  ExpectInvalid(Fwd(16384, 4096).Plan(&c), "softmax_fwd: tuned config: 64 threads x 2 vectors cannot hold a row of 4096");
  // Vector accesses on rows that do not allow them.
  c.threads_per_row = 1024;
  c.rows_per_block = 1;
  c.iters = 8;
  ExpectInvalid(Fwd(16, 8191).Plan(&c), "softmax_fwd: tuned config: vectorized access");
  // The backward's i4 is bounded to 512 threads (softmax.toml): 1024 is refused, 512 taken.
  LaunchConfig b;
  b.threads_per_row = 1024;
  b.rows_per_block = 1;
  b.iters = 4;
  b.vectorized = true;
  EXPECT_FALSE(SoftmaxCheckConfig(true, b, 32768, kBf16, true).ok());
  ExpectInvalid(Bwd(16, 32768).Plan(&b), "softmax_bwd: tuned config: block 1024x1 must be whole warps and at most 512");
  b.threads_per_row = 512;
  ASSERT_TRUE(Bwd(16, 16384).Plan(&b).ok());
  EXPECT_EQ(Bwd(16, 16384).Plan(&b)->launches[0].kernel, "softmax_bwd_i4_v");
  // Neither direction loops over rows: a grid smaller than the row groups is refused.
  b.grid = 4;
  ExpectInvalid(Bwd(16, 16384).Plan(&b), "softmax_bwd: tuned grid 4 is smaller than 16 row groups");
}

TEST(SoftmaxPlan, TuningCandidatesAllPlanOneBlockPerRowGroup) {
  const DeviceInfo dev = testing::FakeDevice(4);
  for (const char* name : {"softmax_fwd", "softmax_bwd"}) {
    const OpSpec* op = FindOp(name);
    ASSERT_TRUE(op->candidates && op->tuning_shape && op->tuning_problem) << name;
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{16384, 4096}, {4096, 151936}, {7, 13}}) {
      auto prob = op->tuning_problem({kBf16, rows, cols});
      ASSERT_TRUE(prob.ok()) << prob.status();
      std::vector<TensorView> t;
      for (size_t i = 0; i < prob->tensors.size(); ++i)
        t.push_back(Tensor(Addr(static_cast<int>(i)), prob->tensors[i].dtype, prob->tensors[i].sizes));
      OpCall call;
      call.tensors = t;
      call.scalars = prob->scalars;
      ASSERT_TRUE(PlanOp(name, call, dev).ok()) << name;
      const std::vector<LaunchConfig> cands = op->candidates(call, dev);
      EXPECT_GE(cands.size(), 2u) << name << " " << rows << "x" << cols;
      for (const LaunchConfig& c : cands) {
        EXPECT_EQ(c.grid, 0) << name;
        OpCall tuned = call;
        tuned.tuned = &c;
        auto p = PlanOp(name, tuned, dev);
        ASSERT_TRUE(p.ok()) << name << " " << rows << "x" << cols << ": " << p.status();
        EXPECT_EQ(p->launches[0].grid[0], static_cast<unsigned>((rows + c.rows_per_block - 1) / c.rows_per_block));
      }
    }
  }
}

}  // namespace
}  // namespace ligerd::kernels
