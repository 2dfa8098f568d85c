// LayerNorm, Liger-compatible (LigerLayerNorm / liger_layer_norm): y = (x - mean) * rstd * w + b.
// Tensors, scalars and launch bounds: the ops' entries (layer_norm.toml); kernels and numerics:
// layer_norm.cuh. This file: the variants, the checks the entries cannot state and planning (the
// row-wise steps shared with RMSNorm are in rowwise.h).
//   X: [..., n] fp32/bf16/fp16, 1-D to 4-D, contiguous last dim, leading dims flattening into
//   rows with one stride. W, B, dW, dB: [n] contiguous, all one dtype: X's or fp32. Y, dY, dX:
//   X's shape and dtype (their own row strides). MEAN, RSTD: fp32, one per row, contiguous.
//   dX may be exactly dY. dW needs W; dB needs no tensor of the forward (it is sum(dY)).
//   Workspace (backward with dW or dB): (number of dW, dB wanted) * grid * n * 4 bytes.
#include "kernels/ops/layer_norm.h"

#include "absl/strings/str_cat.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/layer_norm_params.h"
#include "kernels/ops/entries/layer_norm.h"
#include "kernels/ops/rowwise.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

using namespace rowwise;  // NOLINT: the shared row-wise planning steps

namespace fwd = entry::layer_norm_fwd;
namespace bwd = entry::layer_norm_bwd;

constexpr RowKernelFamily kFamily{
    .fwd_prefix = "layer_norm_fwd",
    .bwd_prefix = "layer_norm_bwd",
    .fwd_max_iters = 8,
    .bwd_max_iters = 4,
    .fwd_target_iters = 4,
    // Two vectors per thread: a 4096-wide bf16 row is 256 threads, two rows per 512-thread block,
    // and the i2 kernel's registers (two accumulators per element, the next row pipelined) allow
    // one such block per SM, so the persistent grid is one block per SM and writes half the dW/dB
    // partial rows of one vector per thread. The autotuner's choice (docs/perf/layer_norm.md).
    .bwd_target_iters = 2,
    .fwd_block_threads = 256,
    .bwd_block_threads = 512,
    .fwd_bounds = fwd::kBounds,
    .bwd_bounds = bwd::kBounds,
    // Two vectors per thread where a row fits i2's 256 threads (hidden 1025..4096 in 16-bit
    // types); wider rows keep i4 (docs/perf/layer_norm.md).
    .fwd_first_iters = 2,
};
constexpr const char* kWhyZero = "the mean of nothing is undefined";

KernelVariant MakeVariant(bool backward, DType x, DType w) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x), ".w", ShortName(w));
  v.defines = {absl::StrCat("LIGERD_LN_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x)),
               absl::StrCat("LIGERD_WT=", DeviceTypeName(w))};
  return v;
}

std::vector<KernelVariant> AllVariants(bool backward) {
  std::vector<KernelVariant> out;
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    out.push_back(MakeVariant(backward, x, x));
    if (x != DType::kFloat32) out.push_back(MakeVariant(backward, x, DType::kFloat32));
  }
  return out;
}

// The dtype of the affine parameters (W and B agree), or X's when there are none.
absl::StatusOr<DType> ParamDType(const std::string& op, const TensorView& X,
                                 const std::vector<std::pair<const char*, const TensorView*>>& ps,
                                 int64_t n) {
  const char* first = nullptr;
  DType wt = X.dtype;
  for (const auto& [name, t] : ps) {
    if (!t->present()) continue;
    LIGERD_RETURN_IF_ERROR(CheckWeight(op, name, *t, n, X.dtype));
    if (first == nullptr) {
      first = name;
      wt = t->dtype;
    } else if (t->dtype != wt) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has dtype ",
                                                     DTypeName(t->dtype), ", expected ",
                                                     DTypeName(wt), " (dtype of ", first, ")"));
    }
  }
  return wt;
}

absl::StatusOr<OpPlan> PlanForward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& X = call.tensors[fwd::T::X];
  const TensorView& W = call.tensors[fwd::T::W];
  const TensorView& B = call.tensors[fwd::T::B];
  const TensorView& Y = call.tensors[fwd::T::Y];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm, kWhyZero));
  const int64_t n = xm.cols;
  LIGERD_ASSIGN_OR_RETURN(DType wt, ParamDType(op, X, {{"W", &W}, {"B", &B}}, n));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Y", Y, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "Y", ym));
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "MEAN", call.tensors[fwd::T::MEAN], xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "RSTD", call.tensors[fwd::T::RSTD], xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "eps", call.scalars[fwd::S::eps]));
  if (call.scalars[fwd::S::eps] < 0)
    return absl::InvalidArgumentError(absl::StrCat(op, ": scalar 'eps' must be >= 0"));

  OpPlan plan;
  plan.variant = MakeVariant(false, X.dtype, wt);
  if (xm.rows == 0) return plan;
  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                      RowsVectorizable(Y.data, ym, vec) &&
                      (!W.present() || Aligned(W.data, kVectorAlign)) &&
                      (!B.present() || Aligned(B.data, kVectorAlign));
  LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(kFamily, op, false, call, xm.rows, n, X.dtype,
                                                    vec_ok, dev.sm_count));
  LigerdLayerNormFwdParams p{};
  p.x = X.data;
  p.w = W.present() ? W.data : nullptr;
  p.b = B.present() ? B.data : nullptr;
  p.y = Y.data;
  p.mean = static_cast<float*>(call.tensors[fwd::T::MEAN].data);
  p.rstd = static_cast<float*>(call.tensors[fwd::T::RSTD].data);
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.y_stride = ym.row_stride;
  p.n = static_cast<int>(n);
  p.eps = static_cast<float>(call.scalars[fwd::S::eps]);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, ForwardLaunch(kFamily, op, plan.config, xm.rows, PackParams(p)));
  plan.launches.push_back(std::move(k));
  return plan;
}

absl::StatusOr<OpPlan> PlanBackward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& DY = call.tensors[bwd::T::dY];
  const TensorView& X = call.tensors[bwd::T::X];
  const TensorView& W = call.tensors[bwd::T::W];
  const TensorView& DX = call.tensors[bwd::T::dX];
  const TensorView& DW = call.tensors[bwd::T::dW];
  const TensorView& DB = call.tensors[bwd::T::dB];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm, kWhyZero));
  const int64_t n = xm.cols;
  if (DW.present() && !W.present())
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor 'dW' given without 'W'"));
  LIGERD_ASSIGN_OR_RETURN(DType wt, ParamDType(op, X, {{"W", &W}, {"dW", &DW}, {"dB", &DB}}, n));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dY", DY, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dym, AsRows(op, "dY", DY));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dxm, AsRows(op, "dX", DX));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "dX", dxm));
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "MEAN", call.tensors[bwd::T::MEAN], xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "RSTD", call.tensors[bwd::T::RSTD], xm.rows));

  OpPlan plan;
  plan.variant = MakeVariant(true, X.dtype, wt);
  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                      RowsVectorizable(DY.data, dym, vec) && RowsVectorizable(DX.data, dxm, vec) &&
                      (!W.present() || Aligned(W.data, kVectorAlign));
  // Workspace: the wanted partial sets, in the order of `outs` (dW first).
  std::vector<void*> outs;
  if (DW.present()) outs.push_back(DW.data);
  if (DB.present()) outs.push_back(DB.data);
  int64_t grid = 0;
  if (xm.rows > 0) {
    LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(kFamily, op, true, call, xm.rows, n, X.dtype,
                                                      vec_ok, dev.sm_count));
    const LaunchConfig& c = plan.config;
    const unsigned smem = PartialStageBytes(c, X.dtype, !outs.empty());
    LIGERD_ASSIGN_OR_RETURN(grid, PersistentGrid(kFamily, op, plan.variant, c, xm.rows, smem, dev));
    float* ws = static_cast<float*>(call.workspace);
    const size_t set = static_cast<size_t>(grid) * static_cast<size_t>(n);
    LigerdLayerNormBwdParams p{};
    p.dy = DY.data;
    p.x = X.data;
    p.w = W.present() ? W.data : nullptr;
    p.mean = static_cast<const float*>(call.tensors[bwd::T::MEAN].data);
    p.rstd = static_cast<const float*>(call.tensors[bwd::T::RSTD].data);
    p.dx = DX.data;
    p.dw_partial = DW.present() ? ws : nullptr;
    p.db_partial = DB.present() ? (DW.present() && ws != nullptr ? ws + set : ws) : nullptr;
    p.rows = xm.rows;
    p.dy_stride = dym.row_stride;
    p.x_stride = xm.row_stride;
    p.dx_stride = dxm.row_stride;
    p.n = static_cast<int>(n);
    KernelLaunch k;
    k.kernel = RowKernelName(kFamily, true, c);
    k.grid[0] = static_cast<unsigned>(grid);
    k.block[0] = static_cast<unsigned>(c.threads_per_row);
    k.block[1] = static_cast<unsigned>(c.rows_per_block);
    k.shared_bytes = smem;
    k.params = PackParams(p);
    plan.launches.push_back(std::move(k));
  }
  if (!outs.empty())  // with no rows the reduction writes zeros
    LIGERD_RETURN_IF_ERROR(AddPartialReduce(op, "layer_norm_bwd_reduce", call, grid, n, outs, &plan));
  return plan;
}

// The tuner's call: W and B of X's dtype (HF's nn.LayerNorm), mean/rstd in fp32; the backward
// computes dW and dB too.
absl::StatusOr<TuningProblem> Problem(bool backward, const TuningShape& shape) {
  const ScratchTensor x{true, shape.dtype, {shape.rows, shape.cols}, false};
  const ScratchTensor w{true, shape.dtype, {shape.cols}, false};
  const ScratchTensor mean{true, DType::kFloat32, {shape.rows}, false};
  const ScratchTensor rstd{true, DType::kFloat32, {shape.rows}, true};
  TuningProblem p;
  if (backward) {
    p.tensors = {x, x, w, mean, rstd, x, w, w};  // dY, X, W, MEAN, RSTD, dX, dW, dB
  } else {
    p.tensors = {x, w, w, x, mean, rstd};        // X, W, B, Y, MEAN, RSTD
    p.scalars = {1e-6};                          // eps
  }
  return p;
}

OpSpec MakeSpec(bool backward) {
  OpSpec s = backward ? bwd::BaseSpec() : fwd::BaseSpec();
  s.variants = AllVariants(backward);
  s.plan = backward ? PlanBackward : PlanForward;
  const int x_index = backward ? bwd::T::X : fwd::T::X;
  s.candidates = [backward, x_index, name = s.name](const OpCall& call, const DeviceInfo& dev) {
    return RowCandidates(kFamily, backward, name, x_index, call, dev);
  };
  s.tuning_shape = RowTuningShape(x_index);
  s.tuning_problem = [backward](const TuningShape& shape) { return Problem(backward, shape); };
  return s;
}

}  // namespace

LaunchConfig LayerNormDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                    int sm_count) {
  return RowDefaultConfig(kFamily, backward, rows, n, x, vectorized, sm_count);
}

absl::Status LayerNormCheckConfig(bool backward, const LaunchConfig& c, int64_t n, DType x,
                                  bool vectorized_ok) {
  return RowCheckConfig(kFamily, backward, c, n, x, vectorized_ok);
}

std::string LayerNormKernelName(bool backward, const LaunchConfig& c) {
  return RowKernelName(kFamily, backward, c);
}

LIGERD_DEFINE_OP(layer_norm_fwd, MakeSpec(false))
LIGERD_DEFINE_OP(layer_norm_bwd, MakeSpec(true))

}  // namespace ligerd::kernels
