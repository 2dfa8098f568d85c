// SwiGLU / GeGLU argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/glu_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

// Byte-addressable, for halves of one [rows, 2F] tensor.
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;
// The GLU planner needs no occupancy (one block per chunk): any fake device.
DeviceInfo FakeDevice() { return testing::FakeDevice(8); }

absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t) {
  OpCall c;
  c.tensors = t;
  return PlanOp(op, c, FakeDevice());
}

LigerdGluParams Params(const OpPlan& p) { return testing::LaunchParams<LigerdGluParams>(p); }

using testing::ExpectInvalid;

std::vector<TensorView> Fwd(int64_t rows, int64_t f, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, {rows, f}), Tensor(Addr(1), dt, {rows, f}), Tensor(Addr(2), dt, {rows, f})};
}
std::vector<TensorView> Bwd(int64_t rows, int64_t f, DType dt = DType::kBFloat16) {
  return {Tensor(Addr(0), dt, {rows, f}), Tensor(Addr(1), dt, {rows, f}), Tensor(Addr(2), dt, {rows, f}),
          Tensor(Addr(3), dt, {rows, f}), Tensor(Addr(4), dt, {rows, f})};
}

TEST(GluPlan, DenseForwardIsOneLongRowWithVectors) {
  for (const char* op : {"swiglu_fwd", "geglu_fwd"}) {
    auto p = Plan(op, Fwd(16384, 14336));
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->launches.size(), 1u);
    EXPECT_EQ(p->launches[0].kernel, "glu_fwd_v");
    EXPECT_EQ(p->launches[0].block[0], 256u);
    // One block per chunk of 256 threads x LIGERD_GLU_POSITIONS_PER_THREAD vectors of 8.
    EXPECT_EQ(p->launches[0].grid[0], 16384u * 14336u / 8u / (256u * LIGERD_GLU_POSITIONS_PER_THREAD))
        << "one block per chunk";
    EXPECT_EQ(p->variant.tag, "xbf16");
    const LigerdGluParams q = Params(*p);
    EXPECT_EQ(q.rows, 1);
    EXPECT_EQ(q.cols, int64_t{16384} * 14336);
    EXPECT_EQ(q.a, Addr(0));
    EXPECT_EQ(q.b, Addr(1));
    EXPECT_EQ(q.out0, Addr(2));
    EXPECT_EQ(q.dc, nullptr);
  }
  // Variants differ by activation: swiglu and geglu define a different LIGERD_GLU_ACT.
  auto s = Plan("swiglu_fwd", Fwd(4, 64));
  auto g = Plan("geglu_fwd", Fwd(4, 64));
  EXPECT_NE(s->variant.defines, g->variant.defines);
}

TEST(GluPlan, HalvesOfOneTensorKeepTheirRowStride) {
  // a, b = x[:, :F], x[:, F:] of x [rows, 2F]: read in place at pitch 2F.
  const int64_t rows = 3, f = 14336;
  std::vector<TensorView> t = Fwd(rows, f);
  t[0] = Tensor(Addr(0), DType::kBFloat16, {rows, f}, {2 * f, 1});
  t[1] = Tensor(Addr(0) + f * 2, DType::kBFloat16, {rows, f}, {2 * f, 1});
  auto p = Plan("swiglu_fwd", t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "glu_fwd_v");
  LigerdGluParams q = Params(*p);
  EXPECT_EQ(q.rows, rows);
  EXPECT_EQ(q.cols, f);
  EXPECT_EQ(q.a_stride, 2 * f);
  EXPECT_EQ(q.b_stride, 2 * f);
  EXPECT_EQ(q.out0_stride, f);
  // Backward out of place from the halves into fresh buffers.
  std::vector<TensorView> b = Bwd(rows, f);
  b[1] = t[0];
  b[2] = t[1];
  auto pb = Plan("swiglu_bwd", b);
  ASSERT_TRUE(pb.ok()) << pb.status();
  q = Params(*pb);
  EXPECT_EQ(q.rows, rows);
  EXPECT_EQ(q.a_stride, 2 * f);
  EXPECT_EQ(q.out0_stride, f);
  EXPECT_EQ(q.dc, b[0].data);
  // Odd F (the (2, 37, 8191)) and an odd pitch: element accesses.
  std::vector<TensorView> o = Fwd(2 * 37, 8191);
  o[0] = Tensor(Addr(0), DType::kBFloat16, {2, 37, 8191});
  o[1] = Tensor(Addr(1), DType::kBFloat16, {2, 37, 8191});
  o[2] = Tensor(Addr(2), DType::kBFloat16, {2, 37, 8191});
  auto po = Plan("geglu_fwd", o);
  ASSERT_TRUE(po.ok()) << po.status();
  EXPECT_EQ(po->launches[0].kernel, "glu_fwd_s");
  EXPECT_EQ(Params(*po).rows, 1) << "contiguous: one long row";
  std::vector<TensorView> m = Fwd(4, 64);
  m[1].data = Addr(1) + 2;  // misaligned b
  EXPECT_EQ(Plan("swiglu_fwd", m)->launches[0].kernel, "glu_fwd_s");
}

TEST(GluPlan, BackwardInPlaceAndOverlaps) {
  for (const char* op : {"swiglu_bwd", "geglu_bwd"}) {
    std::vector<TensorView> b = Bwd(16, 4096);
    b[3] = b[1];  // dA is A
    b[4] = b[2];  // dB is B
    auto p = Plan(op, b);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->launches[0].kernel, "glu_bwd_v");
    const LigerdGluParams q = Params(*p);
    EXPECT_EQ(q.out0, q.a);
    EXPECT_EQ(q.out1, q.b);
    EXPECT_EQ(q.dc, Addr(0));
  }
  { auto b = Bwd(16, 4096); b[3] = b[2];  // dA over B is not allowed
    ExpectInvalid(Plan("swiglu_bwd", b), "swiglu_bwd: output 'dA' overlaps tensor 'B' (it may only be exactly 'A')"); }
  { auto b = Bwd(16, 4096); b[3].data = Addr(1) + 64;  // dA partly over A
    ExpectInvalid(Plan("geglu_bwd", b), "geglu_bwd: output 'dA' overlaps tensor 'A'"); }
  { auto b = Bwd(16, 4096); b[4] = b[0];  // dB over dC
    ExpectInvalid(Plan("swiglu_bwd", b), "output 'dB' overlaps tensor 'dC'"); }
}

TEST(GluPlan, ArgumentErrorsNameTheOpAndTensor) {
  { auto t = Fwd(4, 64); t[1].sizes[1] = 63;
    ExpectInvalid(Plan("swiglu_fwd", t), "swiglu_fwd: tensor 'B' has shape [4, 63], expected [4, 64] (shape of A)"); }
  { auto t = Fwd(4, 64); t[2].dtype = DType::kFloat16;
    ExpectInvalid(Plan("geglu_fwd", t), "geglu_fwd: tensor 'C' has dtype float16, expected bfloat16 (dtype of A)"); }
  { auto t = Fwd(4, 64); t[0].dtype = DType::kInt32;
    ExpectInvalid(Plan("swiglu_fwd", t), "swiglu_fwd: tensor 'A' has dtype int32"); }
  { auto t = Fwd(4, 64); t[0].strides[1] = 2; t[0].strides[0] = 128;
    ExpectInvalid(Plan("swiglu_fwd", t), "swiglu_fwd: tensor 'A' must have a contiguous last dim"); }
  { auto t = Fwd(4, 64); t[2].strides[0] = 32;
    ExpectInvalid(Plan("swiglu_fwd", t), "swiglu_fwd: output 'C' has overlapping rows"); }
  { auto b = Bwd(4, 64); b[0].sizes[0] = 5;
    ExpectInvalid(Plan("geglu_bwd", b), "geglu_bwd: tensor 'dC' has shape [5, 64], expected [4, 64]"); }
  { auto b = Bwd(4, 64); b.pop_back();
    ExpectInvalid(Plan("swiglu_bwd", b), "swiglu_bwd: expected 5 tensors (dC, A, B, dA, dB), got 4"); }
}

TEST(GluPlan, EmptyAndTinyShapesAndTunedConfigs) {
  auto e = Plan("swiglu_fwd", Fwd(0, 64));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->launches.empty());
  auto one = Plan("geglu_bwd", Bwd(1, 1, DType::kFloat16));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->launches[0].kernel, "glu_bwd_s");
  EXPECT_EQ(one->launches[0].grid[0], 1u);
  EXPECT_EQ(one->variant.tag, "xf16");
  LaunchConfig tuned = GluDefaultConfig(true);
  tuned.threads_per_row = 512;
  tuned.grid = 100;
  std::vector<TensorView> t = Fwd(4096, 4096);
  OpCall c;
  c.tensors = t;
  c.tuned = &tuned;
  auto p = PlanOp("swiglu_fwd", c, FakeDevice());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 512u);
  EXPECT_EQ(p->launches[0].grid[0], 100u);
  tuned.threads_per_row = 100;
  ExpectInvalid(PlanOp("swiglu_fwd", c, FakeDevice()), "swiglu_fwd: tuned config: block of 100");
}

}  // namespace
}  // namespace ligerd::kernels
