// Squared ReLU argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/relu_squared.h"
#include "kernels/ops/relu_squared_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

// Byte-addressable, for unaligned starts and column slices.
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;
// The planner needs no occupancy (one block per chunk): any fake device.
DeviceInfo FakeDevice() { return testing::FakeDevice(8); }
constexpr unsigned kPositions = LIGERD_RELU2_POSITIONS_PER_THREAD;

absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t,
                            const LaunchConfig* config = nullptr) {
  OpCall c;
  c.tensors = t;
  c.tuned = config;
  return PlanOp(op, c, FakeDevice());
}

LigerdReluSquaredParams Params(const OpPlan& p) { return testing::LaunchParams<LigerdReluSquaredParams>(p); }

using testing::ExpectInvalid;

std::vector<TensorView> Fwd(std::vector<int64_t> shape, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, shape), Tensor(Addr(1), dt, shape)};
}
std::vector<TensorView> Bwd(std::vector<int64_t> shape, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, shape), Tensor(Addr(1), dt, shape), Tensor(Addr(2), dt, shape)};
}

TEST(ReluSquaredPlan, DenseIsOneLongRowWithVectors) {
  // Nemotron-4 15B's MLP activation: 4 x 4096 tokens x 24576.
  auto p = Plan("relu_squared_fwd", Fwd({4, 4096, 24576}));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "relu_squared_fwd_v");
  EXPECT_EQ(p->launches[0].block[0], 256u);
  const uint64_t n = uint64_t{4} * 4096 * 24576;
  EXPECT_EQ(p->launches[0].grid[0], n / 8 / (256 * kPositions)) << "one block per chunk";
  EXPECT_EQ(p->variant.tag, "xbf16");
  const LigerdReluSquaredParams q = Params(*p);
  EXPECT_EQ(q.rows, 1);
  EXPECT_EQ(q.cols, static_cast<long long>(n));
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.out, Addr(1));
  EXPECT_EQ(q.dy, nullptr);
  // The backward: [dY, X, dX].
  auto b = Plan("relu_squared_bwd", Bwd({4096, 24576}, DType::kFloat32));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->launches[0].kernel, "relu_squared_bwd_v");
  EXPECT_EQ(b->variant.tag, "xf32");
  EXPECT_EQ(b->launches[0].grid[0], 4096u * 24576u / 4u / (256 * kPositions));
  const LigerdReluSquaredParams qb = Params(*b);
  EXPECT_EQ(qb.dy, Addr(0));
  EXPECT_EQ(qb.x, Addr(1));
  EXPECT_EQ(qb.out, Addr(2));
  // Forward and backward of one dtype are different modules.
  EXPECT_NE(Plan("relu_squared_fwd", Fwd({8})).value().variant.defines,
            Plan("relu_squared_bwd", Bwd({8})).value().variant.defines);
}

TEST(ReluSquaredPlan, RaggedDenseRowKeepsVectorsAndAtLeastOneBlock) {
  // 4097 elements: 512 vectors of 8 and one element for the first block (relu_squared.cuh).
  auto p = Plan("relu_squared_fwd", Fwd({4097}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "relu_squared_fwd_v");
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  EXPECT_EQ(Params(*p).cols, 4097);
  // One element, 7 elements: no whole vector, still one block (it does the tail).
  for (int64_t n : {1, 7}) {
    auto one = Plan("relu_squared_bwd", Bwd({n}));
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(one->launches[0].kernel, "relu_squared_bwd_v");
    EXPECT_EQ(one->launches[0].grid[0], 1u);
  }
  // A dense odd 3-D shape (the softmax tests' 2 x 37 x 8191) is one ragged row too.
  auto odd = Plan("relu_squared_fwd", Fwd({2, 37, 8191}, DType::kFloat16));
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_EQ(odd->launches[0].kernel, "relu_squared_fwd_v");
  EXPECT_EQ(Params(*odd).rows, 1);
  EXPECT_EQ(odd->launches[0].grid[0], (2u * 37u * 8191u / 8u + 256 * kPositions - 1) / (256 * kPositions));
}

TEST(ReluSquaredPlan, StridedRowsAndMisalignment) {
  // x = wide[:, :n] of a [rows, n + 64] buffer: rows at pitch n + 64, read in place.
  const int64_t rows = 3, n = 4096;
  std::vector<TensorView> t = Fwd({rows, n});
  t[0] = Tensor(Addr(0), DType::kBFloat16, {rows, n}, {n + 64, 1});
  auto p = Plan("relu_squared_fwd", t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "relu_squared_fwd_v");
  LigerdReluSquaredParams q = Params(*p);
  EXPECT_EQ(q.rows, rows);
  EXPECT_EQ(q.cols, n);
  EXPECT_EQ(q.x_stride, n + 64);
  EXPECT_EQ(q.out_stride, n);
  // Strided rows with a ragged last dim: element accesses (a row's start is not aligned).
  t = Fwd({rows, 4095});
  t[0] = Tensor(Addr(0), DType::kBFloat16, {rows, 4095}, {4096, 1});
  p = Plan("relu_squared_fwd", t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "relu_squared_fwd_s");
  EXPECT_EQ(p->launches[0].grid[0], (3u * 4095u + 256 * kPositions - 1) / (256 * kPositions));
  // An unaligned start (x[..., 3:]) anywhere: element accesses.
  std::vector<TensorView> m = Bwd({64});
  m[1].data = Addr(1) + 2;
  EXPECT_EQ(Plan("relu_squared_bwd", m)->launches[0].kernel, "relu_squared_bwd_s");
  // A row pitch that is not a multiple of the vector: element accesses.
  t = Fwd({rows, n});
  t[1] = Tensor(Addr(1), DType::kBFloat16, {rows, n}, {n + 4, 1});
  EXPECT_EQ(Plan("relu_squared_fwd", t)->launches[0].kernel, "relu_squared_fwd_s");
}

TEST(ReluSquaredPlan, EmptyTensorsPlanNothing) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{0, 64}, {64, 0}, {0}}) {
    auto p = Plan("relu_squared_fwd", Fwd(shape));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->launches.empty());
  }
}

TEST(ReluSquaredPlan, BackwardInPlaceOverDyOnly) {
  std::vector<TensorView> b = Bwd({16, 4096});
  b[2] = b[0];  // dX is dY
  auto p = Plan("relu_squared_bwd", b);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params(*p).out, Params(*p).dy);
  { auto c = Bwd({16, 4096}); c[2] = c[1];  // dX over X is not allowed
    ExpectInvalid(Plan("relu_squared_bwd", c), "relu_squared_bwd: output 'dX' overlaps tensor 'X' (it may only be exactly 'dY')"); }
  { auto c = Bwd({16, 4096}); c[2].data = Addr(0) + 64;  // dX partly over dY
    ExpectInvalid(Plan("relu_squared_bwd", c), "relu_squared_bwd: output 'dX' overlaps tensor 'dY'"); }
  { auto f = Fwd({16, 4096}); f[1] = f[0];  // the forward has no in-place form
    ExpectInvalid(Plan("relu_squared_fwd", f), "relu_squared_fwd: output 'Y' overlaps tensor 'X'"); }
}

TEST(ReluSquaredPlan, ArgumentErrorsNameTheOpAndTensor) {
  { auto t = Fwd({4, 64}); t[1].sizes[1] = 63;
    ExpectInvalid(Plan("relu_squared_fwd", t), "relu_squared_fwd: tensor 'Y' has shape [4, 63], expected [4, 64] (shape of X)"); }
  { auto t = Fwd({4, 64}); t[1].dtype = DType::kFloat16;
    ExpectInvalid(Plan("relu_squared_fwd", t), "relu_squared_fwd: tensor 'Y' has dtype float16, expected bfloat16 (dtype of X)"); }
  { auto t = Fwd({4, 64}); t[0].dtype = DType::kInt64;
    ExpectInvalid(Plan("relu_squared_fwd", t), "relu_squared_fwd: tensor 'X' has dtype int64"); }
  { auto t = Fwd({4, 64}); t[0].strides[1] = 2; t[0].strides[0] = 128;
    ExpectInvalid(Plan("relu_squared_fwd", t), "relu_squared_fwd: tensor 'X' must have a contiguous last dim"); }
  { auto t = Fwd({4, 64}); t[1].strides[0] = 32;
    ExpectInvalid(Plan("relu_squared_fwd", t), "relu_squared_fwd: output 'Y' has overlapping rows"); }
  { auto b = Bwd({4, 64}); b[0].sizes[0] = 5;
    ExpectInvalid(Plan("relu_squared_bwd", b), "relu_squared_bwd: tensor 'dY' has shape [5, 64], expected [4, 64]"); }
  { auto b = Bwd({4, 64}); b.pop_back();
    ExpectInvalid(Plan("relu_squared_bwd", b), "relu_squared_bwd: expected 3 tensors (dY, X, dX), got 2"); }
}

TEST(ReluSquaredPlan, ExplicitConfigIsCheckedAndHonoured) {
  LaunchConfig c = ReluSquaredDefaultConfig(true);
  c.threads_per_row = 1024;
  c.grid = 4;  // a persistent grid: blocks loop over the chunks
  auto p = Plan("relu_squared_fwd", Fwd({4096, 4096}), &c);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 1024u);
  EXPECT_EQ(p->launches[0].grid[0], 4u);
  c.threads_per_row = 48;
  ExpectInvalid(Plan("relu_squared_fwd", Fwd({64}), &c), "relu_squared_fwd: config: block of 48 threads");
  c = ReluSquaredDefaultConfig(true);
  std::vector<TensorView> m = Fwd({64});
  m[0].data = Addr(0) + 2;
  ExpectInvalid(Plan("relu_squared_fwd", m, &c), "vectorized access needs 16-byte aligned pointers");
  c.iters = 4;
  EXPECT_FALSE(ReluSquaredCheckConfig(c, true).ok());
  EXPECT_TRUE(ReluSquaredCheckConfig(ReluSquaredDefaultConfig(false), false).ok());
}

}  // namespace
}  // namespace ligerd::kernels
