// Host side of the row-wise norm families (RMSNorm, fused add + RMSNorm, LayerNorm): launch-shape
// choice and checks, kernel names, and the planning steps they share (argument checks with
// op-named messages, the persistent backward grid, the fp32 partial-row workspace and its
// column reduction). The device side is kernels/ops/rowwise.cuh.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"
#include "kernels/validate.h"

namespace ligerd::kernels {

// The kernel shapes one family's .cuh provides: <fwd_prefix>_i1.._i<fwd_max_iters>_{v,s},
// <fwd_prefix>_loop_{v,s}, and the same for the backward, bounded by the ops' entries (keys "i1"..
// "i8" and "loop").
struct RowKernelFamily {
  const char* fwd_prefix;   // e.g. "rms_norm_fwd"
  const char* bwd_prefix;   // e.g. "rms_norm_bwd"
  int fwd_max_iters;
  int bwd_max_iters;
  // Vectors per thread the default aims for: enough independent 16-byte loads in flight per
  // thread to hide DRAM latency, fewer where the kernel holds more per vector.
  int fwd_target_iters;
  int bwd_target_iters;
  // Threads per block the default fills with rows when one row needs fewer threads.
  int fwd_block_threads;
  int bwd_block_threads;
  // The launch bounds of the forward and backward kernels (entry::<op>::kBounds).
  std::span<const LaunchBound> fwd_bounds;
  std::span<const LaunchBound> bwd_bounds;
  // Forward: vectors per thread tried before fwd_target_iters for rows of whole warps, taken
  // when one row fits that kernel's max_threads and fwd_first_max_threads (0: none). For a
  // measured sweet spot (the norms' i2 at up to 256 threads); wider rows keep the
  // fwd_target_iters rule.
  int fwd_first_iters = 0;
  int fwd_first_max_threads = 256;
};

// The launch bound of the register kernel with `iters` vectors (iters 0: the loop kernel).
int RowMaxThreads(const RowKernelFamily& f, bool backward, int iters);

// Elements per 16-byte access of dtype x (the kernels' "_v" vector width).
int RowVectorWidth(DType x);

// The default shape: a row in registers where it fits (threads per row and vectors per thread
// chosen for little padding), otherwise the streaming kernel; rows per block to fill a block.
LaunchConfig RowDefaultConfig(const RowKernelFamily& f, bool backward, int64_t rows, int64_t n,
                              DType x, bool vectorized, int sm_count);

// OK if `config` can run rows of n elements of dtype x (kernel exists, block is legal, capacity
// covers n, vector accesses allowed); INVALID_ARGUMENT saying why not.
absl::Status RowCheckConfig(const RowKernelFamily& f, bool backward, const LaunchConfig& config,
                            int64_t n, DType x, bool vectorized_ok);

// The autotuner's candidates (OpSpec::candidates) for a call of `op` whose main input is
// tensors[x_index]: for each vectors-per-thread count the narrowest row group that holds a row
// (whole warps, or a power of two <= 32 lanes), 1..N rows per block up to the kernel's thread
// limit (while every SM still gets a row group), the streaming kernels at 256/512/1024 threads;
// the backward also tries persistent grids of 1 and 2 blocks per SM (fewer fp32 partial rows to
// reduce). Only configs RowCheckConfig accepts; empty if the call does not plan.
std::vector<LaunchConfig> RowCandidates(const RowKernelFamily& f, bool backward,
                                        absl::string_view op, int x_index, const OpCall& call,
                                        const DeviceInfo& dev);

// The kernel's name in the module, e.g. "rms_norm_fwd_i4_v", "layer_norm_bwd_loop_s".
std::string RowKernelName(const RowKernelFamily& f, bool backward, const LaunchConfig& config);

namespace rowwise {

inline constexpr size_t kVectorAlign = 16;
// Hidden sizes up to 2^30 keep every in-row index (j * VEC) within int range in the kernels.
inline constexpr int64_t kMaxHidden = int64_t{1} << 30;
// The reduction kernel's block: 32 columns x 16 partial-row lanes (rowwise.cuh).
inline constexpr unsigned kReduceCols = 32, kReduceLanes = 16;

// ceil(a / b) for b > 0, without forming a + b - 1 (which overflows near INT64_MAX).
inline int64_t CeilDiv(int64_t a, int64_t b) { return a / b + (a % b > 0 ? 1 : 0); }
inline bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }
inline bool RowsVectorizable(const void* data, const RowMatrix& m, int vec) {
  return Aligned(data, kVectorAlign) && m.row_stride % vec == 0;
}

template <typename P>
std::vector<uint8_t> PackParams(const P& p) {
  std::vector<uint8_t> bytes(sizeof(P));
  std::memcpy(bytes.data(), &p, sizeof(P));
  return bytes;
}

// A scalar that must be a finite fp32 value.
absl::Status CheckFinite(absl::string_view op, absl::string_view name, double v);
// W, B, dW, dB: n elements, contiguous, `x`'s dtype or fp32.
absl::Status CheckWeight(absl::string_view op, absl::string_view name, const TensorView& w,
                         int64_t n, DType x);
// A per-row statistic (RSTD, MEAN): one element per row, contiguous (dtype: the spec's list).
absl::Status CheckRowStat(absl::string_view op, absl::string_view name, const TensorView& t,
                          int64_t rows);
// Hidden size 1..kMaxHidden (0 only without rows); `why_zero` explains the refusal of 0.
absl::Status CheckHidden(absl::string_view op, const RowMatrix& m, absl::string_view why_zero);
// `name` (rows of n at one pitch) must not have rows that overlap each other.
absl::Status CheckOutputRows(absl::string_view op, absl::string_view name, const RowMatrix& m);

// The default config, or the tuned one in call.tuned after checking it.
absl::StatusOr<LaunchConfig> ChooseConfig(const RowKernelFamily& f, absl::string_view op,
                                          bool backward, const OpCall& call, int64_t rows,
                                          int64_t n, DType x, bool vectorized_ok, int sm_count);

// The forward launch: one block per group of rows_per_block rows (the forward kernels do not
// loop), `params` by value.
absl::StatusOr<KernelLaunch> ForwardLaunch(const RowKernelFamily& f, absl::string_view op,
                                           const LaunchConfig& c, int64_t rows,
                                           std::vector<uint8_t> params);

// Blocks of the persistent backward grid: c.grid if tuned, else as many as fit on the GPU at
// once (so each keeps one partial row however many rows there are), never more than row groups.
absl::StatusOr<int64_t> PersistentGrid(const RowKernelFamily& f, absl::string_view op,
                                       const KernelVariant& variant, const LaunchConfig& c,
                                       int64_t rows, unsigned shared_bytes, const DeviceInfo& dev);

// Dynamic shared memory of a register backward kernel that stages `sets` partial rows' worth
// of per-thread column sums across the block's rows (0 when one row per block or no partials).
unsigned PartialStageBytes(const LaunchConfig& c, DType x, bool any_partials);

// Sizes (and, when the call carries one, checks) the fp32 workspace for outs.size() partial
// sets of `grid` rows of n, and appends the column reduction `kernel` writing outs[k] from set k
// (with no rows it writes zeros). Sets plan->workspace_bytes.
absl::Status AddPartialReduce(absl::string_view op, absl::string_view kernel, const OpCall& call,
                              int64_t grid, int64_t n, const std::vector<void*>& outs,
                              OpPlan* plan);

}  // namespace rowwise
}  // namespace ligerd::kernels
