// Squared ReLU's launch-shape logic, exposed for tests (as glu.h). OpSpecs: the entries
// (relu_squared.toml), defined in relu_squared.cc.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Elements per 16-byte access of dtype x.
int ReluSquaredVectorWidth(DType x);

// Default: 256-thread 1-D blocks, LIGERD_RELU2_POSITIONS_PER_THREAD positions per thread, grid 0
// = one block per chunk of the tensor (relu_squared.cuh).
LaunchConfig ReluSquaredDefaultConfig(bool vectorized);

// OK if `config` is a legal launch (block a multiple of 32 <= the entries' bound, 1-D, the
// default positions per thread, vector access only where allowed); INVALID_ARGUMENT saying why not.
absl::Status ReluSquaredCheckConfig(const LaunchConfig& config, bool vectorized_ok);

// "relu_squared_fwd_v", "relu_squared_bwd_s", ...
std::string ReluSquaredKernelName(bool backward, bool vectorized);

}  // namespace ligerd::kernels
