// See lt_gemm.h.
#include "kernels/blas/lt_gemm.h"

#include <cublasLt.h>

#include <cstring>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/status_macros.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {
namespace {

// cuBLAS status -> absl code, as the driver's are mapped (kernels/cuda_driver.h).
absl::StatusCode CodeOf(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED: return absl::StatusCode::kResourceExhausted;
    case CUBLAS_STATUS_INVALID_VALUE: return absl::StatusCode::kInvalidArgument;
    case CUBLAS_STATUS_NOT_SUPPORTED: return absl::StatusCode::kUnimplemented;
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return absl::StatusCode::kFailedPrecondition;
    default: return absl::StatusCode::kInternal;
  }
}

absl::Status LtStatus(cublasStatus_t s, const char* op, const char* call, const char* file, int line) {
  return absl::Status(CodeOf(s), absl::StrCat(op, ": ", call, " failed: ", cublasLtGetStatusName(s), " (",
                                              file, ":", line, ")"));
}

// Checks a cuBLASLt call; on failure returns a status naming the op, the call and file:line.
#define LIGERD_LT_CHECK(op, call)                                                \
  do {                                                                           \
    cublasStatus_t ligerd_lt_status_ = (call);                                   \
    if (ligerd_lt_status_ != CUBLAS_STATUS_SUCCESS)                              \
      return LtStatus(ligerd_lt_status_, op, #call, __FILE__, __LINE__);         \
  } while (0)

cudaDataType_t CudaType(uint8_t dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::kBFloat16: return CUDA_R_16BF;
    case DType::kFloat16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

// Largest power of two (up to 256, what cuBLASLt's alignment preferences distinguish) dividing p.
uint32_t AlignmentOf(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

// Everything the heuristic's answer depends on: the parameter block without its addresses, plus
// the addresses' alignments.
std::string AlgoKey(const GemmParams& p) {
  GemmParams g = p;
  g.a = g.b = g.c = g.bias = nullptr;
  g.d = g.workspace = nullptr;
  const uint32_t align[5] = {AlignmentOf(p.a), AlignmentOf(p.b), AlignmentOf(p.c != nullptr ? p.c : p.d),
                             AlignmentOf(p.d), p.bias != nullptr ? 1u : 0u};
  std::string key(reinterpret_cast<const char*>(&g), sizeof(g));
  key.append(reinterpret_cast<const char*>(align), sizeof(align));
  return key;
}

class LtGemmImpl final : public LtGemm {
 public:
  explicit LtGemmImpl(cublasLtHandle_t handle) : handle_(handle) {}
  ~LtGemmImpl() override { cublasLtDestroy(handle_); }
  LtGemmImpl(const LtGemmImpl&) = delete;
  LtGemmImpl& operator=(const LtGemmImpl&) = delete;

  absl::Status Run(const char* op, const GemmParams& p, CUstream stream) override {
    // Stack-initialised descriptors: nothing allocated, nothing to destroy, nothing shared.
    cublasLtMatmulDescOpaque_t desc_storage;
    cublasLtMatrixLayoutOpaque_t a_storage, b_storage, c_storage, d_storage;
    cublasLtMatmulDesc_t desc = &desc_storage;
    cublasLtMatrixLayout_t a_layout = &a_storage, b_layout = &b_storage, c_layout = &c_storage,
                           d_layout = &d_storage;
    // fp32 accumulation and scaling for every input type (as torch's default matmul; TF32 is
    // never used for fp32 inputs, so fp32 results match a float64 reference to fp32 rounding).
    LIGERD_LT_CHECK(op, cublasLtMatmulDescInit(desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    LIGERD_LT_CHECK(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    LIGERD_LT_CHECK(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (p.bias != nullptr) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bias_type = CudaType(p.cd_type);
      LIGERD_LT_CHECK(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                         sizeof(epilogue)));
      LIGERD_LT_CHECK(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias,
                                                         sizeof(p.bias)));
      LIGERD_LT_CHECK(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                         &bias_type, sizeof(bias_type)));
    }
    // Stored shapes: op(A) is m x k, so A is k x m when transposed.
    const cudaDataType_t ab = CudaType(p.ab_type), cd = CudaType(p.cd_type);
    LIGERD_LT_CHECK(op, cublasLtMatrixLayoutInit(a_layout, ab, p.trans_a ? p.k : p.m, p.trans_a ? p.m : p.k, p.lda));
    LIGERD_LT_CHECK(op, cublasLtMatrixLayoutInit(b_layout, ab, p.trans_b ? p.n : p.k, p.trans_b ? p.k : p.n, p.ldb));
    LIGERD_LT_CHECK(op, cublasLtMatrixLayoutInit(d_layout, cd, p.m, p.n, p.ldd));
    const void* c = p.c != nullptr ? p.c : p.d;
    LIGERD_LT_CHECK(op, cublasLtMatrixLayoutInit(c_layout, cd, p.m, p.n, p.c != nullptr ? p.ldc : p.ldd));

    LIGERD_ASSIGN_OR_RETURN(cublasLtMatmulAlgo_t algo, Algo(op, p, desc, a_layout, b_layout, c_layout, d_layout));
    LIGERD_LT_CHECK(op, cublasLtMatmul(handle_, desc, &p.alpha, p.a, a_layout, p.b, b_layout, &p.beta, c, c_layout,
                                       p.d, d_layout, &algo, p.workspace, p.workspace_bytes, stream));
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<cublasLtMatmulAlgo_t> Algo(const char* op, const GemmParams& p, cublasLtMatmulDesc_t desc,
                                           cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                           cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d) {
    const std::string key = AlgoKey(p);
    {
      absl::MutexLock lock(&mu_);
      auto it = algos_.find(key);
      if (it != algos_.end()) return it->second;
    }
    cublasLtMatmulPreferenceOpaque_t pref_storage;
    cublasLtMatmulPreference_t pref = &pref_storage;
    LIGERD_LT_CHECK(op, cublasLtMatmulPreferenceInit(pref));
    const uint64_t ws = p.workspace_bytes;
    LIGERD_LT_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                             sizeof(ws)));
    const uint32_t align[4] = {AlignmentOf(p.a), AlignmentOf(p.b), AlignmentOf(p.c != nullptr ? p.c : p.d),
                               AlignmentOf(p.d)};
    const cublasLtMatmulPreferenceAttributes_t attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i)
      LIGERD_LT_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], &align[i], sizeof(align[i])));
    cublasLtMatmulHeuristicResult_t result;
    std::memset(&result, 0, sizeof(result));
    int returned = 0;
    LIGERD_LT_CHECK(op, cublasLtMatmulAlgoGetHeuristic(handle_, desc, a, b, c, d, pref, 1, &result, &returned));
    if (returned == 0)
      return absl::UnimplementedError(absl::StrCat(op, ": cuBLASLt has no algorithm for this GEMM (m=", p.m,
                                                   " n=", p.n, " k=", p.k, ")"));
    absl::MutexLock lock(&mu_);
    algos_.emplace(key, result.algo);
    return result.algo;
  }

  const cublasLtHandle_t handle_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, cublasLtMatmulAlgo_t> algos_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create() {
  cublasLtHandle_t handle = nullptr;
  LIGERD_LT_CHECK("gemm", cublasLtCreate(&handle));
  return std::unique_ptr<LtGemm>(new LtGemmImpl(handle));
}

}  // namespace ligerd::kernels
