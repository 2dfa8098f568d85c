// Softmax over the last dimension, Liger-compatible (LigerSoftmax / liger_softmax). The two ops'
// tensors and launch bounds are declared in their entries (softmax.toml); kernels and numerics:
// softmax.cuh. This file: the variants (one per dtype), the checks the entries cannot state,
// planning (the row-wise launch shapes and checks shared with the norms are in rowwise.h) and
// tuning.
//   softmax_fwd [X, Y->]: Y = softmax(X) over the last dim, fp32 math, rounded once.
//   softmax_bwd [dY, Y, dX->]: dX = Y * (dY - sum(dY * Y)) per row, Y the forward's output; dX
//   may be exactly dY (in place). No scalars, no workspace.
#include "kernels/ops/softmax.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/softmax.h"
#include "kernels/ops/rowwise.h"
#include "kernels/ops/softmax_params.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

using namespace rowwise;  // NOLINT: the shared row-wise planning steps

// Positions of the tensors, by name from the entries.
namespace fwd = entry::softmax_fwd;
namespace bwd = entry::softmax_bwd;

constexpr RowKernelFamily kFamily{
    .fwd_prefix = "softmax_fwd",
    .bwd_prefix = "softmax_bwd",
    // Forward i1..i8: 8 vectors x 1024 threads hold a row of 65536 16-bit / 32768 fp32 elements.
    .fwd_max_iters = 8,
    // Backward i1..i4: it holds dy and y. i3 x 1024 threads holds the longest row (24576 16-bit /
    // 12288 fp32 elements); i4 is bounded to 512 threads (softmax.toml), so it is a tuning
    // candidate, never the default.
    .bwd_max_iters = 4,
    // Vectors per thread the default aims for: 4 independent 16-byte loads in flight per thread
    // (as the norms' forward); the backward loads two tensors, so 2 of each.
    .fwd_target_iters = 4,
    .bwd_target_iters = 2,
    // Short rows fill 256-thread blocks (8 warps: enough warps per block to hide the reduction's
    // barrier, small enough that several blocks share an SM).
    .fwd_block_threads = 256,
    .bwd_block_threads = 256,
    .fwd_bounds = fwd::kBounds,
    .bwd_bounds = bwd::kBounds,
};
// The row width: 1..kMaxHidden, 0 only without rows; `name` is the op's main input (rowwise's
// CheckHidden names X, which the backward does not have).
absl::Status CheckWidth(absl::string_view op, absl::string_view name, const RowMatrix& m) {
  if (m.cols == 0 && m.rows > 0)
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": tensor '", name, "' has hidden size 0 (a softmax over no elements is undefined)"));
  return CheckHidden(op, m, "");
}

KernelVariant MakeVariant(bool backward, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_SOFTMAX_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

std::vector<KernelVariant> AllVariants(bool backward) {
  std::vector<KernelVariant> out;
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) out.push_back(MakeVariant(backward, x));
  return out;
}

// The launch of one row group per block (neither direction loops over rows: there is no weight
// gradient to keep per block). rowwise's ForwardLaunch checks a tuned grid covers every group and
// names the forward kernel; the backward takes its own kernel name.
absl::StatusOr<KernelLaunch> RowGroupLaunch(absl::string_view op, bool backward, const LaunchConfig& c,
                                            int64_t rows, std::vector<uint8_t> params) {
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, ForwardLaunch(kFamily, op, c, rows, std::move(params)));
  k.kernel = RowKernelName(kFamily, backward, c);
  return k;
}

absl::StatusOr<OpPlan> PlanForward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& X = call.tensors[fwd::T::X];
  const TensorView& Y = call.tensors[fwd::T::Y];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckWidth(op, "X", xm));
  const int64_t n = xm.cols;
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Y", Y, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "Y", ym));

  OpPlan plan;
  plan.variant = MakeVariant(false, X.dtype);
  if (xm.rows == 0) return plan;
  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) && RowsVectorizable(Y.data, ym, vec);
  LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(kFamily, op, false, call, xm.rows, n, X.dtype,
                                                    vec_ok, dev.sm_count));
  LigerdSoftmaxFwdParams p{};
  p.x = X.data;
  p.y = Y.data;
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.y_stride = ym.row_stride;
  p.n = static_cast<int>(n);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowGroupLaunch(op, false, plan.config, xm.rows, PackParams(p)));
  plan.launches.push_back(std::move(k));
  return plan;
}

absl::StatusOr<OpPlan> PlanBackward(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& DY = call.tensors[bwd::T::dY];
  const TensorView& Y = call.tensors[bwd::T::Y];
  const TensorView& DX = call.tensors[bwd::T::dX];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  LIGERD_RETURN_IF_ERROR(CheckWidth(op, "Y", ym));
  const int64_t n = ym.cols;
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dY", DY, "Y", Y));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "Y", Y));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dym, AsRows(op, "dY", DY));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dxm, AsRows(op, "dX", DX));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "dX", dxm));

  OpPlan plan;
  plan.variant = MakeVariant(true, Y.dtype);
  if (ym.rows == 0) return plan;
  const int vec = RowVectorWidth(Y.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(DY.data, dym, vec) &&
                      RowsVectorizable(Y.data, ym, vec) && RowsVectorizable(DX.data, dxm, vec);
  LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(kFamily, op, true, call, ym.rows, n, Y.dtype,
                                                    vec_ok, dev.sm_count));
  LigerdSoftmaxBwdParams p{};
  p.dy = DY.data;
  p.y = Y.data;
  p.dx = DX.data;
  p.rows = ym.rows;
  p.dy_stride = dym.row_stride;
  p.y_stride = ym.row_stride;
  p.dx_stride = dxm.row_stride;
  p.n = static_cast<int>(n);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowGroupLaunch(op, true, plan.config, ym.rows, PackParams(p)));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- autotuning ---------------------------------------------------------------------------

absl::StatusOr<TuningProblem> Problem(bool backward, const TuningShape& shape) {
  const ScratchTensor x{true, shape.dtype, {shape.rows, shape.cols}, false};
  const ScratchTensor y{true, shape.dtype, {shape.rows, shape.cols}, true};
  TuningProblem p;
  p.tensors = backward ? std::vector<ScratchTensor>{x, y, x}  // dY, Y, dX
                       : std::vector<ScratchTensor>{x, x};    // X, Y
  return p;
}

// RowCandidates' shapes, less its persistent backward grids (a grid smaller than the row groups,
// which these kernels do not loop over): every candidate launches one block per row group.
std::vector<LaunchConfig> Candidates(bool backward, const std::string& op, int x_index, const OpCall& call,
                                     const DeviceInfo& dev) {
  std::vector<LaunchConfig> out;
  for (LaunchConfig& c : RowCandidates(kFamily, backward, op, x_index, call, dev))
    if (c.grid == 0) out.push_back(std::move(c));
  return out;
}

OpSpec MakeSpec(bool backward) {
  OpSpec s = backward ? bwd::BaseSpec() : fwd::BaseSpec();
  s.variants = AllVariants(backward);
  s.plan = backward ? PlanBackward : PlanForward;
  const int x_index = backward ? bwd::T::Y : fwd::T::X;
  s.candidates = [backward, x_index, name = s.name](const OpCall& call, const DeviceInfo& dev) {
    return Candidates(backward, name, x_index, call, dev);
  };
  s.tuning_shape = RowTuningShape(x_index);
  s.tuning_problem = [backward](const TuningShape& shape) { return Problem(backward, shape); };
  return s;
}

}  // namespace

LaunchConfig SoftmaxDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                  int sm_count) {
  return RowDefaultConfig(kFamily, backward, rows, n, x, vectorized, sm_count);
}

absl::Status SoftmaxCheckConfig(bool backward, const LaunchConfig& c, int64_t n, DType x,
                                bool vectorized_ok) {
  return RowCheckConfig(kFamily, backward, c, n, x, vectorized_ok);
}

std::string SoftmaxKernelName(bool backward, const LaunchConfig& c) {
  return RowKernelName(kFamily, backward, c);
}

int SoftmaxMaxIters(bool backward) { return backward ? kFamily.bwd_max_iters : kFamily.fwd_max_iters; }

LIGERD_DEFINE_OP(softmax_fwd, MakeSpec(false))
LIGERD_DEFINE_OP(softmax_bwd, MakeSpec(true))

}  // namespace ligerd::kernels
