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

// OK if `config` is a legal ce_fwd / ce_fwd_cluster launch on its own (block a multiple of 32
// <= 1024, one row per block, grid >= 0; shared_bytes 0 = ce_fwd with cluster 1, shared_bytes >
// 0 = ce_fwd_cluster with 1..8 CTAs per cluster and a grid of whole clusters); INVALID_ARGUMENT
// saying why not. Whether the stash fits a particular row is checked when planning.
absl::Status CrossEntropyCheckConfig(const LaunchConfig& config);

// ---- ce_fwd_cluster: one row per thread-block cluster, each CTA's slice kept in shared memory.
// Per-CTA stash bytes for rows of `cols` elements of `x` over `cluster` CTAs: the row's aligned
// middle (at most floor(cols / vector width) 16-byte vectors, whatever the row's alignment),
// split evenly, rounded up to whole vectors (at least one).
int64_t CrossEntropyClusterSliceBytes(DType x, int64_t cols, int cluster);
// The smallest cluster (1..8) whose slices fit in `budget` bytes each; 0 when none does.
int CrossEntropyClusterSize(DType x, int64_t cols, int64_t budget);
// The default cluster size: the smallest whose slices fit kCrossEntropyClusterPreferred, else the
// smallest within kCrossEntropyClusterBudget; 0 (ce_fwd) when neither fits 8 CTAs.
int CrossEntropyDefaultCluster(DType x, int64_t cols);
// Threads per CTA for a slice of `slice_bytes`: >= 16 vectors per thread (128..512).
int CrossEntropyClusterThreads(int64_t slice_bytes);
// Whether ce_fwd_cluster can run on sm_`cc`: clusters need sm_90, and the budgets below assume
// the 228 KiB of shared memory per SM of sm_90 / sm_100 / sm_103 (sm_120 has 100 KiB).
bool CrossEntropyClusterArch(int compute_capability);
// Preferred per-CTA stash: slices of <= 64 KiB, three CTAs per SM, so that the copies of some CTAs
// overlap the stores of others: the fastest cluster size measured (docs/perf/cross_entropy.md).
inline constexpr int64_t kCrossEntropyClusterPreferred = int64_t{64} << 10;
// Otherwise (rows too long for 8 preferred slices): two CTAs per SM (each ~1 KiB of static shared
// memory plus 1 KiB the system reserves per CTA) fit in 228 KiB.
inline constexpr int64_t kCrossEntropyClusterBudget = int64_t{100} << 10;
// Largest stash a config may ask for: 227 KiB per block (the sm_90 opt-in maximum) less room
// for the kernel's static shared memory.
inline constexpr int64_t kCrossEntropyClusterMaxSmem = int64_t{223} << 10;
// Portable cluster size: every sm_90+ GPU schedules 8-CTA clusters without opt-in.
inline constexpr int kCrossEntropyMaxCluster = 8;

// Bytes of L2 the default lets the rows in flight occupy (half of an H100's 50 MB).
inline constexpr int64_t kCrossEntropyL2Budget = int64_t{24} << 20;

}  // namespace ligerd::kernels
