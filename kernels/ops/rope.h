// RoPE launch-shape logic, exposed for tests and for the autotuner. OpSpecs: ops.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Elements of q/k per 16-byte access.
int RopeVectorWidth(DType x);

// Default: 256-thread blocks, 4 heads per thread (LaunchConfig::iters), one thread per
// (token, head group, vector lane), grid derived from the shape (grid 0).
LaunchConfig RopeDefaultConfig(bool vectorized);

// OK if `config` is legal: block a multiple of 32 <= 512, rows_per_block 1, iters (heads per
// thread) >= 1, grid 0, vectors only where allowed; else INVALID_ARGUMENT saying why.
absl::Status RopeCheckConfig(const LaunchConfig& config, bool vectorized_ok);

// "rope_v" or "rope_s" (one module per direction and dtype pair).
std::string RopeKernelName(bool vectorized);

}  // namespace ligerd::kernels
