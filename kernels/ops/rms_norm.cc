// RMSNorm, Liger-compatible (LigerRMSNorm / liger_rms_norm): y = x * rstd * (offset + w).
// Kernels and numerics: rms_norm.cuh. This file: the two OpSpecs, their checks and planning.
//
// rms_norm_fwd  tensors [X, W?, Y->, RSTD->]            scalars [eps, offset, casting_mode]
// rms_norm_bwd  tensors [dY, X, W?, RSTD, dX->, dW?->]  scalars [offset, casting_mode]
//   X: [..., n] fp32/bf16/fp16, 1-D to 4-D, contiguous last dim, leading dims flattening into
//   rows with one stride. W, dW: [n] contiguous, X's dtype or fp32. Y, dY, dX: X's shape and
//   dtype (their own row strides). RSTD: fp32, one per row, contiguous. dX may be exactly dY
//   (Liger's in_place=True). casting_mode: 0 llama, 1 gemma, 2 none. dW is optional even with W
//   (a frozen weight); it needs W. Workspace (backward with dW): grid * n * 4 bytes, 16-aligned.
#include "kernels/ops/rms_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/embedded_sources.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/ops.h"
#include "kernels/ops/rms_norm_params.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

enum CastMode { kLlama = 0, kGemma = 1, kNone = 2 };
constexpr const char* kCastNames[] = {"llama", "gemma", "none"};

namespace fwd {
enum { kX, kW, kY, kRstd };
enum { kEps, kOffset, kCastMode };
}  // namespace fwd
namespace bwd {
enum { kDY, kX, kW, kRstd, kDX, kDW };
enum { kOffset, kCastMode };
}  // namespace bwd

// Kernel shape limits; they mirror the __launch_bounds__ and kernel lists in rms_norm.cuh.
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kFwdMaxIters = 8;  // rms_norm_fwd_i1..i8
constexpr int kBwdMaxIters = 4;  // rms_norm_bwd_i1..i4
// Forward and loop kernels: __launch_bounds__(1024). Backward register kernels: i1-i2 1024,
// i3-i4 512 (their dW accumulators need up to 128 registers).
int MaxThreads(bool backward, int iters) {
  return (backward && iters > 2) ? 512 : kMaxThreadsPerBlock;
}
// Vectors per thread the default aims for: enough independent 16-byte loads in flight per
// thread to hide DRAM latency; the backward holds two tensors plus fp32 dW sums, so fewer.
constexpr int kFwdTargetIters = 4;
constexpr int kBwdTargetIters = 2;
// Threads per block the default fills with rows when one row needs fewer threads.
constexpr int kFwdBlockThreads = 256;
constexpr int kBwdBlockThreads = 512;
// Hidden sizes up to 2^30 keep every in-row index (j * VEC) within int range in the kernels.
constexpr int64_t kMaxHidden = int64_t{1} << 30;
// The reduction kernel's block: 32 columns x 16 partial-row lanes (see rms_norm.cuh).
constexpr unsigned kReduceCols = 32, kReduceLanes = 16;
constexpr size_t kVectorAlign = 16;


// Casting modes that compile to identical code share a variant: fp32 inputs round nothing,
// and the backward differs only in llama mode's dW (and not at all without a weight).
int EffectiveCast(bool backward, DType x, bool has_w, int mode) {
  if (x == DType::kFloat32) return kGemma;
  if (backward && (!has_w || mode == kNone)) return kGemma;
  return mode;
}

KernelVariant MakeVariant(bool backward, DType x, bool has_w, DType w, int cast) {
  if (!has_w) w = x;
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x), ".w", has_w ? ShortName(w) : "none", ".",
                       kCastNames[cast]);
  v.defines = {absl::StrCat("LIGERD_RMS_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x)),
               absl::StrCat("LIGERD_WT=", DeviceTypeName(w)),
               absl::StrCat("LIGERD_HAS_W=", has_w ? 1 : 0), absl::StrCat("LIGERD_CAST=", cast)};
  return v;
}

std::vector<KernelVariant> AllVariants(bool backward) {
  std::vector<KernelVariant> out;
  std::set<std::string> seen;
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    for (int wi = 0; wi < 3; ++wi) {
      const bool has_w = wi > 0;
      const DType w = wi == 2 ? DType::kFloat32 : x;
      if (wi == 2 && x == DType::kFloat32) continue;  // same as wi == 1
      for (int mode : {kLlama, kGemma, kNone}) {
        KernelVariant v = MakeVariant(backward, x, has_w, w, EffectiveCast(backward, x, has_w, mode));
        if (seen.insert(v.tag).second) out.push_back(std::move(v));
      }
    }
  }
  return out;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }
int64_t NextPow2(int64_t a) {
  int64_t p = 1;
  while (p < a) p *= 2;
  return p;
}
bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <typename P>
std::vector<uint8_t> PackParams(const P& p) {
  std::vector<uint8_t> bytes(sizeof(P));
  std::memcpy(bytes.data(), &p, sizeof(P));
  return bytes;
}

absl::StatusOr<int> CastModeScalar(absl::string_view op, double v) {
  if (v != 0 && v != 1 && v != 2)
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": scalar 'casting_mode' is ", v, ", expected 0 (llama), 1 (gemma) or 2 (none)"));
  return static_cast<int>(v);
}

absl::Status CheckFinite(absl::string_view op, absl::string_view name, double v) {
  if (!std::isfinite(v) || std::fabs(v) > 3.0e38)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": scalar '", name, "' is ", v, ", expected a finite fp32 value"));
  return absl::OkStatus();
}

// W or dW: n elements, contiguous, `x`'s dtype or fp32.
absl::Status CheckWeight(absl::string_view op, absl::string_view name, const TensorView& w, int64_t n,
                         DType x) {
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

absl::Status CheckRstd(absl::string_view op, const TensorView& rstd, int64_t rows) {
  if (NumElements(rstd) != rows)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor 'RSTD' has ", NumElements(rstd),
                                                   " elements, expected ", rows,
                                                   " (one per row of X)"));
  if (!IsContiguous(rstd))
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor 'RSTD' must be contiguous; make it contiguous"));
  return absl::OkStatus();
}

absl::Status CheckHidden(absl::string_view op, const RowMatrix& m) {
  if (m.cols == 0 && m.rows > 0)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor 'X' has hidden size 0 (the RMS of nothing is undefined)"));
  if (m.cols > kMaxHidden)
    return absl::InvalidArgumentError(absl::StrCat(op, ": hidden size ", m.cols,
                                                   " exceeds the supported maximum ", kMaxHidden));
  return absl::OkStatus();
}

bool RowsVectorizable(const void* data, const RowMatrix& m, int vec) {
  return Aligned(data, kVectorAlign) && m.row_stride % vec == 0;
}

absl::StatusOr<LaunchConfig> ChooseConfig(absl::string_view op, bool backward, const OpCall& call,
                                          int64_t rows, int64_t n, DType x, bool vectorized_ok,
                                          int sm_count) {
  if (call.tuned == nullptr)
    return RmsNormDefaultConfig(backward, rows, n, x, vectorized_ok, sm_count);
  absl::Status s = RmsNormCheckConfig(backward, *call.tuned, n, x, vectorized_ok);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(op, ": tuned config: ", s.message()));
  return *call.tuned;
}

// ---- forward ------------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanForward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& X = call.tensors[fwd::kX];
  const TensorView& W = call.tensors[fwd::kW];
  const TensorView& Y = call.tensors[fwd::kY];
  const TensorView& R = call.tensors[fwd::kRstd];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm));
  const int64_t n = xm.cols;
  const bool has_w = W.present();
  if (has_w) LIGERD_RETURN_IF_ERROR(CheckWeight(op, "W", W, n, X.dtype));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Y", Y, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  if (ym.rows > 1 && ym.row_stride < n)
    return absl::InvalidArgumentError(absl::StrCat(op, ": output 'Y' has overlapping rows"));
  LIGERD_RETURN_IF_ERROR(CheckRstd(op, R, xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "eps", call.scalars[fwd::kEps]));
  if (call.scalars[fwd::kEps] < 0)
    return absl::InvalidArgumentError(absl::StrCat(op, ": scalar 'eps' must be >= 0"));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "offset", call.scalars[fwd::kOffset]));
  LIGERD_ASSIGN_OR_RETURN(int mode, CastModeScalar(op, call.scalars[fwd::kCastMode]));

  OpPlan plan;
  const DType wt = has_w ? W.dtype : X.dtype;
  plan.variant = MakeVariant(false, X.dtype, has_w, wt, EffectiveCast(false, X.dtype, has_w, mode));
  if (xm.rows == 0) return plan;

  const int vec = RmsNormVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                      RowsVectorizable(Y.data, ym, vec) && (!has_w || Aligned(W.data, kVectorAlign));
  LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(op, false, call, xm.rows, n, X.dtype, vec_ok,
                                                    dev.sm_count));
  const LaunchConfig& c = plan.config;

  LigerdRmsNormFwdParams p{};
  p.x = X.data;
  p.w = has_w ? W.data : nullptr;
  p.y = Y.data;
  p.rstd = static_cast<float*>(R.data);
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.y_stride = ym.row_stride;
  p.n = static_cast<int>(n);
  p.eps = static_cast<float>(call.scalars[fwd::kEps]);
  p.offset = static_cast<float>(call.scalars[fwd::kOffset]);

  KernelLaunch k;
  k.kernel = RmsNormKernelName(false, c);
  const int64_t groups = CeilDiv(xm.rows, c.rows_per_block);
  const int64_t grid = c.grid > 0 ? std::min<int64_t>(c.grid, groups) : groups;
  if (grid != groups)  // the forward kernel maps one row group per block, it does not loop
    return absl::InvalidArgumentError(absl::StrCat(op, ": tuned grid ", c.grid, " is smaller than ",
                                                   groups, " row groups"));
  if (grid > 0x7fffffff)
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", xm.rows, " rows is too many"));
  k.grid[0] = static_cast<unsigned>(grid);
  k.block[0] = static_cast<unsigned>(c.threads_per_row);
  k.block[1] = static_cast<unsigned>(c.rows_per_block);
  k.params = PackParams(p);
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- backward -----------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanBackward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& DY = call.tensors[bwd::kDY];
  const TensorView& X = call.tensors[bwd::kX];
  const TensorView& W = call.tensors[bwd::kW];
  const TensorView& R = call.tensors[bwd::kRstd];
  const TensorView& DX = call.tensors[bwd::kDX];
  const TensorView& DW = call.tensors[bwd::kDW];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm));
  const int64_t n = xm.cols;
  const bool has_w = W.present();
  const bool has_dw = DW.present();
  if (has_w) LIGERD_RETURN_IF_ERROR(CheckWeight(op, "W", W, n, X.dtype));
  if (has_dw && !has_w)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor 'dW' given without 'W'"));
  if (has_dw) {
    LIGERD_RETURN_IF_ERROR(CheckWeight(op, "dW", DW, n, X.dtype));
    if (DW.dtype != W.dtype)
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor 'dW' has dtype ",
                                                     DTypeName(DW.dtype), ", expected ",
                                                     DTypeName(W.dtype), " (dtype of W)"));
  }
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dY", DY, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dym, AsRows(op, "dY", DY));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dxm, AsRows(op, "dX", DX));
  if (dxm.rows > 1 && dxm.row_stride < n)
    return absl::InvalidArgumentError(absl::StrCat(op, ": output 'dX' has overlapping rows"));
  LIGERD_RETURN_IF_ERROR(CheckRstd(op, R, xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "offset", call.scalars[bwd::kOffset]));
  LIGERD_ASSIGN_OR_RETURN(int mode, CastModeScalar(op, call.scalars[bwd::kCastMode]));

  OpPlan plan;
  const DType wt = has_w ? W.dtype : X.dtype;
  plan.variant = MakeVariant(true, X.dtype, has_w, wt, EffectiveCast(true, X.dtype, has_w, mode));

  const int vec = RmsNormVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                      RowsVectorizable(DY.data, dym, vec) && RowsVectorizable(DX.data, dxm, vec) &&
                      (!has_w || Aligned(W.data, kVectorAlign));
  int64_t grid = 0;
  if (xm.rows > 0) {
    LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(op, true, call, xm.rows, n, X.dtype, vec_ok,
                                                      dev.sm_count));
    const LaunchConfig& c = plan.config;
    const int block_threads = c.threads_per_row * c.rows_per_block;
    const unsigned smem = (has_dw && c.iters > 0 && c.rows_per_block > 1)
                              ? static_cast<unsigned>(block_threads * (c.vectorized ? vec : 1) * 4)
                              : 0u;
    const int64_t groups = CeilDiv(xm.rows, c.rows_per_block);
    if (c.grid > 0) {
      grid = std::min<int64_t>(c.grid, groups);
    } else {
      // Persistent grid: as many blocks as fit on the GPU at once, so each keeps one dW
      // partial row however many rows there are.
      int per_sm = 2;  // a fallback when no occupancy oracle is available (tests)
      if (dev.blocks_per_sm) {
        LIGERD_ASSIGN_OR_RETURN(per_sm, dev.blocks_per_sm(op, plan.variant, RmsNormKernelName(true, c),
                                                          block_threads, smem));
      }
      if (per_sm <= 0)
        return absl::InternalError(absl::StrCat(op, ": kernel ", RmsNormKernelName(true, c),
                                                " cannot run with ", block_threads, " threads"));
      grid = std::min<int64_t>(groups, int64_t{std::max(dev.sm_count, 1)} * per_sm);
    }
    LigerdRmsNormBwdParams p{};
    p.dy = DY.data;
    p.x = X.data;
    p.w = has_w ? W.data : nullptr;
    p.rstd = static_cast<const float*>(R.data);
    p.dx = DX.data;
    p.dw_partial = has_dw ? static_cast<float*>(call.workspace) : nullptr;
    p.rows = xm.rows;
    p.dy_stride = dym.row_stride;
    p.x_stride = xm.row_stride;
    p.dx_stride = dxm.row_stride;
    p.n = static_cast<int>(n);
    p.offset = static_cast<float>(call.scalars[bwd::kOffset]);
    KernelLaunch k;
    k.kernel = RmsNormKernelName(true, c);
    k.grid[0] = static_cast<unsigned>(grid);
    k.block[0] = static_cast<unsigned>(c.threads_per_row);
    k.block[1] = static_cast<unsigned>(c.rows_per_block);
    k.shared_bytes = smem;
    k.params = PackParams(p);
    plan.launches.push_back(std::move(k));
  }
  if (has_dw) {
    plan.workspace_bytes = static_cast<size_t>(grid) * static_cast<size_t>(n) * sizeof(float);
    if (call.check_workspace && plan.workspace_bytes > 0) {
      if (call.workspace == nullptr || call.workspace_bytes < plan.workspace_bytes)
        return absl::InvalidArgumentError(absl::StrCat(op, ": needs ", plan.workspace_bytes,
                                                       " bytes of workspace, got ",
                                                       call.workspace ? call.workspace_bytes : 0));
      if (!Aligned(call.workspace, kVectorAlign))
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": workspace must be ", kVectorAlign, "-byte aligned"));
    }
    // dW = column sums of the partial rows; with no rows this writes zeros.
    LigerdRmsNormDwReduceParams r{};
    r.partial = static_cast<const float*>(call.workspace);
    r.dw = DW.data;
    r.n = static_cast<int>(n);
    r.num_partials = static_cast<int>(grid);
    KernelLaunch k;
    k.kernel = "rms_norm_bwd_dw_reduce";
    k.grid[0] = static_cast<unsigned>(CeilDiv(n, kReduceCols));
    k.block[0] = kReduceCols;
    k.block[1] = kReduceLanes;
    k.params = PackParams(r);
    if (n > 0) plan.launches.push_back(std::move(k));
  }
  return plan;
}

// ---- autotuning ---------------------------------------------------------------------------

// Every legal config worth timing for this call: for each vectors-per-thread count the narrowest
// row group that holds a row (whole warps, or a power of two <= 32 lanes), 1..N rows per block up
// to the kernel's thread limit, the streaming kernels at 256/512/1024 threads; the backward also
// tries grids of 1 and 2 blocks per SM (fewer dW partial rows to reduce). Only configs that
// RmsNormCheckConfig accepts for this call.
std::vector<LaunchConfig> Candidates(bool backward, const OpCall& call, const DeviceInfo& dev) {
  std::vector<LaunchConfig> out;
  const OpSpec& spec = backward ? RmsNormBackwardSpec() : RmsNormForwardSpec();
  absl::StatusOr<OpPlan> base = PlanOp(spec.name, OpCall{call.tensors, call.scalars, nullptr, 0, false}, dev);
  if (!base.ok() || base->launches.empty()) return out;
  const TensorView& X = call.tensors[backward ? bwd::kX : fwd::kX];
  absl::StatusOr<RowMatrix> xm = AsRows(spec.name, "X", X);
  if (!xm.ok()) return out;
  const int64_t n = xm->cols, rows = xm->rows;
  const bool vec_ok = base->config.vectorized;
  const int64_t nvec = vec_ok ? CeilDiv(n, RmsNormVectorWidth(X.dtype)) : n;
  const int max_iters = backward ? kBwdMaxIters : kFwdMaxIters;
  std::vector<int> grids = {0};
  if (backward) {
    for (int per_sm : {1, 2}) {
      const int64_t g = int64_t{std::max(dev.sm_count, 1)} * per_sm;
      if (g < rows) grids.push_back(static_cast<int>(g));
    }
  }
  auto add = [&](LaunchConfig c) {
    for (int g : grids) {
      c.grid = g;
      if (!RmsNormCheckConfig(backward, c, n, X.dtype, vec_ok).ok()) continue;
      bool seen = false;
      for (const LaunchConfig& o : out)
        seen = seen || (o.threads_per_row == c.threads_per_row && o.rows_per_block == c.rows_per_block &&
                        o.iters == c.iters && o.vectorized == c.vectorized && o.grid == c.grid);
      if (!seen) out.push_back(c);
    }
  };
  for (int iters = 1; iters <= max_iters; ++iters) {
    const int64_t need = CeilDiv(nvec, iters);
    const int64_t tpr = need <= 32 ? NextPow2(need) : RoundUp(need, 32);
    if (tpr > MaxThreads(backward, iters)) continue;
    if (CeilDiv(nvec, tpr) != iters) continue;  // a narrower iters already covers this width
    for (int rpb = 1; rpb * tpr <= MaxThreads(backward, iters); rpb *= 2) {
      if (rpb * tpr < 32) continue;  // whole warps
      if (rpb > 1 && rows < int64_t{rpb} * std::max(dev.sm_count, 1)) break;  // under one row group per SM
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

absl::StatusOr<TuningProblem> Problem(bool backward, const TuningShape& shape) {
  // The common call: a weight of X's dtype, llama casting; the backward computes dW too.
  const ScratchTensor x{true, shape.dtype, {shape.rows, shape.cols}, false};
  const ScratchTensor w{true, shape.dtype, {shape.cols}, false};
  const ScratchTensor rstd{true, DType::kFloat32, {shape.rows}, true};
  TuningProblem p;
  if (backward) {
    p.tensors = {x, x, w, rstd, x, w};  // dY, X, W, RSTD, dX, dW
    p.scalars = {0.0, kLlama};          // offset, casting_mode
  } else {
    p.tensors = {x, w, x, rstd};        // X, W, Y, RSTD
    p.scalars = {1e-6, 0.0, kLlama};    // eps, offset, casting_mode
  }
  return p;
}

std::vector<TensorParam> ForwardTensors() {
  const std::vector<DType> floats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  return {{"X", false, false, floats, ""},
          {"W", false, true, floats, ""},
          {"Y", true, false, floats, ""},
          {"RSTD", true, false, {DType::kFloat32}, ""}};
}

std::vector<TensorParam> BackwardTensors() {
  const std::vector<DType> floats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  return {{"dY", false, false, floats, ""},
          {"X", false, false, floats, ""},
          {"W", false, true, floats, ""},
          {"RSTD", false, false, {DType::kFloat32}, ""},
          {"dX", true, false, floats, "dY"},
          {"dW", true, true, floats, ""}};
}

OpSpec MakeSpec(bool backward) {
  OpSpec s;
  s.name = backward ? "rms_norm_bwd" : "rms_norm_fwd";
  s.doc = backward
              ? "RMSNorm backward: dX = rstd*m - rstd^3*mean(m*x)*x with m = dY*(offset+W); "
                "dW = sum over rows of dY*x*rstd (deterministic). dX may alias dY (in_place)."
              : "RMSNorm forward (Liger-compatible): Y = X*rstd*(offset+W), RSTD = "
                "1/sqrt(mean(X^2)+eps) in fp32; casting_mode 0 llama, 1 gemma, 2 none.";
  s.tensors = backward ? BackwardTensors() : ForwardTensors();
  s.scalars = backward ? std::vector<std::string>{"offset", "casting_mode"}
                       : std::vector<std::string>{"eps", "offset", "casting_mode"};
  s.main = {"kernels/ops/rms_norm.cuh", EmbeddedSource("kernels/ops/rms_norm.cuh")};
  s.headers = {{"kernels/ops/common.cuh", EmbeddedSource("kernels/ops/common.cuh")},
               {"kernels/ops/rms_norm_params.h", EmbeddedSource("kernels/ops/rms_norm_params.h")}};
  s.options = {"--std=c++17"};
  s.variants = AllVariants(backward);
  s.plan = backward ? PlanBackward : PlanForward;
  s.candidates = [backward](const OpCall& call, const DeviceInfo& dev) {
    return Candidates(backward, call, dev);
  };
  s.tuning_shape = RowTuningShape(backward ? bwd::kX : fwd::kX);
  s.tuning_problem = [backward](const TuningShape& shape) { return Problem(backward, shape); };
  return s;
}

}  // namespace

int RmsNormVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig RmsNormDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                  int sm_count) {
  LaunchConfig c;
  c.vectorized = vectorized;
  const int64_t nvec = vectorized ? CeilDiv(n, RmsNormVectorWidth(x)) : n;
  const int target = backward ? kBwdTargetIters : kFwdTargetIters;
  const int max_iters = backward ? kBwdMaxIters : kFwdMaxIters;
  if (nvec <= 32 * target) {
    // Short rows: a power-of-two group of <= 32 lanes per row, several rows per warp.
    c.threads_per_row = static_cast<int>(std::max<int64_t>(1, NextPow2(CeilDiv(nvec, target))));
    c.iters = static_cast<int>(std::max<int64_t>(1, CeilDiv(nvec, c.threads_per_row)));
  } else {
    // Whole warps per row; grow vectors per thread before giving up on registers.
    for (int it = target; it <= max_iters && c.iters == 0; ++it) {
      const int64_t tpr = RoundUp(CeilDiv(nvec, it), 32);
      if (tpr <= MaxThreads(backward, it)) {
        c.threads_per_row = static_cast<int>(tpr);
        c.iters = static_cast<int>(CeilDiv(nvec, tpr));
      }
    }
    if (c.iters == 0) {  // streaming kernel, one row per block, as many threads as allowed
      c.threads_per_row = kMaxThreadsPerBlock;
      c.rows_per_block = 1;
      return c;
    }
  }
  const int block_target = backward ? kBwdBlockThreads : kFwdBlockThreads;
  const int max_block = MaxThreads(backward, c.iters);
  const int min_rpb = std::max(1, 32 / c.threads_per_row);  // whole warps per block
  int rpb = std::max(min_rpb, std::min(block_target, max_block) / c.threads_per_row);
  // Small problems: fewer rows per block so that at least two blocks per SM exist.
  while (rpb > min_rpb && CeilDiv(rows, rpb) < 2 * int64_t{std::max(sm_count, 1)}) rpb /= 2;
  c.rows_per_block = std::max(rpb, min_rpb);
  return c;
}

absl::Status RmsNormCheckConfig(bool backward, const LaunchConfig& c, int64_t n, DType x,
                                bool vectorized_ok) {
  const int tpr = c.threads_per_row, rpb = c.rows_per_block;
  if (c.vectorized && !vectorized_ok)
    return absl::InvalidArgumentError("vectorized access needs n and row strides divisible by "
                                      "the vector width and 16-byte aligned pointers");
  if (tpr < 1 || tpr > kMaxThreadsPerBlock || (tpr <= 32 ? (tpr & (tpr - 1)) != 0 : tpr % 32 != 0))
    return absl::InvalidArgumentError(absl::StrCat(
        "threads_per_row ", tpr, " must be a power of two <= 32 or a multiple of 32 <= 1024"));
  const int max_iters = backward ? kBwdMaxIters : kFwdMaxIters;
  if (c.iters < 0 || c.iters > max_iters)
    return absl::InvalidArgumentError(absl::StrCat("iters ", c.iters, " not in 0..", max_iters));
  if (rpb < 1 || int64_t{tpr} * rpb > MaxThreads(backward, c.iters) || (tpr * rpb) % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "block ", tpr, "x", rpb, " must be whole warps and at most ", MaxThreads(backward, c.iters),
        " threads"));
  if (c.iters == 0 && backward && rpb != 1)
    return absl::InvalidArgumentError("the backward streaming kernel takes one row per block");
  const int64_t nvec = c.vectorized ? CeilDiv(n, RmsNormVectorWidth(x)) : n;
  if (c.iters > 0 && int64_t{tpr} * c.iters < nvec)
    return absl::InvalidArgumentError(absl::StrCat(tpr, " threads x ", c.iters,
                                                   " vectors cannot hold a row of ", n));
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  return absl::OkStatus();
}

std::string RmsNormKernelName(bool backward, const LaunchConfig& c) {
  return absl::StrCat(backward ? "rms_norm_bwd_" : "rms_norm_fwd_",
                      c.iters > 0 ? absl::StrCat("i", c.iters) : std::string("loop"),
                      c.vectorized ? "_v" : "_s");
}

const OpSpec& RmsNormForwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(false));
  return *spec;
}

const OpSpec& RmsNormBackwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(true));
  return *spec;
}

}  // namespace ligerd::kernels
