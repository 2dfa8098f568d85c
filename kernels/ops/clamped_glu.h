// Clamped GLU's launch-shape logic, exposed for tests (as glu.h). OpSpecs: the entries
// (clamped_glu.toml), defined in clamped_glu.cc.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Elements per 16-byte access of dtype x.
int ClampedGluVectorWidth(DType x);

// Default: 256-thread 1-D blocks, LIGERD_CGLU_POSITIONS_PER_THREAD positions per thread, grid 0 =
// one block per chunk of the rows x I grid (clamped_glu.cuh).
LaunchConfig ClampedGluDefaultConfig(bool vectorized);

// OK if `config` is a legal launch (block a multiple of 32 <= the entries' bound, 1-D, the
// default positions per thread, vector access only where allowed); INVALID_ARGUMENT saying why not.
absl::Status ClampedGluCheckConfig(const LaunchConfig& config, bool vectorized_ok);

// "clamped_glu_fwd_v", "clamped_glu_bwd_s", ...
std::string ClampedGluKernelName(bool backward, bool vectorized);

}  // namespace ligerd::kernels
