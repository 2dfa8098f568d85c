// cuBLASLt, owned by the executor: runs the GEMM steps of op plans (kernels/blas/gemm_params.h).
//
// One cublasLtHandle per executor (one device), created on the first GEMM so that processes
// which never multiply (CI, the control plane) never initialise cuBLAS. Descriptors and layouts
// are initialised on the stack per call (no heap, nothing to free, thread-safe).
//
// The algorithm is chosen once per geometry (shapes, leading dimensions, types, transposes,
// bias, pointer alignments and workspace size) and cached: the first call of a geometry times
// the heuristic's first kGemmCandidates offers and keeps the fastest. The heuristic's first pick
// is often not the fastest for the fused linear cross-entropy's GEMMs (bench/micro/lt_gemm_algos.cu;
// the figures are in docs/perf/fused_linear_cross_entropy.md). Timing runs
// on scratch output memory, never the caller's (a beta != 0 GEMM would otherwise accumulate into
// it repeatedly); the inputs are only read. It falls back to the heuristic's first pick, uncached
// where the cause is passing, when the stream is being captured into a CUDA graph (no sync
// allowed), when the scratch does not fit in free memory, or with LIGERD_GEMM_TUNE=0.
#pragma once

#include <cuda.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/blas/gemm_params.h"

namespace ligerd::kernels {

struct DriverApi;

// Heuristic offers timed per geometry: the measured fastest was within the first 6 for every
// FLCE GEMM (lt_gemm_algos.txt), and each offer costs a few runs of the GEMM on first use.
inline constexpr int kGemmCandidates = 8;

class LtGemm {
 public:
  // `drv` (the executor's, outliving this) times the candidates.
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create(const DriverApi* drv);
  virtual ~LtGemm() = default;
  // Enqueues the GEMM on `stream`, asynchronously. `op` names the calling op in errors.
  virtual absl::Status Run(const char* op, const GemmParams& p, CUstream stream) = 0;
};

// Workspace a GEMM step asks for. NVIDIA's guidance is 32 MiB on Hopper for split-K kernels; 4
// MiB because every MiB here is a MiB of the fused linear cross-entropy's 10%-of-the-logits
// budget not spent on a larger chunk (4 MiB fits 768-token chunks at 8192 x 128256, 32 MiB only
// 640). The cost, on random data (lt_gemm_algos_random.txt, GEMMs per 8192-token step): 37.3 ms
// at 768 tokens with 4 MiB against 35.9 ms with 32 MiB, and 35.5 ms at 640 with 32 MiB: whether
// 640 tokens + 32 MiB beats 768 + 4 MiB in the op is still to be measured. 4 MiB also covers the
// split-K reductions older archs' heuristics offer.
inline constexpr size_t GemmWorkspaceBytes(int /*compute_capability*/) { return size_t{4} << 20; }
// What a plan asks for: GemmWorkspaceBytes, or LIGERD_GEMM_WORKSPACE_MIB (1..256) where set, for
// measuring the trade above (the fused loss's chunk rule does not see it: set LIGERD_FLCE_CHUNK).
size_t GemmWorkspaceBytesFor(int compute_capability);

}  // namespace ligerd::kernels
