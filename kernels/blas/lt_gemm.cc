// See lt_gemm.h.
#include "kernels/blas/lt_gemm.h"

#include <cublasLt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda_driver.h"
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

// Timed runs per candidate after one warm-up: each GEMM here takes ~0.1-2 ms, so three runs
// are well above event resolution, and the whole choice costs a few ms once per geometry.
constexpr int kTimedRuns = 3;

bool TuningDisabled() {
  const char* v = std::getenv("LIGERD_GEMM_TUNE");
  return v != nullptr && std::string(v) == "0";
}

// LIGERD_GEMM_TUNE_LOG=1 prints each timed choice to stderr (what was offered, what won).
bool TuningLogged() {
  const char* v = std::getenv("LIGERD_GEMM_TUNE_LOG");
  return v != nullptr && std::string(v) == "1";
}

// Bytes a column-major m x n matrix with leading dimension ld spans.
size_t MatrixBytes(uint64_t m, uint64_t n, uint64_t ld, uint8_t dtype) {
  return static_cast<size_t>((n - 1) * ld + m) * DTypeBytes(static_cast<DType>(dtype));
}

// Scratch output and the timing events of one tuning, released on every exit path.
struct TuneScratch {
  const DriverApi* drv;
  CUdeviceptr d = 0;
  CUevent start = nullptr, stop = nullptr;
  explicit TuneScratch(const DriverApi* api) : drv(api) {}
  ~TuneScratch() {
    if (d != 0) drv->cuMemFree(d);
    if (start != nullptr) drv->cuEventDestroy(start);
    if (stop != nullptr) drv->cuEventDestroy(stop);
  }
  TuneScratch(const TuneScratch&) = delete;
  TuneScratch& operator=(const TuneScratch&) = delete;
};

class LtGemmImpl final : public LtGemm {
 public:
  LtGemmImpl(cublasLtHandle_t handle, const DriverApi* drv) : handle_(handle), drv_(drv) {}
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

    const Layouts l{a_layout, b_layout, c_layout, d_layout};
    LIGERD_ASSIGN_OR_RETURN(cublasLtMatmulAlgo_t algo, Algo(op, p, desc, l, stream));
    return Matmul(op, p, desc, l, algo, c, p.d, stream);
  }

 private:
  struct Layouts {
    cublasLtMatrixLayout_t a, b, c, d;
  };

  absl::Status Matmul(const char* op, const GemmParams& p, cublasLtMatmulDesc_t desc, const Layouts& l,
                      const cublasLtMatmulAlgo_t& algo, const void* c, void* d, CUstream stream) {
    LIGERD_LT_CHECK(op, cublasLtMatmul(handle_, desc, &p.alpha, p.a, l.a, p.b, l.b, &p.beta, c, l.c, d, l.d, &algo,
                                       p.workspace, p.workspace_bytes, stream));
    return absl::OkStatus();
  }

  absl::StatusOr<cublasLtMatmulAlgo_t> Algo(const char* op, const GemmParams& p, cublasLtMatmulDesc_t desc,
                                           const Layouts& l, CUstream stream) {
    const std::string key = AlgoKey(p);
    {
      absl::MutexLock lock(&mu_);
      auto it = algos_.find(key);
      if (it != algos_.end()) return it->second;
    }
    LIGERD_ASSIGN_OR_RETURN(std::vector<cublasLtMatmulHeuristicResult_t> offers, Heuristics(op, p, desc, l));
    size_t pick = 0;
    bool cache = true;
    if (offers.size() > 1 && !TuningDisabled()) {
      // An error here (the legacy stream while another stream captures) counts as capturing.
      CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
      if (drv_->cuStreamIsCapturing(stream, &capture) != CUDA_SUCCESS || capture != CU_STREAM_CAPTURE_STATUS_NONE) {
        cache = false;  // choose (and cache) on the first call outside a capture
      } else {
        absl::StatusOr<size_t> fastest = Fastest(op, p, desc, l, offers, stream);
        if (fastest.ok()) {
          pick = *fastest;
        } else if (absl::IsResourceExhausted(fastest.status())) {
          cache = false;  // no room for the scratch now; try again on a later call
        } else {
          return fastest.status();
        }
      }
    }
    if (cache) {
      absl::MutexLock lock(&mu_);
      algos_.emplace(key, offers[pick].algo);
    }
    return offers[pick].algo;
  }

  // The offers' index with the least time for this GEMM, timed on `stream` (ordered after the
  // caller's earlier work, which it waits for once) with the output in scratch memory: C is the
  // caller's when separate (only read), else the scratch itself.
  absl::StatusOr<size_t> Fastest(const char* op, const GemmParams& p, cublasLtMatmulDesc_t desc, const Layouts& l,
                                 const std::vector<cublasLtMatmulHeuristicResult_t>& offers, CUstream stream) {
    TuneScratch s(drv_);
    const size_t bytes = MatrixBytes(p.m, p.n, p.ldd, p.cd_type);
    size_t free_bytes = 0, total_bytes = 0;
    LIGERD_CU_CHECK(drv_->cuMemGetInfo(&free_bytes, &total_bytes));
    if (bytes > free_bytes / 2)  // leave the caller's allocator its headroom
      return absl::ResourceExhaustedError(absl::StrCat(op, ": no room to time GEMM algorithms"));
    if (drv_->cuMemAlloc(&s.d, bytes) != CUDA_SUCCESS) {
      s.d = 0;
      return absl::ResourceExhaustedError(absl::StrCat(op, ": no room to time GEMM algorithms"));
    }
    LIGERD_CU_CHECK(drv_->cuMemsetD8(s.d, 0, bytes));  // finite values for a beta != 0 read
    LIGERD_CU_CHECK(drv_->cuEventCreate(&s.start, CU_EVENT_DEFAULT));
    LIGERD_CU_CHECK(drv_->cuEventCreate(&s.stop, CU_EVENT_DEFAULT));
    void* d = reinterpret_cast<void*>(s.d);
    const void* c = p.c != nullptr ? p.c : d;
    size_t best = 0;
    float best_ms = 0.f;
    std::string log;
    for (size_t i = 0; i < offers.size(); ++i) {
      LIGERD_RETURN_IF_ERROR(Matmul(op, p, desc, l, offers[i].algo, c, d, stream));  // warm-up
      LIGERD_CU_CHECK(drv_->cuEventRecord(s.start, stream));
      for (int r = 0; r < kTimedRuns; ++r) LIGERD_RETURN_IF_ERROR(Matmul(op, p, desc, l, offers[i].algo, c, d, stream));
      LIGERD_CU_CHECK(drv_->cuEventRecord(s.stop, stream));
      LIGERD_CU_CHECK(drv_->cuEventSynchronize(s.stop));
      float ms = 0.f;
      LIGERD_CU_CHECK(drv_->cuEventElapsedTime(&ms, s.start, s.stop));
      if (i == 0 || ms < best_ms) {
        best = i;
        best_ms = ms;
      }
      absl::StrAppend(&log, " #", i, "=", ms / kTimedRuns);
    }
    if (TuningLogged())
      std::fprintf(stderr, "ligerd %s: GEMM m=%llu n=%llu k=%llu beta=%g: ms per run%s -> #%zu\n", op,
                   static_cast<unsigned long long>(p.m), static_cast<unsigned long long>(p.n),
                   static_cast<unsigned long long>(p.k), p.beta, log.c_str(), best);
    return best;
  }

  // The heuristic's first kGemmCandidates offers for this GEMM (at least one).
  absl::StatusOr<std::vector<cublasLtMatmulHeuristicResult_t>> Heuristics(const char* op, const GemmParams& p,
                                                                          cublasLtMatmulDesc_t desc,
                                                                          const Layouts& l) {
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
    std::vector<cublasLtMatmulHeuristicResult_t> offers(kGemmCandidates);
    std::memset(offers.data(), 0, offers.size() * sizeof(offers[0]));
    int returned = 0;
    LIGERD_LT_CHECK(op, cublasLtMatmulAlgoGetHeuristic(handle_, desc, l.a, l.b, l.c, l.d, pref, kGemmCandidates,
                                                       offers.data(), &returned));
    if (returned == 0)
      return absl::UnimplementedError(absl::StrCat(op, ": cuBLASLt has no algorithm for this GEMM (m=", p.m,
                                                   " n=", p.n, " k=", p.k, ")"));
    offers.resize(returned);
    return offers;
  }

  const cublasLtHandle_t handle_;
  const DriverApi* const drv_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, cublasLtMatmulAlgo_t> algos_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

size_t GemmWorkspaceBytesFor(int compute_capability) {
  const char* v = std::getenv("LIGERD_GEMM_WORKSPACE_MIB");
  if (v != nullptr) {
    // The whole value must be a number in 1..256 ("32", not "32x"); anything else keeps the
    // default and says so once, rather than measuring something other than what was asked for.
    char* end = nullptr;
    const long mib = std::strtol(v, &end, 10);
    if (end != v && *end == '\0' && mib >= 1 && mib <= 256) return static_cast<size_t>(mib) << 20;
    static std::once_flag warned;
    std::call_once(warned, [v] {
      std::fprintf(stderr, "ligerd: LIGERD_GEMM_WORKSPACE_MIB=\"%s\" is not a whole number of MiB in 1..256; "
                           "using the default GEMM workspace\n", v);
    });
  }
  return GemmWorkspaceBytes(compute_capability);
}

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create(const DriverApi* drv) {
  cublasLtHandle_t handle = nullptr;
  LIGERD_LT_CHECK("gemm", cublasLtCreate(&handle));
  return std::unique_ptr<LtGemm>(new LtGemmImpl(handle, drv));
}

}  // namespace ligerd::kernels
