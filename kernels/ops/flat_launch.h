// The launch shape shared by the elementwise families whose kernels walk a tensor as one flat
// range of positions in 1-D blocks (relu_squared.cuh, clamped_glu.cuh): a block of threads, a
// fixed number of positions per thread, and grid 0 (one block per chunk; a smaller grid loops).
#pragma once

#include "absl/status/status.h"
#include "kernels/catalogue.h"

namespace ligerd::kernels {

struct FlatFamily {
  const char* name;          // in errors: "the <name> kernels take 1-D blocks"
  const char* vector_rule;   // in errors: why vector access was refused
  int max_threads;           // the smallest launch bound of the family's kernels
  int positions_per_thread;  // compiled into the kernels
};

// 256-thread 1-D blocks, the family's positions per thread, grid 0.
LaunchConfig FlatDefaultConfig(const FlatFamily& f, bool vectorized);

// OK if `c` is a legal launch of the family (block a multiple of 32 <= its bound, 1-D, its
// positions per thread, no cluster, vector access only where allowed); INVALID_ARGUMENT saying why.
absl::Status FlatCheckConfig(const FlatFamily& f, const LaunchConfig& c, bool vectorized_ok);

}  // namespace ligerd::kernels
