// RMSNorm's launch-shape logic, exposed for tests and for the autotuner (which proposes
// LaunchConfigs and needs to know which are legal). The OpSpecs are in ops.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Elements per 16-byte access of dtype x (the kernels' "_v" vector width).
int RmsNormVectorWidth(DType x);

// The default shape: a row in registers where it fits (threads per row and vectors per thread
// chosen for little padding), otherwise the streaming kernel; rows per block to fill a block.
LaunchConfig RmsNormDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                  int sm_count);

// OK if `config` can run rows of n elements of dtype x (kernel exists, block is legal, capacity
// covers n, vector accesses allowed); INVALID_ARGUMENT saying why not.
absl::Status RmsNormCheckConfig(bool backward, const LaunchConfig& config, int64_t n, DType x,
                                bool vectorized_ok);

// The kernel's name in the module, e.g. "rms_norm_fwd_i4_v", "rms_norm_bwd_loop_s".
std::string RmsNormKernelName(bool backward, const LaunchConfig& config);

}  // namespace ligerd::kernels
