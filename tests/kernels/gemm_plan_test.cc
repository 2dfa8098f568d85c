// gemm argument checking and planning (no CUDA): how a row-major torch GEMM maps onto cuBLASLt's
// column-major parameters, every refusal, and that the plan cache patches its addresses.
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/blas/gemm_params.h"
#include "kernels/blas/lt_gemm.h"
#include "kernels/catalogue.h"
#include "kernels/plan_cache.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Addr;
using testing::Tensor;

constexpr DType kBf16 = DType::kBFloat16;
constexpr size_t kWs = GemmWorkspaceBytes(90);

DeviceInfo Hopper() {
  DeviceInfo d = testing::FakeDevice();
  d.compute_capability = 90;
  return d;
}

struct Call {
  std::vector<TensorView> t;
  std::vector<double> s = {1.0, 0.0};
  void* ws = Addr(9);
  size_t ws_bytes = kWs;
  OpCall op() const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    c.workspace = ws;
    c.workspace_bytes = ws_bytes;
    return c;
  }
};

// D[M, N] = A[M, K] @ B[K, N], all row-major.
Call RowMajor(int64_t M, int64_t K, int64_t N, DType ab = kBf16, DType d = kBf16) {
  return {{Tensor(Addr(0), ab, {M, K}), Tensor(Addr(1), ab, {K, N}), TensorView{}, Tensor(Addr(3), d, {M, N}),
           TensorView{}}};
}

GemmParams Params(const OpPlan& p) {
  GemmParams q;
  EXPECT_EQ(p.launches.size(), 1u);
  EXPECT_EQ(p.launches.at(0).kernel, kGemmLaunchName);
  EXPECT_EQ(p.launches[0].params.size(), sizeof(q));
  std::memcpy(&q, p.launches[0].params.data(), sizeof(q));
  return q;
}

void ExpectInvalid(const Call& c, const std::string& fragment) {
  auto p = PlanOp("gemm", c.op(), Hopper());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(p.status().message().find(fragment), absl::string_view::npos)
      << "message: " << p.status().message() << "\nexpected to contain: " << fragment;
  EXPECT_EQ(p.status().message().rfind("gemm: ", 0), 0u) << "names the op first";
}

TEST(GemmPlan, RowMajorIsColumnMajorWithOperandsSwapped) {
  // logits[C, V] = x[C, H] @ W^T: W^T is the transposed view of a row-major [V, H] weight.
  const int64_t C = 512, H = 4096, V = 128256;
  Call c = RowMajor(C, H, V);
  c.t[1] = Tensor(Addr(1), kBf16, {H, V}, {1, H});  // W.t()
  auto p = PlanOp("gemm", c.op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->workspace_bytes, kWs);
  const GemmParams q = Params(*p);
  // D'[V, C] = (W^T)'[V, H] @ x'[H, C]; W^T seen column-major is W stored [H, V]: transposed.
  EXPECT_EQ(q.a, Addr(1));
  EXPECT_EQ(q.b, Addr(0));
  EXPECT_EQ(q.d, Addr(3));
  EXPECT_EQ(q.c, nullptr);
  EXPECT_EQ(q.m, V);
  EXPECT_EQ(q.n, C);
  EXPECT_EQ(q.k, H);
  EXPECT_EQ(q.trans_a, 1);
  EXPECT_EQ(q.lda, H);
  EXPECT_EQ(q.trans_b, 0);
  EXPECT_EQ(q.ldb, H);
  EXPECT_EQ(q.ldd, V);
  EXPECT_EQ(q.alpha, 1.0f);
  EXPECT_EQ(q.beta, 0.0f);
  EXPECT_EQ(q.workspace, Addr(9));
  EXPECT_EQ(q.workspace_bytes, kWs);
  // A larger buffer (ligerd's session scratch grows to its largest op) does not change the plan.
  c.ws_bytes = 3 * kWs;
  EXPECT_EQ(Params(*PlanOp("gemm", c.op(), Hopper())).workspace_bytes, kWs);
  EXPECT_EQ(q.ab_type, static_cast<uint8_t>(kBf16));
}

TEST(GemmPlan, AccumulatesInPlaceThroughATransposedView) {
  // dW[V, H] += dlogits^T[V, C] @ x[C, H] in fp32: C is D itself, beta 1.
  const int64_t C = 640, H = 4096, V = 32000;
  Call c{{Tensor(Addr(0), kBf16, {V, C}, {1, V}), Tensor(Addr(1), kBf16, {C, H}), TensorView{},
          Tensor(Addr(3), DType::kFloat32, {V, H}), TensorView{}},
         {1.0, 1.0}};
  c.t[2] = c.t[3];
  auto p = PlanOp("gemm", c.op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  const GemmParams q = Params(*p);
  EXPECT_EQ(q.m, H);
  EXPECT_EQ(q.n, V);
  EXPECT_EQ(q.k, C);
  EXPECT_EQ(q.trans_a, 0);  // x row-major [C, H] is column-major [H, C]
  EXPECT_EQ(q.lda, H);
  EXPECT_EQ(q.trans_b, 1);  // dlogits^T is dlogits [C, V] row-major = column-major [V, C], transposed
  EXPECT_EQ(q.ldb, V);
  EXPECT_EQ(q.c, Addr(3));
  EXPECT_EQ(q.ldc, H);
  EXPECT_EQ(q.beta, 1.0f);
  EXPECT_EQ(q.cd_type, static_cast<uint8_t>(DType::kFloat32));
}

TEST(GemmPlan, PaddedRowsAndBias) {
  Call c = RowMajor(3, 5, 7);
  c.t[0] = Tensor(Addr(0), kBf16, {3, 5}, {8, 1});  // rows of A padded to 8
  c.t[3] = Tensor(Addr(3), kBf16, {3, 7}, {16, 1});
  c.t[4] = Tensor(Addr(4), kBf16, {7});
  auto p = PlanOp("gemm", c.op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  const GemmParams q = Params(*p);
  EXPECT_EQ(q.ldb, 8);
  EXPECT_EQ(q.ldd, 16);
  EXPECT_EQ(q.bias, Addr(4));
}

TEST(GemmPlan, OneRowAndOneColumnIgnoreTheirStrides) {
  Call c = RowMajor(1, 4, 1);
  c.t[0] = Tensor(Addr(0), kBf16, {1, 4}, {0, 1});
  c.t[1] = Tensor(Addr(1), kBf16, {4, 1}, {1, 0});
  c.t[3] = Tensor(Addr(3), kBf16, {1, 1}, {0, 0});
  auto p = PlanOp("gemm", c.op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  const GemmParams q = Params(*p);
  EXPECT_GE(q.lda, q.trans_a ? q.k : q.m);
  EXPECT_GE(q.ldb, q.trans_b ? q.n : q.k);
  EXPECT_GE(q.ldd, q.m);
}

TEST(GemmPlan, EmptyOutputLaunchesNothing) {
  auto p = PlanOp("gemm", RowMajor(0, 8, 8).op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->launches.empty());
}

TEST(GemmPlan, Refusals) {
  ExpectInvalid(RowMajor(4, 0, 4), "K (A's dim 1) is 0");
  Call c = RowMajor(4, 8, 4);
  c.t[1] = Tensor(Addr(1), kBf16, {7, 4});
  ExpectInvalid(c, "do not multiply");
  c = RowMajor(4, 8, 4);
  c.t[3] = Tensor(Addr(3), kBf16, {4, 5});
  ExpectInvalid(c, "D has shape");
  c = RowMajor(4, 8, 4);
  c.t[1] = Tensor(Addr(1), DType::kFloat16, {8, 4});
  ExpectInvalid(c, "A is bfloat16 but B is float16");
  ExpectInvalid(RowMajor(4, 8, 4, kBf16, DType::kFloat16), "it must be A's dtype");
  c = RowMajor(4, 8, 4);
  c.s = {1.0, 1.0};
  ExpectInvalid(c, "beta is non-zero but no C");
  c = RowMajor(4, 8, 4);
  c.s = {std::nan(""), 0.0};
  ExpectInvalid(c, "must be finite");
  c = RowMajor(4, 8, 4);
  c.t[0] = Tensor(Addr(0), kBf16, {4, 8}, {16, 2});
  ExpectInvalid(c, "needs a unit stride in one dim");
  c = RowMajor(4, 8, 4);
  c.t[3] = Tensor(Addr(3), kBf16, {4, 4}, {1, 4});
  ExpectInvalid(c, "D must have a unit stride in dim 1");
  c = RowMajor(4, 8, 4);
  c.t[0] = Tensor(Addr(0), kBf16, {4, 8}, {4, 1});
  ExpectInvalid(c, "overlapping rows");
  c = RowMajor(4, 8, 4);
  c.t[4] = Tensor(Addr(4), kBf16, {5});
  ExpectInvalid(c, "bias must be a contiguous [4]");
  c = RowMajor(4, 8, 4);
  c.t[2] = Tensor(Addr(2), DType::kFloat32, {4, 4});
  ExpectInvalid(c, "C must match D");
  c = RowMajor(4, 8, 4);
  c.ws_bytes = 1 << 20;
  ExpectInvalid(c, "bytes of workspace");
  c = RowMajor(4, 8, 4);
  c.t[3] = c.t[0];  // D over A: outputs never overlap inputs
  c.t[3].sizes[1] = 4;
  EXPECT_FALSE(PlanOp("gemm", c.op(), Hopper()).ok());
}

TEST(GemmPlan, WorkspaceIsFourMiBOnEveryArch) {
  // 4 MiB: what timed algorithm selection needs (lt_gemm.h), charged to the FLCE memory budget.
  DeviceInfo ampere = Hopper();
  ampere.compute_capability = 80;
  Call c = RowMajor(4, 8, 4);
  c.ws_bytes = GemmWorkspaceBytes(80);
  auto p = PlanOp("gemm", c.op(), ampere);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->workspace_bytes, size_t{4} << 20);
  EXPECT_EQ(GemmWorkspaceBytes(90), size_t{4} << 20);
}

TEST(GemmPlan, WorkspaceEnvOverrideForMeasurements) {
  // LIGERD_GEMM_WORKSPACE_MIB (a whole number 1..256) replaces the 4 MiB; anything else keeps it.
  for (const auto& [value, expect] : std::vector<std::pair<const char*, size_t>>{
           {"32", size_t{32} << 20}, {"0", size_t{4} << 20}, {"999", size_t{4} << 20}, {"x", size_t{4} << 20},
           {"32x", size_t{4} << 20}, {"", size_t{4} << 20}}) {
    setenv("LIGERD_GEMM_WORKSPACE_MIB", value, 1);
    EXPECT_EQ(GemmWorkspaceBytesFor(90), expect) << value;
    Call c = RowMajor(4, 8, 4);
    c.ws_bytes = expect;
    auto p = PlanOp("gemm", c.op(), Hopper());
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->workspace_bytes, expect) << value;
  }
  unsetenv("LIGERD_GEMM_WORKSPACE_MIB");
  EXPECT_EQ(GemmWorkspaceBytesFor(90), size_t{4} << 20);
}

TEST(GemmPlan, PlanCachePatchesEveryAddress) {
  PlanCache cache;
  Call c = RowMajor(64, 128, 256);
  c.t[4] = Tensor(Addr(4), kBf16, {256});
  ASSERT_TRUE(cache.Plan("gemm", c.op(), Hopper()).ok());
  Call moved = c;
  for (int i : {0, 1, 3, 4}) moved.t[i].data = static_cast<char*>(c.t[i].data) + 4096;
  moved.ws = static_cast<char*>(c.ws) + 4096;
  auto p = cache.Plan("gemm", moved.op(), Hopper());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(cache.stats().hits, 1u);
  const GemmParams q = Params(*p);
  EXPECT_EQ(q.b, moved.t[0].data);
  EXPECT_EQ(q.a, moved.t[1].data);
  EXPECT_EQ(q.d, moved.t[3].data);
  EXPECT_EQ(q.bias, moved.t[4].data);
  EXPECT_EQ(q.workspace, moved.ws);
}

}  // namespace
}  // namespace ligerd::kernels
