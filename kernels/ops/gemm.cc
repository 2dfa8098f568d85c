// gemm: the GEMMs of the fused linear losses (python_client/ligerd/ops/fused_linear_cross_entropy.py),
// owned by the daemon like every other op: remote clients' GEMMs run in ligerd on ligerd's cuBLASLt
// handle, local ones in the process's executor. One plan step (kernels/blas/gemm_params.h).
//
// gemm  tensors [A, B, C?, D->, bias?]   scalars [alpha, beta]
//   D[M, N] = alpha * A[M, K] @ B[K, N] + beta * C[M, N] + bias[N] (bias on every row)
//   A, B: 2-D, one dtype (fp32/bf16/fp16), each with a unit stride in either dim, so
//         transposed views (x.t(), W.t()) need no copy.
//   D:    2-D, unit stride in dim 1 (rows may be padded), dtype of A or fp32 (fp32 accumulation
//         from 16-bit inputs, for accum_dtype). C: D's dtype and shape, unit stride in dim 1; C may
//         be D itself (accumulate in place, the dW += dlogits^T x of the fused loss). beta != 0
//         needs C. bias: [N], D's dtype, contiguous.
//   Products accumulate in fp32 (CUBLAS_COMPUTE_32F: no TF32 for fp32 inputs).
//
// cuBLASLt is column-major: a row-major D[M, N] is its D'[N, M] with the same leading dimension,
// and D' = B' @ A', so cuBLAS's A is our B and its B is our A (gemm_params.h).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/blas/gemm_params.h"
#include "kernels/blas/lt_gemm.h"
#include "kernels/ops/entries/gemm.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

enum Tensor { kA = 0, kB = 1, kC = 2, kD = 3, kBias = 4 };

// cuBLASLt takes 64-bit sizes, but its kernels index with 32-bit tile counts; no LLM GEMM is near.
constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();

absl::Status Fail(const std::string& op, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", msg));
}

// A row-major [rows, cols] operand as cuBLASLt's column-major stored matrix: transposed or not,
// and its leading dimension. Row-major (unit stride in dim 1) is column-major [cols, rows] with
// ld = stride 0, not transposed; a transposed view (unit stride in dim 0) is column-major
// [rows, cols] with ld = stride 1, transposed. A size-1 dim's stride is irrelevant.
struct Stored {
  bool trans = false;
  int64_t ld = 0;
};
absl::StatusOr<Stored> AsStored(const std::string& op, const char* name, const TensorView& t) {
  const int64_t rows = t.sizes[0], cols = t.sizes[1];
  const bool unit1 = cols <= 1 || t.strides[1] == 1;
  const bool unit0 = rows <= 1 || t.strides[0] == 1;
  if (unit1) {
    const int64_t ld = rows <= 1 ? std::max<int64_t>(cols, 1) : t.strides[0];
    if (ld < cols) return Fail(op, absl::StrCat("tensor '", name, "' has overlapping rows (stride ", ld, " < ", cols, ")"));
    return Stored{false, ld};
  }
  if (unit0) {
    const int64_t ld = t.strides[1];
    if (ld < rows)
      return Fail(op, absl::StrCat("tensor '", name, "' has overlapping columns (stride ", ld, " < ", rows, ")"));
    return Stored{true, ld};
  }
  return Fail(op, absl::StrCat("tensor '", name, "' of shape ", ShapeString(t),
                               " needs a unit stride in one dim (make it contiguous)"));
}

absl::StatusOr<OpPlan> Plan(const OpSpec& spec, const OpCall& call, const DeviceInfo& device) {
  const std::string& op = spec.name;
  const TensorView& A = call.tensors[kA];
  const TensorView& B = call.tensors[kB];
  const TensorView& C = call.tensors[kC];
  const TensorView& D = call.tensors[kD];
  const TensorView& bias = call.tensors[kBias];
  const double alpha = call.scalars[0], beta = call.scalars[1];
  for (auto [name, t] : {std::pair{"A", &A}, {"B", &B}, {"D", &D}})
    if (t->ndim != 2) return Fail(op, absl::StrCat("tensor '", name, "' must be 2-D, got ", ShapeString(*t)));
  const int64_t M = A.sizes[0], K = A.sizes[1], N = B.sizes[1];
  if (B.sizes[0] != K)
    return Fail(op, absl::StrCat("A ", ShapeString(A), " and B ", ShapeString(B), " do not multiply (", K,
                                 " != ", B.sizes[0], ")"));
  if (D.sizes[0] != M || D.sizes[1] != N)
    return Fail(op, absl::StrCat("D has shape ", ShapeString(D), ", expected [", M, ", ", N, "]"));
  for (int64_t d : {M, N, K})
    if (d > kMaxDim) return Fail(op, absl::StrCat("dimension ", d, " exceeds ", kMaxDim));
  if (B.dtype != A.dtype)
    return Fail(op, absl::StrCat("A is ", DTypeName(A.dtype), " but B is ", DTypeName(B.dtype)));
  if (D.dtype != A.dtype && D.dtype != DType::kFloat32)
    return Fail(op, absl::StrCat("D is ", DTypeName(D.dtype), "; it must be A's dtype (", DTypeName(A.dtype),
                                 ") or float32"));
  if (!std::isfinite(alpha) || !std::isfinite(beta))
    return Fail(op, absl::StrCat("alpha and beta must be finite, got ", alpha, " and ", beta));
  if (beta != 0.0 && !C.present()) return Fail(op, "beta is non-zero but no C was given");
  if (C.present()) {
    if (C.ndim != 2 || C.sizes[0] != M || C.sizes[1] != N || C.dtype != D.dtype)
      return Fail(op, absl::StrCat("C must match D (", ShapeString(D), " ", DTypeName(D.dtype), "), got ",
                                   ShapeString(C), " ", DTypeName(C.dtype)));
  }
  if (bias.present() && (bias.ndim != 1 || bias.sizes[0] != N || bias.dtype != D.dtype ||
                         (N > 1 && bias.strides[0] != 1)))
    return Fail(op, absl::StrCat("bias must be a contiguous [", N, "] tensor of D's dtype (", DTypeName(D.dtype),
                                 "), got ", ShapeString(bias), " ", DTypeName(bias.dtype)));
  LIGERD_ASSIGN_OR_RETURN(Stored a, AsStored(op, "A", A));
  LIGERD_ASSIGN_OR_RETURN(Stored b, AsStored(op, "B", B));
  LIGERD_ASSIGN_OR_RETURN(Stored d, AsStored(op, "D", D));
  if (d.trans && M > 1) return Fail(op, "D must have a unit stride in dim 1 (row-major rows)");
  Stored c = d;
  if (C.present()) {
    LIGERD_ASSIGN_OR_RETURN(c, AsStored(op, "C", C));
    if (c.trans && M > 1) return Fail(op, "C must have a unit stride in dim 1 (row-major rows)");
  }

  OpPlan plan;
  plan.workspace_bytes = GemmWorkspaceBytesFor(device.compute_capability);
  if (call.check_workspace && M > 0 && N > 0) {
    if (call.workspace == nullptr || call.workspace_bytes < plan.workspace_bytes)
      return Fail(op, absl::StrCat("needs ", plan.workspace_bytes, " bytes of workspace, got ", call.workspace_bytes));
  }
  if (M == 0 || N == 0) return plan;  // nothing to write
  if (K == 0) return Fail(op, "K (A's dim 1) is 0; an empty product is not supported");

  // Column-major: D'[N, M] = B'[N, K] @ A'[K, M]; cuBLAS's A is our B and its B our A.
  GemmParams p;
  p.a = B.data;
  p.b = A.data;
  p.c = C.present() ? C.data : nullptr;
  p.d = D.data;
  p.bias = bias.present() ? bias.data : nullptr;
  p.workspace = call.workspace;
  // The size the plan asked for, not the (possibly larger) buffer given: cuBLASLt's heuristic picks
  // by it, so local and remote calls of one geometry run the same algorithm (bitwise equal).
  p.workspace_bytes = plan.workspace_bytes;
  p.m = N;
  p.n = M;
  p.k = K;
  p.trans_a = b.trans ? 1 : 0;
  p.lda = b.ld;
  p.trans_b = a.trans ? 1 : 0;
  p.ldb = a.ld;
  p.ldc = c.ld;
  p.ldd = d.ld;
  p.alpha = static_cast<float>(alpha);
  p.beta = static_cast<float>(beta);
  p.ab_type = static_cast<uint8_t>(A.dtype);
  p.cd_type = static_cast<uint8_t>(D.dtype);
  KernelLaunch launch;
  launch.kernel = kGemmLaunchName;
  launch.params.resize(sizeof(p));
  std::memcpy(launch.params.data(), &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  return plan;
}

OpSpec MakeSpec() {
  OpSpec s = entry::gemm::BaseSpec();
  s.plan = Plan;  // no NVRTC source: no variants to compile
  return s;
}

}  // namespace

LIGERD_DEFINE_OP(gemm, MakeSpec())

}  // namespace ligerd::kernels
