// RoPE argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/rope.h"
#include "kernels/ops/rope_params.h"
#include "kernels/validate.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;

absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t,
                            const LaunchConfig* tuned = nullptr) {
  OpCall c;
  c.tensors = t;
  c.tuned = tuned;
  return PlanOp(op, c, testing::FakeDevice());
}

LigerdRopeParams Params(const OpPlan& p) { return testing::LaunchParams<LigerdRopeParams>(p); }

using testing::ExpectInvalid;

// HF layout: q, k are [B, H, S, D] views (transpose(1, 2)) of contiguous [B, S, H, D] storage.
TensorView HfView(char* data, DType dt, int64_t b, int64_t h, int64_t s, int64_t d) {
  return Tensor(data, dt, {b, h, s, d}, {s * h * d, d, h * d, 1});
}

struct Shape {
  int64_t b = 4, hq = 32, hk = 8, s = 4096, d = 128, cb = 4;
};

// In place (outputs are the inputs), HF layout, cos/sin [cb, S, D] contiguous.
std::vector<TensorView> Call(const Shape& sh = {}, DType dt = DType::kBFloat16, DType cs = DType::kBFloat16) {
  TensorView q = HfView(Addr(0), dt, sh.b, sh.hq, sh.s, sh.d);
  TensorView k = HfView(Addr(1), dt, sh.b, sh.hk, sh.s, sh.d);
  return {q, k, Tensor(Addr(2), cs, {sh.cb, sh.s, sh.d}), Tensor(Addr(3), cs, {sh.cb, sh.s, sh.d}), q, k};
}

TEST(RopePlan, Llama3InPlaceHfLayoutIsOneVectorLaunch) {
  for (const char* op : {"rope_fwd", "rope_bwd"}) {
    auto p = Plan(op, Call());
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->launches.size(), 1u);
    EXPECT_EQ(p->launches[0].kernel, "rope_v");
    EXPECT_EQ(p->launches[0].block[0], 256u);
    EXPECT_EQ(p->variant.tag, "xbf16.csbf16");
    const LigerdRopeParams q = Params(*p);
    EXPECT_EQ(q.x[0], Addr(0));
    EXPECT_EQ(q.y[0], Addr(0)) << "in place";
    EXPECT_EQ(q.x[1], Addr(1));
    EXPECT_EQ(q.y[1], Addr(1));
    EXPECT_EQ(q.cos, Addr(2));
    EXPECT_EQ(q.sin, Addr(3));
    EXPECT_EQ(q.heads[0], 32);
    EXPECT_EQ(q.heads[1], 8);
    EXPECT_EQ(q.half, 64);
    EXPECT_EQ(q.lanes, 8) << "64 bf16 per half = 8 vectors of 8";
    EXPECT_EQ(q.heads_per_thread, 4);
    EXPECT_EQ(q.groups, 10) << "40 heads of q and k, 4 per thread";
    EXPECT_EQ(q.items, int64_t{4} * 4096 * 10 * 8);
    EXPECT_EQ(p->launches[0].grid[0], static_cast<unsigned>(q.items / 256));
    // Strides straight from the transposed views: no copy.
    EXPECT_EQ(q.x_stride[0][0], 4096 * 32 * 128);
    EXPECT_EQ(q.x_stride[0][1], 128);
    EXPECT_EQ(q.x_stride[0][2], 32 * 128);
    EXPECT_EQ(q.x_stride[1][2], 8 * 128);
    EXPECT_EQ(q.cos_stride[0], 4096 * 128);
    EXPECT_EQ(q.cos_stride[1], 128);
  }
  // Forward and backward are different modules (the rotation's sign).
  EXPECT_NE(Plan("rope_fwd", Call())->variant.defines, Plan("rope_bwd", Call())->variant.defines);
}

TEST(RopePlan, CosBatchOneContiguousLayoutOutOfPlaceAndFp32Cos) {
  Shape sh;
  sh.b = 3, sh.hq = 5, sh.hk = 1, sh.s = 7, sh.d = 96, sh.cb = 1;
  std::vector<TensorView> t = Call(sh, DType::kFloat16, DType::kFloat32);
  // Fully contiguous [B, H, S, D] inputs, fresh contiguous outputs.
  t[0] = Tensor(Addr(0), DType::kFloat16, {3, 5, 7, 96});
  t[1] = Tensor(Addr(1), DType::kFloat16, {3, 1, 7, 96});
  t[4] = Tensor(Addr(4), DType::kFloat16, {3, 5, 7, 96});
  t[5] = Tensor(Addr(5), DType::kFloat16, {3, 1, 7, 96});
  auto p = Plan("rope_fwd", t);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->variant.tag, "xf16.csf32");
  EXPECT_EQ(p->launches[0].kernel, "rope_v");
  const LigerdRopeParams q = Params(*p);
  EXPECT_EQ(q.cos_stride[0], 0) << "cos of batch 1 serves every batch";
  EXPECT_EQ(q.sin_stride[0], 0);
  EXPECT_EQ(q.lanes, 6) << "48 fp16 per half = 6 vectors";
  EXPECT_EQ(q.groups, 2) << "6 heads, 4 per thread";
  EXPECT_EQ(q.y[0], Addr(4));
  EXPECT_EQ(q.x_stride[0][1], 7 * 96);
  EXPECT_EQ(q.y_stride[1][0], 7 * 96);
  EXPECT_EQ(q.items, 3 * 7 * 2 * 6);
  EXPECT_EQ(p->launches[0].grid[0], 1u);
}

TEST(RopePlan, ScalarPathForOddHalvesAndMisalignment) {
  Shape sh;
  sh.b = 1, sh.hq = 2, sh.hk = 2, sh.s = 3, sh.d = 6, sh.cb = 1;
  auto p = Plan("rope_fwd", Call(sh));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "rope_s") << "half of 3 is not a vector of 8";
  EXPECT_EQ(Params(*p).lanes, 3);
  std::vector<TensorView> t = Call();
  t[2].data = Addr(2) + 2;  // cos not 16-byte aligned
  EXPECT_EQ(Plan("rope_fwd", t)->launches[0].kernel, "rope_s");
  Shape s1;
  s1.b = 1, s1.hq = 1, s1.hk = 1, s1.s = 1, s1.d = 128, s1.cb = 1;
  auto one = Plan("rope_bwd", Call(s1, DType::kFloat32, DType::kFloat32));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->launches[0].kernel, "rope_v");
  EXPECT_EQ(Params(*one).lanes, 16) << "64 fp32 per half = 16 vectors of 4";
  EXPECT_EQ(Params(*one).groups, 1);
  // A head stride that is not whole vectors (heads packed at an odd pitch): element accesses.
  std::vector<TensorView> odd = Call();
  odd[0].strides[1] = 130;
  odd[0].strides[2] = 32 * 130;
  odd[0].strides[0] = 4096 * 32 * 130;
  odd[4] = odd[0];
  EXPECT_EQ(Plan("rope_fwd", odd)->launches[0].kernel, "rope_s");
}

TEST(RopePlan, EmptyAndZeroHeadShapes) {
  Shape sh;
  sh.s = 0;
  auto e = Plan("rope_fwd", Call(sh));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->launches.empty());
  // K with no heads (a missing gradient): only q's heads are rotated.
  Shape nk;
  nk.hk = 0;
  auto p = Plan("rope_bwd", Call(nk));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params(*p).groups, 8);
  EXPECT_EQ(Params(*p).heads[1], 0);
}

TEST(RopePlan, OverlapsAndInPlaceRules) {
  {  // Q_out over K: refused.
    auto t = Call();
    t[4] = t[1];
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: output 'Q_out' overlaps tensor 'K' (it may only be exactly 'Q')");
  }
  {  // Q_out partly over Q (shifted by one head): refused, it may only be exactly Q.
    auto t = Call();
    t[4].data = Addr(0) + 256;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: output 'Q_out' overlaps tensor 'Q' (it may only be exactly 'Q')");
  }
  {  // dK_out over COS.
    Shape sh;
    sh.hk = 1, sh.b = 1, sh.cb = 1;
    auto t = Call(sh);
    t[5] = Tensor(Addr(2), DType::kBFloat16, {1, 1, 4096, 128});
    ExpectInvalid(Plan("rope_bwd", t), "rope_bwd: output 'dK_out' overlaps tensor 'COS'");
  }
  {  // An expanded (stride 0 over heads) output.
    auto t = Call();
    t[4] = Tensor(Addr(4), DType::kBFloat16, {4, 32, 4096, 128}, {4096 * 128, 0, 128, 1});
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: output 'Q_out' of shape [4, 32, 4096, 128] has elements sharing memory");
  }
  {  // ... but an expanded input is fine (read only), e.g. a broadcast gradient.
    auto t = Call();
    t[0] = Tensor(Addr(0), DType::kBFloat16, {4, 32, 4096, 128}, {0, 0, 0, 1});
    t[4] = Tensor(Addr(4), DType::kBFloat16, {4, 32, 4096, 128});
    EXPECT_TRUE(Plan("rope_bwd", t).ok());
  }
}

TEST(RopePlan, ArgumentErrorsNameTheOpAndTensor) {
  { auto t = Call(); t[0] = Tensor(Addr(0), DType::kBFloat16, {4 * 32, 4096, 128}); t[4] = t[0];
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'Q' has shape [128, 4096, 128], expected 4 dims"); }
  { auto t = Call(); t[1].sizes[2] = 4095; t[5] = t[1];
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'K' has shape [4, 8, 4095, 128], expected [4, n_kv_head, 4096, 128]"); }
  { auto t = Call(); t[1].dtype = DType::kFloat16; t[5] = t[1];
    ExpectInvalid(Plan("rope_bwd", t), "rope_bwd: tensor 'dK' has dtype float16, expected bfloat16 (dtype of dQ)"); }
  { auto t = Call(); t[4] = Tensor(Addr(4), DType::kBFloat16, {4, 32, 4096, 127});
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'Q_out' has shape [4, 32, 4096, 127], expected [4, 32, 4096, 128] (shape of Q)"); }
  { Shape sh; sh.d = 127;
    ExpectInvalid(Plan("rope_fwd", Call(sh)), "rope_fwd: head_dim 127 of 'Q' must be even"); }
  { auto t = Call(); t[2].sizes[0] = 2;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'COS' has shape [2, 4096, 128], expected [1 or 4, 4096, 128]"); }
  { auto t = Call(); t[2] = Tensor(Addr(2), DType::kBFloat16, {4096, 128});
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'COS' has shape [4096, 128]"); }
  { auto t = Call(); t[3].sizes[0] = 1;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'SIN' has shape [1, 4096, 128], expected [4, 4096, 128] (shape of COS)"); }
  { auto t = Call(Shape{}, DType::kBFloat16, DType::kFloat16);
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'COS' has dtype float16, expected bfloat16 (dtype of Q) or float32"); }
  { auto t = Call(); t[3].dtype = DType::kFloat32;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'SIN' has dtype float32, expected bfloat16 (dtype of COS)"); }
  { auto t = Call(); t[0].strides[3] = 2; t[0].strides[1] = 256; t[4] = Tensor(Addr(4), DType::kBFloat16, {4, 32, 4096, 128});
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'Q' must have a contiguous last dim"); }
  { auto t = Call(); t[2].strides[2] = 2; t[2].strides[1] = 256; t[2].strides[0] = 4096 * 256;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'COS' must have a contiguous last dim"); }
  { auto t = Call(); t[0].strides[2] = -128; t[4] = Tensor(Addr(4), DType::kBFloat16, {4, 32, 4096, 128});
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'Q' has negative stride"); }
  { auto t = Call(); t[0].dtype = DType::kInt32; t[4].dtype = DType::kInt32;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'Q' has dtype int32"); }
  { auto t = Call(); t.pop_back();
    ExpectInvalid(Plan("rope_bwd", t), "rope_bwd: expected 6 tensors (dQ, dK, COS, SIN, dQ_out, dK_out), got 5"); }
  { auto t = Call(); t[2].data = nullptr;
    ExpectInvalid(Plan("rope_fwd", t), "rope_fwd: tensor 'COS' is required but was not given"); }
}

TEST(RopePlan, TunedConfigs) {
  LaunchConfig tuned = RopeDefaultConfig(true);
  tuned.threads_per_row = 512;
  tuned.iters = 40;
  auto p = Plan("rope_fwd", Call(), &tuned);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 512u);
  EXPECT_EQ(Params(*p).groups, 1) << "all 40 heads in one thread";
  tuned.iters = 1000;
  EXPECT_EQ(Params(*Plan("rope_fwd", Call(), &tuned)).heads_per_thread, 40) << "clamped to the heads";
  tuned.iters = 0;
  ExpectInvalid(Plan("rope_fwd", Call(), &tuned), "rope_fwd: tuned config: heads per thread");
  tuned = RopeDefaultConfig(true);
  tuned.threads_per_row = 100;
  ExpectInvalid(Plan("rope_fwd", Call(), &tuned), "rope_fwd: tuned config: block of 100");
  tuned = RopeDefaultConfig(true);
  tuned.grid = 7;
  ExpectInvalid(Plan("rope_fwd", Call(), &tuned), "rope_fwd: tuned config: grid must be 0");
  Shape sh;
  sh.d = 6;
  tuned = RopeDefaultConfig(true);
  ExpectInvalid(Plan("rope_fwd", Call(sh), &tuned), "rope_fwd: tuned config: vectorized access needs");
}

TEST(RopePlan, NoInternalOverlap) {
  EXPECT_TRUE(NoInternalOverlap(HfView(Addr(0), DType::kBFloat16, 4, 32, 4096, 128)));
  EXPECT_TRUE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {2, 3, 4, 8})));
  EXPECT_FALSE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {2, 3}, {0, 1})));
  EXPECT_FALSE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {2, 3}, {2, 1})));
  EXPECT_TRUE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {2, 3}, {3, 1})));
  EXPECT_TRUE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {1, 3}, {0, 1})));
  EXPECT_TRUE(NoInternalOverlap(Tensor(Addr(0), DType::kBFloat16, {0, 3}, {0, 0})));
}

}  // namespace
}  // namespace ligerd::kernels
