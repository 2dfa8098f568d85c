// The distillation losses' launch-shape logic (kl_div_fwd, kl_div_bwd, jsd_fwd, tvd_fwd), exposed
// for tests. The OpSpecs come from the entries (distill.toml) through all_ops.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// The default launch for rows of n elements of dtype x: threads per row so that each thread
// streams about kDistillVectorsPerThread vectors (a power of two, 1..kDistillMaxDefaultThreads),
// rows per block to fill kDistillBlockThreads when a row takes fewer, one row group per block.
// iters is 0 (every kernel streams), grid is left 0 (the planner forms it from the rows).
LaunchConfig DistillDefaultConfig(int64_t n, DType x, bool vectorized);

// OK if `config` can run an op whose kernels are bounded to `max_threads` (block shape legal,
// rows per block >= 1, streaming, vector accesses only where allowed); INVALID_ARGUMENT saying why.
absl::Status DistillCheckConfig(const LaunchConfig& config, int max_threads, bool vectorized_ok);

// The kernel's name in the op's module: "<op>_v" (16-byte accesses) or "<op>_s" (one element).
std::string DistillKernelName(const std::string& op, bool vectorized);

inline constexpr int kDistillVectorsPerThread = 8;
inline constexpr int kDistillMaxDefaultThreads = 512;
inline constexpr int kDistillBlockThreads = 256;

}  // namespace ligerd::kernels
