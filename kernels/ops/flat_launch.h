// The launch shape shared by the elementwise families whose kernels walk a tensor as one flat
// range of positions in 1-D blocks (relu_squared.cuh, clamped_glu.cuh): a block of threads, a
// fixed number of positions per thread, and grid 0 (one block per chunk; a smaller grid loops).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// A call's config: `tuned` where the autotuner gave one (refused with "<op>: config: <why>"
// where FlatCheckConfig refuses it), else FlatDefaultConfig.
absl::StatusOr<LaunchConfig> FlatChooseConfig(const FlatFamily& f, const std::string& op, const LaunchConfig* tuned,
                                              bool vectorized_ok);

// The launch of `kernel` over `units` positions (vectors or elements): one block of
// c.threads_per_row threads per chunk of threads * c.iters positions, at least one (it also does
// a dense row's ragged end); a smaller configured grid loops over the chunks.
KernelLaunch FlatLaunch(std::string kernel, const LaunchConfig& c, int64_t units, const void* params, size_t size);

}  // namespace ligerd::kernels
