// Softmax's launch-shape logic, exposed for tests and for the autotuner (as rms_norm.h). The
// OpSpecs (softmax_fwd, softmax_bwd) are in ops.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// The default shape: a row in registers where it fits (rowwise.h's RowDefaultConfig with
// softmax's kernel family), otherwise the streaming kernel.
LaunchConfig SoftmaxDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                  int sm_count);

// OK if `config` can run rows of n elements of dtype x; INVALID_ARGUMENT saying why not.
absl::Status SoftmaxCheckConfig(bool backward, const LaunchConfig& config, int64_t n, DType x,
                                bool vectorized_ok);

// The kernel's name in the module, e.g. "softmax_fwd_i4_v", "softmax_bwd_loop_s".
std::string SoftmaxKernelName(bool backward, const LaunchConfig& config);

// The largest iters the family's register kernels take (forward 8, backward 4).
int SoftmaxMaxIters(bool backward);

}  // namespace ligerd::kernels
