// RMSNorm, Liger-compatible (LigerRMSNorm / liger_rms_norm): y = x * rstd * (offset + w), and
// the same kernel family with the residual add fused in (LigerFusedAddRMSNorm:
// S = X + R, Y = rmsnorm(S)). The four ops' tensors, scalars and launch bounds are declared in
// their entries (rms_norm.toml); kernels and numerics: rms_norm.cuh. This file: the variants, the
// checks the entries cannot state, planning (shared row-wise steps in rowwise.h) and tuning.
//   casting_mode: 0 llama, 1 gemma, 2 none. dW is optional even with W (a frozen weight); it
//   needs W. The fused backward takes the saved S as its input row and adds dS (absent: no
//   gradient reaches S) into dX, which is also dR. The fused ops always have a weight, as
//   Liger's do. Workspace (backward with dW): grid * n * 4 bytes, 16-aligned.
#include "kernels/ops/rms_norm.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/rms_norm.h"
#include "kernels/ops/rms_norm_params.h"
#include "kernels/ops/rowwise.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

using namespace rowwise;  // NOLINT: the shared row-wise planning steps

enum CastMode { kLlama = 0, kGemma = 1, kNone = 2 };
constexpr const char* kCastNames[] = {"llama", "gemma", "none"};

// Positions of the tensors in each op's list, by name from the entries (-1: no such tensor).
namespace fwd = entry::rms_norm_fwd;
namespace bwd = entry::rms_norm_bwd;
namespace add_fwd = entry::fused_add_rms_norm_fwd;
namespace add_bwd = entry::fused_add_rms_norm_bwd;
struct FwdIdx { int x, r, w, y, s, rstd; };
constexpr FwdIdx kFwdPlain{fwd::T::X, -1, fwd::T::W, fwd::T::Y, -1, fwd::T::RSTD};
constexpr FwdIdx kFwdFused{add_fwd::T::X, add_fwd::T::R, add_fwd::T::W, add_fwd::T::Y, add_fwd::T::S,
                           add_fwd::T::RSTD};
struct BwdIdx { int dy, ds, x, w, rstd, dx, dw; };
constexpr BwdIdx kBwdPlain{bwd::T::dY, -1, bwd::T::X, bwd::T::W, bwd::T::RSTD, bwd::T::dX, bwd::T::dW};
constexpr BwdIdx kBwdFused{add_bwd::T::dY, add_bwd::T::dS, add_bwd::T::S, add_bwd::T::W,
                           add_bwd::T::RSTD, add_bwd::T::dX, add_bwd::T::dW};
// Scalars: the plain and fused ops take the same ones, at the same positions.
static_assert(fwd::S::eps == add_fwd::S::eps && fwd::S::offset == add_fwd::S::offset &&
              fwd::S::casting_mode == add_fwd::S::casting_mode);
static_assert(bwd::S::offset == add_bwd::S::offset && bwd::S::casting_mode == add_bwd::S::casting_mode);
enum { kEps = fwd::S::eps, kOffset = fwd::S::offset, kCastMode = fwd::S::casting_mode };
enum { kBwdOffset = bwd::S::offset, kBwdCastMode = bwd::S::casting_mode };

constexpr RowKernelFamily kFamily{
    .fwd_prefix = "rms_norm_fwd",
    .bwd_prefix = "rms_norm_bwd",
    .fwd_max_iters = 8,  // rms_norm_fwd_i1..i8
    .bwd_max_iters = 4,  // rms_norm_bwd_i1..i4
    // The backward holds two tensors plus fp32 dW sums per vector, so fewer vectors per thread.
    .fwd_target_iters = 4,
    .bwd_target_iters = 2,
    .fwd_block_threads = 256,
    .bwd_block_threads = 512,
    .fwd_bounds = fwd::kBounds,
    .bwd_bounds = bwd::kBounds,
    // Two vectors per thread where a row fits i2's 256 threads (hidden 1025..4096 in 16-bit
    // types): the fastest measured forward shape there; wider rows keep i4 (docs/perf/rms_norm.md).
    .fwd_first_iters = 2,
};
constexpr RowKernelFamily kFusedFamily = [] {
  RowKernelFamily f = kFamily;
  // i2 where a row fits 256 threads, as the plain forward (its i2 kernel is not bounded to 256
  // threads, so fwd_first_max_threads says it): the tuner's pick (docs/perf/fused_add_rms_norm.md).
  f.fwd_first_iters = 2;
  f.fwd_bounds = add_fwd::kBounds;
  f.bwd_bounds = add_bwd::kBounds;
  return f;
}();
const RowKernelFamily& FamilyOf(bool fused) { return fused ? kFusedFamily : kFamily; }
constexpr const char* kWhyZero = "the RMS of nothing is undefined";

// Casting modes that compile to identical code share a variant: fp32 inputs round nothing,
// and the backward differs only in llama mode's dW (and not at all without a weight).
int EffectiveCast(bool backward, DType x, bool has_w, int mode) {
  if (x == DType::kFloat32) return kGemma;
  if (backward && (!has_w || mode == kNone)) return kGemma;
  return mode;
}

KernelVariant MakeVariant(bool backward, bool fused, DType x, bool has_w, DType w, int cast) {
  if (!has_w) w = x;
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x), ".w", has_w ? ShortName(w) : "none", ".",
                       kCastNames[cast]);
  v.defines = {absl::StrCat("LIGERD_RMS_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_RMS_ADD=", fused ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x)),
               absl::StrCat("LIGERD_WT=", DeviceTypeName(w)),
               absl::StrCat("LIGERD_HAS_W=", has_w ? 1 : 0), absl::StrCat("LIGERD_CAST=", cast)};
  return v;
}

std::vector<KernelVariant> AllVariants(bool backward, bool fused) {
  std::vector<KernelVariant> out;
  std::set<std::string> seen;
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    for (int wi = fused ? 1 : 0; wi < 3; ++wi) {  // the fused ops always have a weight
      const bool has_w = wi > 0;
      const DType w = wi == 2 ? DType::kFloat32 : x;
      if (wi == 2 && x == DType::kFloat32) continue;  // same as wi == 1
      for (int mode : {kLlama, kGemma, kNone}) {
        KernelVariant v =
            MakeVariant(backward, fused, x, has_w, w, EffectiveCast(backward, x, has_w, mode));
        if (seen.insert(v.tag).second) out.push_back(std::move(v));
      }
    }
  }
  return out;
}

absl::StatusOr<int> CastModeScalar(absl::string_view op, double v) {
  if (v != 0 && v != 1 && v != 2)
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": scalar 'casting_mode' is ", v, ", expected 0 (llama), 1 (gemma) or 2 (none)"));
  return static_cast<int>(v);
}

// ---- forward ------------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanForward(bool fused, const OpSpec& spec, const OpCall& call,
                                   const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const FwdIdx ix = fused ? kFwdFused : kFwdPlain;
  const TensorView& X = call.tensors[ix.x];
  const TensorView& W = call.tensors[ix.w];
  const TensorView& Y = call.tensors[ix.y];
  const TensorView& RS = call.tensors[ix.rstd];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm, kWhyZero));
  const int64_t n = xm.cols;
  const bool has_w = W.present();
  if (has_w) LIGERD_RETURN_IF_ERROR(CheckWeight(op, "W", W, n, X.dtype));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Y", Y, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "Y", ym));
  RowMatrix rm, sm;
  if (fused) {
    const TensorView& R = call.tensors[ix.r];
    const TensorView& S = call.tensors[ix.s];
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "R", R, "X", X));
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "S", S, "X", X));
    LIGERD_ASSIGN_OR_RETURN(rm, AsRows(op, "R", R));
    LIGERD_ASSIGN_OR_RETURN(sm, AsRows(op, "S", S));
    LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "S", sm));
  }
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "RSTD", RS, xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "eps", call.scalars[kEps]));
  if (call.scalars[kEps] < 0)
    return absl::InvalidArgumentError(absl::StrCat(op, ": scalar 'eps' must be >= 0"));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "offset", call.scalars[kOffset]));
  LIGERD_ASSIGN_OR_RETURN(int mode, CastModeScalar(op, call.scalars[kCastMode]));

  OpPlan plan;
  const DType wt = has_w ? W.dtype : X.dtype;
  plan.variant = MakeVariant(false, fused, X.dtype, has_w, wt, EffectiveCast(false, X.dtype, has_w, mode));
  if (xm.rows == 0) return plan;

  const int vec = RowVectorWidth(X.dtype);
  bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                RowsVectorizable(Y.data, ym, vec) && (!has_w || Aligned(W.data, kVectorAlign));
  if (fused)
    vec_ok = vec_ok && RowsVectorizable(call.tensors[ix.r].data, rm, vec) &&
             RowsVectorizable(call.tensors[ix.s].data, sm, vec);
  LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(FamilyOf(fused), op, false, call, xm.rows, n, X.dtype,
                                                    vec_ok, dev.sm_count));

  LigerdRmsNormFwdParams p{};
  p.x = X.data;
  p.w = has_w ? W.data : nullptr;
  p.y = Y.data;
  p.rstd = static_cast<float*>(RS.data);
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.y_stride = ym.row_stride;
  if (fused) {
    p.r = call.tensors[ix.r].data;
    p.s = call.tensors[ix.s].data;
    p.r_stride = rm.row_stride;
    p.s_stride = sm.row_stride;
  }
  p.n = static_cast<int>(n);
  p.eps = static_cast<float>(call.scalars[kEps]);
  p.offset = static_cast<float>(call.scalars[kOffset]);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, ForwardLaunch(FamilyOf(fused), op, plan.config, xm.rows, PackParams(p)));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- backward -----------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanBackward(bool fused, const OpSpec& spec, const OpCall& call,
                                    const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const BwdIdx ix = fused ? kBwdFused : kBwdPlain;
  const char* xname = fused ? "S" : "X";
  const TensorView& DY = call.tensors[ix.dy];
  const TensorView& X = call.tensors[ix.x];
  const TensorView& W = call.tensors[ix.w];
  const TensorView& RS = call.tensors[ix.rstd];
  const TensorView& DX = call.tensors[ix.dx];
  const TensorView& DW = call.tensors[ix.dw];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, xname, X));
  LIGERD_RETURN_IF_ERROR(CheckHidden(op, xm, kWhyZero));
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
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dY", DY, xname, X));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, xname, X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dym, AsRows(op, "dY", DY));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dxm, AsRows(op, "dX", DX));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, "dX", dxm));
  RowMatrix dsm;
  const bool has_ds = fused && call.tensors[ix.ds].present();
  if (has_ds) {
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dS", call.tensors[ix.ds], xname, X));
    LIGERD_ASSIGN_OR_RETURN(dsm, AsRows(op, "dS", call.tensors[ix.ds]));
  }
  LIGERD_RETURN_IF_ERROR(CheckRowStat(op, "RSTD", RS, xm.rows));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "offset", call.scalars[kBwdOffset]));
  LIGERD_ASSIGN_OR_RETURN(int mode, CastModeScalar(op, call.scalars[kBwdCastMode]));

  OpPlan plan;
  const DType wt = has_w ? W.dtype : X.dtype;
  plan.variant = MakeVariant(true, fused, X.dtype, has_w, wt, EffectiveCast(true, X.dtype, has_w, mode));

  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = n % vec == 0 && RowsVectorizable(X.data, xm, vec) &&
                      RowsVectorizable(DY.data, dym, vec) && RowsVectorizable(DX.data, dxm, vec) &&
                      (!has_ds || RowsVectorizable(call.tensors[ix.ds].data, dsm, vec)) &&
                      (!has_w || Aligned(W.data, kVectorAlign));
  int64_t grid = 0;
  if (xm.rows > 0) {
    LIGERD_ASSIGN_OR_RETURN(plan.config, ChooseConfig(FamilyOf(fused), op, true, call, xm.rows, n, X.dtype,
                                                      vec_ok, dev.sm_count));
    const LaunchConfig& c = plan.config;
    const unsigned smem = PartialStageBytes(c, X.dtype, has_dw);
    LIGERD_ASSIGN_OR_RETURN(grid, PersistentGrid(FamilyOf(fused), op, plan.variant, c, xm.rows, smem, dev));
    LigerdRmsNormBwdParams p{};
    p.dy = DY.data;
    p.x = X.data;
    p.w = has_w ? W.data : nullptr;
    p.rstd = static_cast<const float*>(RS.data);
    p.dx = DX.data;
    p.dw_partial = has_dw ? static_cast<float*>(call.workspace) : nullptr;
    p.ds = has_ds ? call.tensors[ix.ds].data : nullptr;
    p.rows = xm.rows;
    p.dy_stride = dym.row_stride;
    p.x_stride = xm.row_stride;
    p.dx_stride = dxm.row_stride;
    p.ds_stride = has_ds ? dsm.row_stride : 0;
    p.n = static_cast<int>(n);
    p.offset = static_cast<float>(call.scalars[kBwdOffset]);
    KernelLaunch k;
    k.kernel = RowKernelName(FamilyOf(fused), true, c);
    k.grid[0] = static_cast<unsigned>(grid);
    k.block[0] = static_cast<unsigned>(c.threads_per_row);
    k.block[1] = static_cast<unsigned>(c.rows_per_block);
    k.shared_bytes = smem;
    k.params = PackParams(p);
    plan.launches.push_back(std::move(k));
  }
  if (has_dw)  // dW = column sums of the partial rows; with no rows this writes zeros.
    LIGERD_RETURN_IF_ERROR(AddPartialReduce(op, "rms_norm_bwd_dw_reduce", call, grid, n, {DW.data}, &plan));
  return plan;
}

// ---- autotuning ---------------------------------------------------------------------------

// The common call: a weight of X's dtype, llama casting; the backward computes dW too (and, for
// the fused op, reads dS).
absl::StatusOr<TuningProblem> Problem(bool fused, bool backward, const TuningShape& shape) {
  const ScratchTensor x{true, shape.dtype, {shape.rows, shape.cols}, false};
  const ScratchTensor w{true, shape.dtype, {shape.cols}, false};
  const ScratchTensor rstd{true, DType::kFloat32, {shape.rows}, true};
  TuningProblem p;
  if (backward) {
    p.tensors = fused ? std::vector<ScratchTensor>{x, x, x, w, rstd, x, w}  // dY, dS, S, W, RSTD, dX, dW
                      : std::vector<ScratchTensor>{x, x, w, rstd, x, w};    // dY, X, W, RSTD, dX, dW
    p.scalars = {0.0, kLlama};  // offset, casting_mode
  } else {
    p.tensors = fused ? std::vector<ScratchTensor>{x, x, w, x, x, rstd}  // X, R, W, Y, S, RSTD
                      : std::vector<ScratchTensor>{x, w, x, rstd};       // X, W, Y, RSTD
    p.scalars = {1e-6, 0.0, kLlama};  // eps, offset, casting_mode
  }
  return p;
}

OpSpec MakeSpec(bool backward, bool fused) {
  OpSpec s = backward ? (fused ? add_bwd::BaseSpec() : bwd::BaseSpec())
                      : (fused ? add_fwd::BaseSpec() : fwd::BaseSpec());
  s.variants = AllVariants(backward, fused);
  if (backward)
    s.plan = [fused](const OpSpec& sp, const OpCall& c, const DeviceInfo& d) { return PlanBackward(fused, sp, c, d); };
  else
    s.plan = [fused](const OpSpec& sp, const OpCall& c, const DeviceInfo& d) { return PlanForward(fused, sp, c, d); };
  const int x_index = backward ? (fused ? kBwdFused.x : kBwdPlain.x) : kFwdPlain.x;
  s.candidates = [fused, backward, x_index, name = s.name](const OpCall& call, const DeviceInfo& dev) {
    return RowCandidates(FamilyOf(fused), backward, name, x_index, call, dev);
  };
  s.tuning_shape = RowTuningShape(x_index);
  s.tuning_problem = [fused, backward](const TuningShape& shape) { return Problem(fused, backward, shape); };
  return s;
}

}  // namespace

int RmsNormVectorWidth(DType x) { return RowVectorWidth(x); }

LaunchConfig RmsNormDefaultConfig(bool backward, int64_t rows, int64_t n, DType x, bool vectorized,
                                  int sm_count) {
  return RowDefaultConfig(kFamily, backward, rows, n, x, vectorized, sm_count);
}

absl::Status RmsNormCheckConfig(bool backward, const LaunchConfig& c, int64_t n, DType x,
                                bool vectorized_ok) {
  return RowCheckConfig(kFamily, backward, c, n, x, vectorized_ok);
}

std::string RmsNormKernelName(bool backward, const LaunchConfig& c) {
  return RowKernelName(kFamily, backward, c);
}

LIGERD_DEFINE_OP(rms_norm_fwd, MakeSpec(false, false))
LIGERD_DEFINE_OP(rms_norm_bwd, MakeSpec(true, false))
LIGERD_DEFINE_OP(fused_add_rms_norm_fwd, MakeSpec(false, true))
LIGERD_DEFINE_OP(fused_add_rms_norm_bwd, MakeSpec(true, true))

}  // namespace ligerd::kernels
