// SwiGLU / GeGLU launch-shape logic, exposed for tests and for the autotuner. OpSpecs: ops.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Elements per 16-byte access of dtype x.
int GluVectorWidth(DType x);

// Default: 256-thread blocks (threads_per_row = block size, rows_per_block = 1), grid 0 = one
// block per chunk of the tensor (glu.cuh).
LaunchConfig GluDefaultConfig(bool vectorized);

// OK if `config` is a legal launch (block a multiple of 32 <= 1024, one "row" per block,
// vector accesses allowed); INVALID_ARGUMENT saying why not.
absl::Status GluCheckConfig(const LaunchConfig& config, bool vectorized_ok);

// "glu_fwd_v", "glu_bwd_s", ...
std::string GluKernelName(bool backward, bool vectorized);

}  // namespace ligerd::kernels
