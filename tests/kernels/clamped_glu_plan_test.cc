// Clamped GLU argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/clamped_glu.h"
#include "kernels/ops/clamped_glu_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

// Byte-addressable, for unaligned starts and column slices.
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;
DeviceInfo FakeDevice() { return testing::FakeDevice(8); }
constexpr unsigned kPositions = LIGERD_CGLU_POSITIONS_PER_THREAD;
// GPT-OSS's experts: alpha 1.702, limit 7, up_offset 1, pairs.
const std::vector<double> kGptOss = {1.702, 7.0, 1.0, 1.0};
// DeepSeek-V4's: alpha 1 (silu), limit 10, up_offset 0, halves.
const std::vector<double> kDsv4 = {1.0, 10.0, 0.0, 0.0};

absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t,
                            const std::vector<double>& s, const LaunchConfig* config = nullptr) {
  OpCall c;
  c.tensors = t;
  c.scalars = s;
  c.tuned = config;
  return PlanOp(op, c, FakeDevice());
}

LigerdClampedGluParams Params(const OpPlan& p) {
  LigerdClampedGluParams q;
  EXPECT_EQ(p.launches.at(0).params.size(), sizeof(q));
  std::memcpy(&q, p.launches[0].params.data(), sizeof(q));
  return q;
}

void ExpectInvalid(const absl::StatusOr<OpPlan>& p, const std::string& fragment) {
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(p.status().message().find(fragment), absl::string_view::npos)
      << "message: " << p.status().message() << "\nexpected to contain: " << fragment;
}

// [..., 2I] input and [..., I] output.
std::vector<int64_t> Half(std::vector<int64_t> s) {
  s.back() /= 2;
  return s;
}
std::vector<TensorView> Fwd(std::vector<int64_t> shape, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, shape), Tensor(Addr(1), dt, Half(shape))};
}
std::vector<TensorView> Bwd(std::vector<int64_t> shape, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, Half(shape)), Tensor(Addr(1), dt, shape), Tensor(Addr(2), dt, shape)};
}

TEST(ClampedGluPlan, GptOssExpertsVectorizedPairs) {
  // GPT-OSS 20B's experts: I = 2880, gate_up [S, 5760], 4096 routed rows.
  auto p = Plan("clamped_glu_fwd", Fwd({4096, 5760}), kGptOss);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "clamped_glu_fwd_v");
  EXPECT_EQ(p->launches[0].block[0], 256u);
  EXPECT_EQ(p->launches[0].grid[0], 4096u * 2880u / 8u / (256 * kPositions)) << "one block per chunk";
  EXPECT_EQ(p->variant.tag, "pairs_xbf16");
  const LigerdClampedGluParams q = Params(*p);
  EXPECT_EQ(q.rows, 4096);
  EXPECT_EQ(q.cols, 2880);
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.out, Addr(1));
  EXPECT_EQ(q.dy, nullptr);
  EXPECT_EQ(q.x_stride, 5760);
  EXPECT_EQ(q.out_stride, 2880);
  EXPECT_FLOAT_EQ(q.alpha, 1.702f);
  EXPECT_EQ(q.limit, 7.0f);
  EXPECT_EQ(q.up_offset, 1.0f);
  // The backward: [dY, X, dX], halves for DeepSeek-V4, fp32.
  auto b = Plan("clamped_glu_bwd", Bwd({3, 100, 64}, DType::kFloat32), kDsv4);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->launches[0].kernel, "clamped_glu_bwd_v");
  EXPECT_EQ(b->variant.tag, "halves_xf32");
  const LigerdClampedGluParams qb = Params(*b);
  EXPECT_EQ(qb.dy, Addr(0));
  EXPECT_EQ(qb.x, Addr(1));
  EXPECT_EQ(qb.out, Addr(2));
  EXPECT_EQ(qb.rows, 300);
  EXPECT_EQ(qb.cols, 32);
  EXPECT_EQ(qb.dy_stride, 32);
  EXPECT_EQ(qb.out_stride, 64);
  EXPECT_EQ(b->launches[0].grid[0], 5u);  // 300 * 32 / 4 = 2400 vectors in chunks of 512
  // Layout and direction are different modules; the layout comes from the scalar.
  std::vector<double> halves = kGptOss;
  halves[3] = 0;
  EXPECT_NE(Plan("clamped_glu_fwd", Fwd({4, 16}), kGptOss).value().variant.defines,
            Plan("clamped_glu_fwd", Fwd({4, 16}), halves).value().variant.defines);
  EXPECT_NE(Plan("clamped_glu_fwd", Fwd({4, 16}), kGptOss).value().variant.defines,
            Plan("clamped_glu_bwd", Bwd({4, 16}), kGptOss).value().variant.defines);
}

TEST(ClampedGluPlan, OddWidthsStridesAndMisalignmentUseElementAccess) {
  // I = 19: not a multiple of the vector: element kernel, one position per output.
  auto p = Plan("clamped_glu_fwd", Fwd({7, 38}), kGptOss);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "clamped_glu_fwd_s");
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  EXPECT_EQ(Params(*p).cols, 19);
  // x = wide[:, :2I] of a wider buffer: rows at pitch 2I + 64, read in place, vectors kept.
  std::vector<TensorView> t = Fwd({3, 128});
  t[0] = Tensor(Addr(0), DType::kBFloat16, {3, 128}, {192, 1});
  p = Plan("clamped_glu_fwd", t, kDsv4);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "clamped_glu_fwd_v");
  EXPECT_EQ(Params(*p).x_stride, 192);
  // A pitch that is not a multiple of the vector, or an unaligned start: element accesses.
  t[0] = Tensor(Addr(0), DType::kBFloat16, {3, 128}, {132, 1});
  EXPECT_EQ(Plan("clamped_glu_fwd", t, kDsv4)->launches[0].kernel, "clamped_glu_fwd_s");
  std::vector<TensorView> m = Bwd({4, 64});
  m[0].data = Addr(0) + 2;
  EXPECT_EQ(Plan("clamped_glu_bwd", m, kGptOss)->launches[0].kernel, "clamped_glu_bwd_s");
  // One row: its pitch does not matter.
  EXPECT_EQ(Plan("clamped_glu_fwd", Fwd({1, 16}), kGptOss)->launches[0].kernel, "clamped_glu_fwd_v");
}

TEST(ClampedGluPlan, EmptyTensorsPlanNothing) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{0, 64}, {64, 0}, {0}}) {
    auto p = Plan("clamped_glu_fwd", Fwd(shape), kGptOss);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->launches.empty());
  }
}

TEST(ClampedGluPlan, ScalarsAreChecked) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  std::vector<double> s = kGptOss;
  s[1] = inf;  // no clamp
  EXPECT_TRUE(Plan("clamped_glu_fwd", Fwd({4, 16}), s).ok());
  s[1] = 0;
  EXPECT_TRUE(Plan("clamped_glu_fwd", Fwd({4, 16}), s).ok());
  s[1] = -1;
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 16}), s), "clamped_glu_fwd: scalar 'limit' is -1, expected >= 0");
  s[1] = nan;
  ExpectInvalid(Plan("clamped_glu_bwd", Bwd({4, 16}), s), "clamped_glu_bwd: scalar 'limit' is nan");
  s = kGptOss;
  s[0] = inf;
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 16}), s), "clamped_glu_fwd: scalar 'alpha' is inf");
  s = kGptOss;
  s[2] = 1e39;
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 16}), s), "clamped_glu_fwd: scalar 'up_offset'");
  s = kGptOss;
  s[3] = 2;
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 16}), s), "clamped_glu_fwd: scalar 'pairs' is 2, expected 0 (halves) or 1 (pairs)");
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 16}), {1.0, 7.0, 1.0}), "clamped_glu_fwd: expected 4 scalars");
}

TEST(ClampedGluPlan, ArgumentErrorsNameTheOpAndTensor) {
  ExpectInvalid(Plan("clamped_glu_fwd", {Tensor(Addr(0), DType::kBFloat16, {4, 15}),
                                         Tensor(Addr(1), DType::kBFloat16, {4, 7})}, kGptOss),
                "clamped_glu_fwd: X's last dim is 15, expected an even 2I");
  { auto t = Fwd({4, 64}); t[1].sizes[1] = 31; t[1].strides[0] = 31;
    ExpectInvalid(Plan("clamped_glu_fwd", t, kGptOss), "clamped_glu_fwd: tensor 'Y' is [4, 31] bfloat16, expected X's ([4, 64] bfloat16) leading dims and dtype with half its last dim"); }
  { auto t = Fwd({4, 64}); t[1].dtype = DType::kFloat16;
    ExpectInvalid(Plan("clamped_glu_fwd", t, kGptOss), "clamped_glu_fwd: tensor 'Y' is [4, 32] float16"); }
  { auto t = Fwd({4, 64}); t[0].dtype = DType::kInt64;
    ExpectInvalid(Plan("clamped_glu_fwd", t, kGptOss), "clamped_glu_fwd: tensor 'X' has dtype int64"); }
  { auto t = Fwd({4, 64}); t[0].strides[1] = 2; t[0].strides[0] = 128;
    ExpectInvalid(Plan("clamped_glu_fwd", t, kGptOss), "clamped_glu_fwd: tensor 'X' must have a contiguous last dim"); }
  { auto t = Fwd({4, 64}); t[1].strides[0] = 16;
    ExpectInvalid(Plan("clamped_glu_fwd", t, kGptOss), "clamped_glu_fwd: output 'Y' has overlapping rows"); }
  { auto b = Bwd({4, 64}); b[2].sizes[1] = 32; b[2].strides[0] = 32;
    ExpectInvalid(Plan("clamped_glu_bwd", b, kGptOss), "clamped_glu_bwd: tensor 'dX' has shape [4, 32], expected [4, 64]"); }
  { auto b = Bwd({4, 64}); b[0].sizes[0] = 5;
    ExpectInvalid(Plan("clamped_glu_bwd", b, kGptOss), "clamped_glu_bwd: tensor 'dY' is [5, 32]"); }
  { auto b = Bwd({4, 64}); b[2] = b[1];  // dX over X: no in-place form
    ExpectInvalid(Plan("clamped_glu_bwd", b, kGptOss), "clamped_glu_bwd: output 'dX' overlaps tensor 'X'"); }
  { auto b = Bwd({4, 64}); b.pop_back();
    ExpectInvalid(Plan("clamped_glu_bwd", b, kGptOss), "clamped_glu_bwd: expected 3 tensors (dY, X, dX), got 2"); }
}

TEST(ClampedGluPlan, ExplicitConfigIsCheckedAndHonoured) {
  LaunchConfig c = ClampedGluDefaultConfig(true);
  c.threads_per_row = 1024;
  c.grid = 4;  // a persistent grid: blocks loop over the chunks
  auto p = Plan("clamped_glu_fwd", Fwd({4096, 4096}), kGptOss, &c);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 1024u);
  EXPECT_EQ(p->launches[0].grid[0], 4u);
  c.threads_per_row = 48;
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({64}), kGptOss, &c), "clamped_glu_fwd: config: block of 48 threads");
  c = ClampedGluDefaultConfig(true);
  ExpectInvalid(Plan("clamped_glu_fwd", Fwd({4, 38}), kGptOss, &c), "vectorized access needs 16-byte aligned pointers");
  c.iters = 4;
  EXPECT_FALSE(ClampedGluCheckConfig(c, true).ok());
  EXPECT_TRUE(ClampedGluCheckConfig(ClampedGluDefaultConfig(false), false).ok());
}

}  // namespace
}  // namespace ligerd::kernels
