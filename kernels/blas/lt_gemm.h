// cuBLASLt, owned by the executor: runs the GEMM steps of op plans (kernels/blas/gemm_params.h).
//
// One cublasLtHandle per executor (one device), created on the first GEMM so that processes
// which never multiply (CI, the control plane) never initialise cuBLAS. Descriptors and layouts
// are initialised on the stack per call (no heap, nothing to free, thread-safe); the algorithm
// cuBLASLt's heuristic picks is cached per geometry (shapes, leading dimensions, types,
// transposes, bias, pointer alignments and workspace size), since the heuristic query costs tens
// of microseconds and the answer never changes for a geometry.
#pragma once

#include <cuda.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/blas/gemm_params.h"

namespace ligerd::kernels {

class LtGemm {
 public:
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create();
  virtual ~LtGemm() = default;
  // Enqueues the GEMM on `stream`, asynchronously. `op` names the calling op in errors.
  virtual absl::Status Run(const char* op, const GemmParams& p, CUstream stream) = 0;
};

// Workspace a GEMM step asks for on a GPU of this compute capability: Hopper's fastest kernels
// want 32 MiB (NVIDIA's cuBLAS guidance); 4 MiB covers the older archs' split-K reductions.
inline constexpr size_t GemmWorkspaceBytes(int compute_capability) {
  return compute_capability >= 90 ? (size_t{32} << 20) : (size_t{4} << 20);
}

}  // namespace ligerd::kernels
