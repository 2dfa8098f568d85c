// A GEMM inside an op plan. Ops stay CUDA-free (kernels/catalogue.h): a plan step whose
// KernelLaunch::kernel is kGemmLaunchName carries this struct, byte for byte, in `params`, so
// the plan cache patches its tensor and workspace addresses exactly as it does a kernel's
// parameter block. The executor runs it through cuBLASLt (kernels/blas/lt_gemm.h).
//
// Column-major, as cuBLASLt sees it:
//   D[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n]  (+ bias[m] on every column)
// op(X) = X^T when trans_x is 1. A row-major caller (torch) maps its D = A @ B onto this with
// the operands swapped; kernels/ops/gemm.cc does that.
#pragma once

#include <cstdint>

namespace ligerd::kernels {

inline constexpr char kGemmLaunchName[] = "cublasLt.matmul";

struct GemmParams {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;     // may be d (accumulate in place); null when beta == 0
  void* d = nullptr;
  const void* bias = nullptr;  // null: no bias epilogue
  void* workspace = nullptr;
  uint64_t workspace_bytes = 0;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0, ldd = 0;  // leading dimensions of the stored matrices
  float alpha = 1.0f;
  float beta = 0.0f;
  uint8_t trans_a = 0;
  uint8_t trans_b = 0;
  uint8_t ab_type = 0;  // DType of A and B (kernels/tensor_view.h)
  uint8_t cd_type = 0;  // DType of C, D and the bias
  uint8_t reserved[4] = {};  // zero: the struct is compared and patched as bytes
};
static_assert(sizeof(GemmParams) == 128, "GemmParams is a fixed-size parameter block");

}  // namespace ligerd::kernels
