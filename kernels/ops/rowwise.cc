// Shared planning for the row-wise norm families; see rowwise.h.
#include "kernels/ops/rowwise.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/ops/rowwise_params.h"
#include "kernels/status_macros.h"

namespace ligerd::kernels {
namespace {

constexpr int kMaxThreadsPerBlock = 1024;

int64_t RoundUp(int64_t a, int64_t b) { return rowwise::CeilDiv(a, b) * b; }
int64_t NextPow2(int64_t a) { return NextPow2Saturating(a); }

}  // namespace

int RowVectorWidth(DType x) { return static_cast<int>(rowwise::kVectorAlign) / DTypeBytes(x); }

int RowMaxThreads(const RowKernelFamily& f, bool backward, int iters) {
  static constexpr std::string_view kKeys[] = {"loop", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"};
  if (iters < 0 || iters >= static_cast<int>(std::size(kKeys))) return 0;
  return MaxThreadsOf(backward ? f.bwd_bounds : f.fwd_bounds, kKeys[iters]);
}

LaunchConfig RowDefaultConfig(const RowKernelFamily& f, bool backward, int64_t rows, int64_t n,
                              DType x, bool vectorized, int sm_count) {
  LaunchConfig c;
  c.vectorized = vectorized;
  const int64_t nvec = vectorized ? rowwise::CeilDiv(n, RowVectorWidth(x)) : n;
  const int target = backward ? f.bwd_target_iters : f.fwd_target_iters;
  const int max_iters = backward ? f.bwd_max_iters : f.fwd_max_iters;
  if (nvec <= 32 * target) {
    // Short rows: a power-of-two group of <= 32 lanes per row, several rows per warp.
    c.threads_per_row = static_cast<int>(std::max<int64_t>(1, NextPow2(rowwise::CeilDiv(nvec, target))));
    c.iters = static_cast<int>(std::max<int64_t>(1, rowwise::CeilDiv(nvec, c.threads_per_row)));
  } else {
    // Whole warps per row; grow vectors per thread before giving up on registers.
    const auto try_iters = [&](int it, int64_t max_tpr) {
      const int64_t tpr = RoundUp(rowwise::CeilDiv(nvec, it), 32);
      if (tpr > std::min<int64_t>(max_tpr, RowMaxThreads(f, backward, it))) return;
      c.threads_per_row = static_cast<int>(tpr);
      c.iters = static_cast<int>(rowwise::CeilDiv(nvec, tpr));
    };
    if (!backward && f.fwd_first_iters > 0) try_iters(f.fwd_first_iters, f.fwd_first_max_threads);
    for (int it = target; it <= max_iters && c.iters == 0; ++it) try_iters(it, kMaxThreadsPerBlock);
    if (c.iters == 0) {  // streaming kernel, one row per block, as many threads as allowed
      c.threads_per_row = RowMaxThreads(f, backward, 0);
      c.rows_per_block = 1;
      return c;
    }
  }
  const int block_target = backward ? f.bwd_block_threads : f.fwd_block_threads;
  const int max_block = RowMaxThreads(f, backward, c.iters);
  const int min_rpb = std::max(1, 32 / c.threads_per_row);  // whole warps per block
  int rpb = std::max(min_rpb, std::min(block_target, max_block) / c.threads_per_row);
  // Small problems: fewer rows per block so that at least two blocks per SM exist.
  while (rpb > min_rpb && rowwise::CeilDiv(rows, rpb) < 2 * int64_t{std::max(sm_count, 1)}) rpb /= 2;
  c.rows_per_block = std::max(rpb, min_rpb);
  return c;
}

absl::Status RowCheckConfig(const RowKernelFamily& f, bool backward, const LaunchConfig& c,
                            int64_t n, DType x, bool vectorized_ok) {
  const int tpr = c.threads_per_row, rpb = c.rows_per_block;
  if (c.vectorized && !vectorized_ok)
    return absl::InvalidArgumentError("vectorized access needs n and row strides divisible by "
                                      "the vector width and 16-byte aligned pointers");
  if (tpr < 1 || tpr > kMaxThreadsPerBlock || (tpr <= 32 ? (tpr & (tpr - 1)) != 0 : tpr % 32 != 0))
    return absl::InvalidArgumentError(absl::StrCat(
        "threads_per_row ", tpr, " must be a power of two <= 32 or a multiple of 32 <= 1024"));
  const int max_iters = backward ? f.bwd_max_iters : f.fwd_max_iters;
  if (c.iters < 0 || c.iters > max_iters)
    return absl::InvalidArgumentError(absl::StrCat("iters ", c.iters, " not in 0..", max_iters));
  const int max_threads = RowMaxThreads(f, backward, c.iters);
  if (rpb < 1 || int64_t{tpr} * rpb > max_threads || (tpr * rpb) % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "block ", tpr, "x", rpb, " must be whole warps and at most ", max_threads, " threads"));
  if (c.iters == 0 && backward && rpb != 1)
    return absl::InvalidArgumentError("the backward streaming kernel takes one row per block");
  const int64_t nvec = c.vectorized ? rowwise::CeilDiv(n, RowVectorWidth(x)) : n;
  if (c.iters > 0 && int64_t{tpr} * c.iters < nvec)
    return absl::InvalidArgumentError(absl::StrCat(tpr, " threads x ", c.iters,
                                                   " vectors cannot hold a row of ", n));
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  return absl::OkStatus();
}

std::string RowKernelName(const RowKernelFamily& f, bool backward, const LaunchConfig& c) {
  return absl::StrCat(backward ? f.bwd_prefix : f.fwd_prefix, "_",
                      c.iters > 0 ? absl::StrCat("i", c.iters) : std::string("loop"),
                      c.vectorized ? "_v" : "_s");
}

std::vector<LaunchConfig> RowCandidates(const RowKernelFamily& f, bool backward,
                                        absl::string_view op, int x_index, const OpCall& call,
                                        const DeviceInfo& dev) {
  std::vector<LaunchConfig> out;
  OpCall plain{call.tensors, call.scalars, nullptr, 0, false};
  absl::StatusOr<OpPlan> base = PlanOp(std::string(op), plain, dev);
  if (!base.ok() || base->launches.empty()) return out;
  const TensorView& X = call.tensors[x_index];
  absl::StatusOr<RowMatrix> xm = AsRows(std::string(op), "X", X);
  if (!xm.ok()) return out;
  const int64_t n = xm->cols, rows = xm->rows;
  const bool vec_ok = base->config.vectorized;
  const int64_t nvec = vec_ok ? rowwise::CeilDiv(n, RowVectorWidth(X.dtype)) : n;
  const int max_iters = backward ? f.bwd_max_iters : f.fwd_max_iters;
  const int64_t sms = std::max(dev.sm_count, 1);
  std::vector<int> grids = {0};
  if (backward) {
    for (int per_sm : {1, 2})
      if (sms * per_sm < rows) grids.push_back(static_cast<int>(sms * per_sm));
  }
  auto add = [&](LaunchConfig c) {
    for (int g : grids) {
      c.grid = g;
      if (!RowCheckConfig(f, backward, c, n, X.dtype, vec_ok).ok()) continue;
      bool seen = false;
      for (const LaunchConfig& o : out)
        seen = seen || (o.threads_per_row == c.threads_per_row && o.rows_per_block == c.rows_per_block &&
                        o.iters == c.iters && o.vectorized == c.vectorized && o.grid == c.grid);
      if (!seen) out.push_back(c);
    }
  };
  for (int iters = 1; iters <= max_iters; ++iters) {
    const int64_t need = rowwise::CeilDiv(nvec, iters);
    const int64_t tpr = need <= 32 ? NextPow2(need) : RoundUp(need, 32);
    const int limit = RowMaxThreads(f, backward, iters);
    if (tpr > limit) continue;
    if (rowwise::CeilDiv(nvec, tpr) != iters) continue;  // a narrower iters already covers this width
    for (int rpb = 1; rpb * tpr <= limit; rpb *= 2) {
      if (rpb * tpr < 32) continue;                // whole warps
      if (rpb > 1 && rows < int64_t{rpb} * sms) break;  // under one row group per SM
      LaunchConfig c;
      c.threads_per_row = static_cast<int>(tpr);
      c.rows_per_block = rpb;
      c.iters = iters;
      c.vectorized = vec_ok;
      add(c);
    }
  }
  for (int threads : {256, 512, 1024}) {  // streaming kernels: rows of any width
    LaunchConfig c;
    c.threads_per_row = threads;
    c.rows_per_block = 1;
    c.iters = 0;
    c.vectorized = vec_ok;
    add(c);
  }
  return out;
}

namespace rowwise {

absl::Status CheckFinite(absl::string_view op, absl::string_view name, double v) {
  if (!std::isfinite(v) || std::fabs(v) > 3.0e38)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": scalar '", name, "' is ", v, ", expected a finite fp32 value"));
  return absl::OkStatus();
}

absl::Status CheckWeight(absl::string_view op, absl::string_view name, const TensorView& w,
                         int64_t n, DType x) {
  if (NumElements(w) != n)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has ", NumElements(w),
                                                   " elements, expected ", n,
                                                   " (hidden size of X)"));
  if (!IsContiguous(w))
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor '", name, "' must be contiguous; make it contiguous"));
  if (w.dtype != x && w.dtype != DType::kFloat32)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has dtype ",
                                                   DTypeName(w.dtype), ", expected ",
                                                   DTypeName(x), " (dtype of X) or float32"));
  return absl::OkStatus();
}

absl::Status CheckRowStat(absl::string_view op, absl::string_view name, const TensorView& t,
                          int64_t rows) {
  if (NumElements(t) != rows)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has ", NumElements(t),
                                                   " elements, expected ", rows,
                                                   " (one per row of X)"));
  if (!IsContiguous(t))
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor '", name, "' must be contiguous; make it contiguous"));
  return absl::OkStatus();
}

absl::Status CheckHidden(absl::string_view op, const RowMatrix& m, absl::string_view why_zero) {
  if (m.cols == 0 && m.rows > 0)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor 'X' has hidden size 0 (", why_zero, ")"));
  if (m.cols > kMaxHidden)
    return absl::InvalidArgumentError(absl::StrCat(op, ": hidden size ", m.cols,
                                                   " exceeds the supported maximum ", kMaxHidden));
  return absl::OkStatus();
}

absl::Status CheckOutputRows(absl::string_view op, absl::string_view name, const RowMatrix& m) {
  if (m.rows > 1 && m.row_stride < m.cols)
    return absl::InvalidArgumentError(absl::StrCat(op, ": output '", name, "' has overlapping rows"));
  return absl::OkStatus();
}

absl::StatusOr<LaunchConfig> ChooseConfig(const RowKernelFamily& f, absl::string_view op,
                                          bool backward, const OpCall& call, int64_t rows,
                                          int64_t n, DType x, bool vectorized_ok, int sm_count) {
  if (call.tuned == nullptr) return RowDefaultConfig(f, backward, rows, n, x, vectorized_ok, sm_count);
  absl::Status s = RowCheckConfig(f, backward, *call.tuned, n, x, vectorized_ok);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(op, ": tuned config: ", s.message()));
  return *call.tuned;
}

absl::StatusOr<KernelLaunch> ForwardLaunch(const RowKernelFamily& f, absl::string_view op,
                                           const LaunchConfig& c, int64_t rows,
                                           std::vector<uint8_t> params) {
  const int64_t groups = CeilDiv(rows, c.rows_per_block);
  const int64_t grid = c.grid > 0 ? std::min<int64_t>(c.grid, groups) : groups;
  if (grid != groups)  // the forward kernel maps one row group per block, it does not loop
    return absl::InvalidArgumentError(absl::StrCat(op, ": tuned grid ", c.grid, " is smaller than ",
                                                   groups, " row groups"));
  if (grid > 0x7fffffff)
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", rows, " rows is too many"));
  KernelLaunch k;
  k.kernel = RowKernelName(f, false, c);
  k.grid[0] = static_cast<unsigned>(grid);
  k.block[0] = static_cast<unsigned>(c.threads_per_row);
  k.block[1] = static_cast<unsigned>(c.rows_per_block);
  k.params = std::move(params);
  return k;
}

absl::StatusOr<int64_t> PersistentGrid(const RowKernelFamily& f, absl::string_view op,
                                       const KernelVariant& variant, const LaunchConfig& c,
                                       int64_t rows, unsigned shared_bytes, const DeviceInfo& dev) {
  const int64_t groups = CeilDiv(rows, c.rows_per_block);
  if (c.grid > 0) return std::min<int64_t>(c.grid, groups);
  const int block_threads = c.threads_per_row * c.rows_per_block;
  const std::string kernel = RowKernelName(f, true, c);
  int per_sm = 2;  // a fallback when no occupancy oracle is available (tests)
  if (dev.blocks_per_sm) {
    LIGERD_ASSIGN_OR_RETURN(per_sm, dev.blocks_per_sm(std::string_view(op.data(), op.size()), variant, kernel, block_threads, shared_bytes));
  }
  if (per_sm <= 0)
    return absl::InternalError(
        absl::StrCat(op, ": kernel ", kernel, " cannot run with ", block_threads, " threads"));
  return std::min<int64_t>(groups, int64_t{std::max(dev.sm_count, 1)} * per_sm);
}

unsigned PartialStageBytes(const LaunchConfig& c, DType x, bool any_partials) {
  if (!any_partials || c.iters == 0 || c.rows_per_block <= 1) return 0;
  const int vec = c.vectorized ? RowVectorWidth(x) : 1;
  return static_cast<unsigned>(c.threads_per_row * c.rows_per_block * vec * 4);
}

absl::Status AddPartialReduce(absl::string_view op, absl::string_view kernel, const OpCall& call,
                              int64_t grid, int64_t n, const std::vector<void*>& outs,
                              OpPlan* plan) {
  plan->workspace_bytes = outs.size() * static_cast<size_t>(grid) * static_cast<size_t>(n) * sizeof(float);
  if (call.check_workspace && plan->workspace_bytes > 0) {
    if (call.workspace == nullptr || call.workspace_bytes < plan->workspace_bytes)
      return absl::InvalidArgumentError(absl::StrCat(op, ": needs ", plan->workspace_bytes,
                                                     " bytes of workspace, got ",
                                                     call.workspace ? call.workspace_bytes : 0));
    if (!Aligned(call.workspace, kVectorAlign))
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": workspace must be ", kVectorAlign, "-byte aligned"));
  }
  if (n == 0 || outs.empty()) return absl::OkStatus();
  LigerdRowReduceParams r{};
  r.partial = static_cast<const float*>(call.workspace);
  for (size_t i = 0; i < outs.size() && i < 2; ++i) r.out[i] = outs[i];
  r.n = static_cast<int>(n);
  r.num_partials = static_cast<int>(grid);
  KernelLaunch k;
  k.kernel = std::string(kernel);
  k.grid[0] = static_cast<unsigned>(CeilDiv(n, kReduceCols));
  k.grid[1] = static_cast<unsigned>(outs.size());
  k.block[0] = kReduceCols;
  k.block[1] = kReduceLanes;
  k.params = PackParams(r);
  plan->launches.push_back(std::move(k));
  return absl::OkStatus();
}

}  // namespace rowwise
}  // namespace ligerd::kernels
