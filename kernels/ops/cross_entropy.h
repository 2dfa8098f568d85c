// Cross-entropy launch-shape logic, exposed for tests and for the autotuner. OpSpecs: ops.h.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// Default launch of ce_fwd for rows of `cols` elements of `x`: threads per block (threads_per_row)
// so that each thread streams >= 8 vectors per pass (128..1024), and `grid` = rows in flight so
// that they fit in about half of L2 (the second read of a row then hits L2), at least one block
// per SM, at most `blocks_per_sm` (occupancy) per SM, at most `rows`.
LaunchConfig CrossEntropyDefaultConfig(DType x, int64_t rows, int64_t cols, int sm_count,
                                       int blocks_per_sm);
// Threads per block only (the part of the default that does not need occupancy).
int CrossEntropyDefaultThreads(DType x, int64_t cols);

// OK if `config` is a legal ce_fwd launch (block a multiple of 32 <= 1024, one row per block,
// grid >= 0); INVALID_ARGUMENT saying why not.
absl::Status CrossEntropyCheckConfig(const LaunchConfig& config);

// Bytes of L2 the default lets the rows in flight occupy (half of an H100's 50 MB).
inline constexpr int64_t kCrossEntropyL2Budget = int64_t{24} << 20;

}  // namespace ligerd::kernels
