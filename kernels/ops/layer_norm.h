// LayerNorm's launch-shape logic, exposed for tests and for the autotuner (as rms_norm.h).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

LaunchConfig LayerNormDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                    int sm_count);
absl::Status LayerNormCheckConfig(bool backward, const LaunchConfig& config, int64_t n, DType x,
                                  bool vectorized_ok);
// e.g. "layer_norm_fwd_i4_v", "layer_norm_bwd_loop_s".
std::string LayerNormKernelName(bool backward, const LaunchConfig& config);

}  // namespace ligerd::kernels
