// Argument checking and planning happen before any CUDA call, so they are tested here with fake
// device pointers and a fake device; Executor::Create is tested for the no-driver case.
#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/cuda_driver.h"
#include "kernels/executor.h"
#include "kernels/ops/rms_norm_params.h"
#include "kernels/ops/rowwise_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Addr;
using testing::FakeDevice;
using testing::Tensor;

struct Fwd {
  std::vector<TensorView> t;
  std::vector<double> s = {1e-6, 0.0, 0.0};
  Fwd(int64_t rows = 6, int64_t n = 4096, DType dt = DType::kBFloat16) {
    t = {Tensor(Addr(0), dt, {2, rows / 2, n}), Tensor(Addr(1), dt, {n}),
         Tensor(Addr(2), dt, {2, rows / 2, n}), Tensor(Addr(3), DType::kFloat32, {rows})};
  }
  absl::StatusOr<OpPlan> Plan() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    return PlanOp("rms_norm_fwd", c, FakeDevice());
  }
};

struct Bwd {
  std::vector<TensorView> t;
  std::vector<double> s = {0.0, 0.0};
  void* ws = Addr(10);
  size_t ws_bytes = size_t{1} << 30;
  explicit Bwd(int64_t rows = 6, int64_t n = 4096, DType dt = DType::kBFloat16) {
    t = {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}), Tensor(Addr(2), dt, {n}),
         Tensor(Addr(3), DType::kFloat32, {rows}), Tensor(Addr(4), dt, {rows, n}),
         Tensor(Addr(5), dt, {n})};
  }
  absl::StatusOr<OpPlan> Plan() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    c.workspace = ws;
    c.workspace_bytes = ws_bytes;
    return PlanOp("rms_norm_bwd", c, FakeDevice());
  }
};

using testing::ExpectInvalid;

TEST(PlanForward, ValidCallPlansOneLaunchWithTheRightParams) {
  Fwd f;
  auto plan = f.Plan();
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->variant.tag, "xbf16.wbf16.llama");
  ASSERT_EQ(plan->launches.size(), 1u);
  const KernelLaunch& k = plan->launches[0];
  EXPECT_EQ(k.kernel, "rms_norm_fwd_i2_v");
  EXPECT_EQ(k.block[0] * k.block[1] * k.grid[0] >= 6 * 128u, true);
  ASSERT_EQ(k.params.size(), sizeof(LigerdRmsNormFwdParams));
  LigerdRmsNormFwdParams p;
  std::memcpy(&p, k.params.data(), sizeof(p));
  EXPECT_EQ(p.x, Addr(0));
  EXPECT_EQ(p.w, Addr(1));
  EXPECT_EQ(p.y, Addr(2));
  EXPECT_EQ(p.rstd, Addr(3));
  EXPECT_EQ(p.rows, 6);
  EXPECT_EQ(p.n, 4096);
  EXPECT_EQ(p.x_stride, 4096);
  EXPECT_FLOAT_EQ(p.eps, 1e-6f);
  EXPECT_EQ(plan->workspace_bytes, 0u);
}

TEST(PlanForward, CastingModesWeightDtypesAndNoWeight) {
  Fwd f;
  f.s[2] = 1;
  EXPECT_EQ(f.Plan()->variant.tag, "xbf16.wbf16.gemma");
  f.s[2] = 2;
  EXPECT_EQ(f.Plan()->variant.tag, "xbf16.wbf16.none");
  f.t[1].dtype = DType::kFloat32;  // fp32 weight under autocast
  EXPECT_EQ(f.Plan()->variant.tag, "xbf16.wf32.none");
  f.t[1].data = nullptr;  // elementwise_affine=False
  EXPECT_EQ(f.Plan()->variant.tag, "xbf16.wnone.none");
  Fwd g(4, 1000, DType::kFloat32);
  g.s[2] = 0;
  EXPECT_EQ(g.Plan()->variant.tag, "xf32.wf32.gemma") << "fp32 modes share one variant";
}

TEST(PlanForward, ArgumentErrorsNameTheOpAndTensor) {
  { Fwd f; f.t[1].sizes[0] = 4095;
    ExpectInvalid(f.Plan(), "rms_norm_fwd: tensor 'W' has 4095 elements, expected 4096 (hidden size of X)"); }
  { Fwd f; f.t[0].dtype = DType::kInt32;
    ExpectInvalid(f.Plan(), "rms_norm_fwd: tensor 'X' has dtype int32, expected one of float32, bfloat16, float16"); }
  { Fwd f; f.t[1].dtype = DType::kFloat16;
    ExpectInvalid(f.Plan(), "tensor 'W' has dtype float16, expected bfloat16 (dtype of X) or float32"); }
  { Fwd f; f.t[2].dtype = DType::kFloat32; ExpectInvalid(f.Plan(), "tensor 'Y' has dtype float32, expected bfloat16"); }
  { Fwd f; f.t[2].sizes[2] = 4000; ExpectInvalid(f.Plan(), "tensor 'Y' has shape [2, 3, 4000], expected [2, 3, 4096] (shape of X)"); }
  { Fwd f; f.t[3].sizes[0] = 5; ExpectInvalid(f.Plan(), "tensor 'RSTD' has 5 elements, expected 6 (one per row of X)"); }
  { Fwd f; f.t[3].dtype = DType::kBFloat16; ExpectInvalid(f.Plan(), "tensor 'RSTD' has dtype bfloat16, expected one of float32"); }
  { Fwd f; f.t[0].ndim = 5; ExpectInvalid(f.Plan(), "tensor 'X' has 5 dims, expected 1 to 4"); }
  { Fwd f; f.t[0].ndim = 0; ExpectInvalid(f.Plan(), "tensor 'X' has 0 dims"); }
  { Fwd f; f.t[0].strides[0] = -4096; ExpectInvalid(f.Plan(), "tensor 'X' has negative stride -4096 in dim 0"); }
  { Fwd f; f.t[0].sizes[1] = -1; ExpectInvalid(f.Plan(), "tensor 'X' has size -1 in dim 1"); }
  { Fwd f; f.t[2].device = 1; ExpectInvalid(f.Plan(), "tensor 'Y' is on device 1, this executor runs on device 0"); }
  { Fwd f; f.t[0].data = nullptr; ExpectInvalid(f.Plan(), "tensor 'X' is required but was not given"); }
  { Fwd f; f.t[0].strides[2] = 2; f.t[0].strides[1] = 8192; f.t[0].strides[0] = 3 * 8192;
    ExpectInvalid(f.Plan(), "tensor 'X' must have a contiguous last dim"); }
  { Fwd f; f.t[0].strides[1] = 8192;  // rows of dim 1 strided, dim 0 not continuing them
    ExpectInvalid(f.Plan(), "do not flatten into rows with one stride"); }
  { Fwd f; f.t[0].sizes[0] = int64_t{1} << 40; f.t[0].sizes[1] = int64_t{1} << 20;
    f.t[0].strides[1] = 4096; f.t[0].strides[0] = int64_t{1} << 32;
    ExpectInvalid(f.Plan(), "is too large (overflow)"); }
  { Fwd f; f.t[2].data = static_cast<char*>(Addr(0)) + 4096;  // Y overlaps X
    ExpectInvalid(f.Plan(), "output 'Y' overlaps tensor 'X'"); }
  { Fwd f; f.s[2] = 3; ExpectInvalid(f.Plan(), "scalar 'casting_mode' is 3"); }
  { Fwd f; f.s[0] = std::nan(""); ExpectInvalid(f.Plan(), "scalar 'eps' is nan"); }
  { Fwd f; f.s.pop_back(); ExpectInvalid(f.Plan(), "expected 3 scalars (eps, offset, casting_mode), got 2"); }
  { Fwd f; f.t.pop_back(); ExpectInvalid(f.Plan(), "expected 4 tensors (X, W, Y, RSTD), got 3"); }
  { Fwd f(4, 0); f.t[1].sizes[0] = 0; ExpectInvalid(f.Plan(), "hidden size 0"); }
  { Fwd f; f.t[0].data = static_cast<char*>(Addr(0)) + 1; ExpectInvalid(f.Plan(), "not aligned to its element size"); }

  OpCall c;
  auto unknown = PlanOp("no_such_op", c, FakeDevice());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST(PlanForward, StridedRowsOddSizesAndMisalignmentPickTheRightKernel) {
  // Rows with a padded stride (a slice of a wider buffer) are read in place.
  Fwd f(6, 4096);
  f.t[0] = Tensor(Addr(0), DType::kBFloat16, {6, 4096}, {5000, 1});
  f.t[2] = Tensor(Addr(2), DType::kBFloat16, {6, 4096});
  auto p = f.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  LigerdRmsNormFwdParams params;
  std::memcpy(&params, p->launches[0].params.data(), sizeof(params));
  EXPECT_EQ(params.x_stride, 5000);
  EXPECT_EQ(p->launches[0].kernel.back(), 'v') << "5000 % 8 == 0 keeps 16-byte vectors";
  f.t[0].strides[0] = 4097;
  EXPECT_EQ(f.Plan()->launches[0].kernel.back(), 's') << "odd row stride: element accesses";
  // Hidden size not a multiple of 8 (the (2, 37, 8191)).
  Fwd g(74, 8191);
  g.t[0] = Tensor(Addr(0), DType::kBFloat16, {2, 37, 8191});
  g.t[2] = Tensor(Addr(2), DType::kBFloat16, {2, 37, 8191});
  g.t[1].sizes[0] = 8191;
  auto q = g.Plan();
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->launches[0].kernel.back(), 's');
  // A single row of one element.
  Fwd one(1, 1);
  one.t[0] = Tensor(Addr(0), DType::kFloat16, {1, 1});
  one.t[1] = Tensor(Addr(1), DType::kFloat16, {1});
  one.t[2] = Tensor(Addr(2), DType::kFloat16, {1, 1});
  one.t[3] = Tensor(Addr(3), DType::kFloat32, {1});
  auto r = one.Plan();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->launches[0].block[0] * r->launches[0].block[1] % 32, 0u);
  // No rows: nothing to launch.
  Fwd empty(0, 4096);
  auto e = empty.Plan();
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->launches.empty());
}

TEST(PlanBackward, ValidCallWithWorkspaceAndReduction) {
  Bwd b(16384, 4096);
  auto plan = b.Plan();
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->launches.size(), 2u);
  EXPECT_EQ(plan->launches[0].kernel, "rms_norm_bwd_i2_v");
  EXPECT_EQ(plan->launches[1].kernel, "rms_norm_bwd_dw_reduce");
  const unsigned grid = plan->launches[0].grid[0];
  EXPECT_EQ(grid, 132u * 2u) << "persistent: SMs x blocks per SM";
  EXPECT_EQ(plan->workspace_bytes, size_t{grid} * 4096 * 4);
  LigerdRowReduceParams r;
  std::memcpy(&r, plan->launches[1].params.data(), sizeof(r));
  EXPECT_EQ(r.num_partials, static_cast<int>(grid));
  EXPECT_EQ(r.partial, Addr(10));
  EXPECT_EQ(r.out[0], Addr(5));
}

TEST(PlanBackward, InPlaceAndOptionalGradients) {
  { Bwd b; b.t[4] = b.t[0];  // dX is dY: Liger's in_place=True
    EXPECT_TRUE(b.Plan().ok()) << b.Plan().status(); }
  { Bwd b; b.t[4].data = static_cast<char*>(Addr(0)) + 2 * 4096;  // dX partly overlaps dY
    ExpectInvalid(b.Plan(), "output 'dX' overlaps tensor 'dY' (it may only be exactly 'dY')"); }
  { Bwd b; b.t[4].data = Addr(1);  // dX over X is never allowed
    ExpectInvalid(b.Plan(), "output 'dX' overlaps tensor 'X'"); }
  { Bwd b; b.t[5].data = nullptr;  // frozen weight: no dW, no workspace
    auto p = b.Plan();
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->launches.size(), 1u);
    EXPECT_EQ(p->workspace_bytes, 0u); }
  { Bwd b; b.t[2].data = nullptr; ExpectInvalid(b.Plan(), "tensor 'dW' given without 'W'"); }
  { Bwd b; b.t[5].dtype = DType::kFloat32; ExpectInvalid(b.Plan(), "tensor 'dW' has dtype float32, expected bfloat16 (dtype of W)"); }
  { Bwd b; b.ws_bytes = 100; ExpectInvalid(b.Plan(), "bytes of workspace, got 100"); }
  { Bwd b; b.ws = static_cast<char*>(Addr(10)) + 4; ExpectInvalid(b.Plan(), "workspace must be 16-byte aligned"); }
  { Bwd b; b.t[0].sizes[1] = 4095; ExpectInvalid(b.Plan(), "tensor 'dY' has shape [6, 4095], expected [6, 4096] (shape of X)"); }
  { Bwd b(0, 4096);  // no rows: dW is still written (zeros) by the reduction
    auto p = b.Plan();
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->launches.size(), 1u);
    EXPECT_EQ(p->launches[0].kernel, "rms_norm_bwd_dw_reduce"); }
}

TEST(Executor, CreateFailsCleanlyWithoutADriver) {
  // Force the no-driver path even on a GPU machine (effective if nothing loaded it earlier in
  // this process; ctest runs each test in its own process).
  ::setenv("LIGERD_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
  testing::TempDir dir;
  auto ex = Executor::Create({dir.path(), 0});
  if (ex.ok()) GTEST_SKIP() << "a CUDA driver was already loaded in this process";
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kFailedPrecondition) << ex.status();
  EXPECT_NE(ex.status().message().find("no CUDA driver"), absl::string_view::npos) << ex.status();
}

TEST(Executor, CreateWithTheMachinesDriver) {
  ::unsetenv("LIGERD_CUDA_DRIVER");
  testing::TempDir dir;
  auto drv = Driver();
  if (drv.ok()) GTEST_SKIP() << "a CUDA driver is present; GPU tests cover this machine";
  auto ex = Executor::Create({dir.path(), 0});
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kFailedPrecondition) << ex.status();
}

}  // namespace
}  // namespace ligerd::kernels
