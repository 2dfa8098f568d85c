// The row-wise distillation losses, Liger-compatible (LigerKLDIVLoss, LigerJSD, LigerTVDLoss).
// Tensors, scalars and launch bounds: the entries (distill.toml); kernels and numerics:
// distill.cuh. This file: the variants (one module per op and dtype), the checks the entries
// cannot state, planning (one streaming kernel, one row group per block) and the tuning hooks.
//   kl_div_fwd [X, target, loss->]  scalars [log_target, reduction, eps]
//     X, target: [..., n], the same shape and dtype, rows at any pitch with a contiguous last dim.
//     loss: fp32; reduction 0 ("none"): X's shape, else [rows] (each row's sum; the caller
//     reduces). reduction 0..3 = none, sum, mean, batchmean (Liger's codes).
//   kl_div_bwd [target, G, dX->]  scalars [log_target, scale]
//     G: fp32, one element (the loss's gradient, times scale) or target's shape (elementwise).
//   jsd_fwd [X, Y, labels?, n_valid?, loss->, dX?->]  scalars [beta, ignore_index]
//     labels: int64 [rows] (any stride); n_valid: int64 [1], the count of labels != ignore_index
//     (the caller's; required with labels, refused without). loss: fp32 [rows], contiguous.
//   tvd_fwd [P, Q, labels?, n_valid?, loss->, grad?->]  scalars [reduction, ignore_index]
//     loss: fp32, P's shape for reduction 0, else [rows].
//   jsd_logits_fwd [student, teacher, labels?, scale, loss->, hard_loss?->, d_student?->]
//     scalars [beta, ignore_index, s_scale, t_scale, soft_coef, hard_coef]
//     student [rows, ns], teacher [rows, nt >= ns] of one dtype; scale fp32 [1] on the device;
//     loss fp32 [rows]; hard_loss (needs labels, s_scale 1 and ns == nt) fp32 [rows]; d_student
//     the student's shape and dtype (may be the student itself).
#include "kernels/ops/distill.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/distill_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/distill.h"
#include "kernels/ops/rowwise.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

using rowwise::CeilDiv;
using rowwise::CheckFinite;
using rowwise::CheckOutputRows;
using rowwise::PackParams;
using rowwise::RowsVectorizable;

namespace klf = entry::kl_div_fwd;
namespace klb = entry::kl_div_bwd;
namespace js = entry::jsd_fwd;
namespace tv = entry::tvd_fwd;
namespace jl = entry::jsd_logits_fwd;

// Every row group is one block: the grid's x dimension bounds the row groups.
constexpr int64_t kMaxGrid = 0x7fffffff;

// absl::string_view is not std::string_view here (validate.h's AsRows takes the latter).
std::string_view Sv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

absl::Status Invalid(absl::string_view op, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", msg));
}

KernelVariant MakeVariant(int which, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_DISTILL_OP=", which), absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

std::vector<KernelVariant> AllVariants(int which) {
  std::vector<KernelVariant> out;
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) out.push_back(MakeVariant(which, x));
  return out;
}

absl::StatusOr<int64_t> IntegralScalar(absl::string_view op, absl::string_view name, double v) {
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.0e15)
    return Invalid(op, absl::StrCat("scalar '", name, "' must be an integer, got ", v));
  return static_cast<int64_t>(v);
}

absl::StatusOr<int> Flag(absl::string_view op, absl::string_view name, double v) {
  LIGERD_ASSIGN_OR_RETURN(int64_t f, IntegralScalar(op, name, v));
  if (f != 0 && f != 1) return Invalid(op, absl::StrCat("scalar '", name, "' must be 0 or 1, got ", f));
  return static_cast<int>(f);
}

absl::StatusOr<int> Reduction(absl::string_view op, double v) {
  LIGERD_ASSIGN_OR_RETURN(int64_t r, IntegralScalar(op, "reduction", v));
  if (r < LIGERD_DISTILL_REDUCE_NONE || r > LIGERD_DISTILL_REDUCE_BATCHMEAN)
    return Invalid(op, absl::StrCat("scalar 'reduction' must be 0 (none), 1 (sum), 2 (mean) or 3 "
                                    "(batchmean), got ", r));
  return static_cast<int>(r);
}

// The main input as rows: a row of at least one element (when there are rows), at most
// rowwise::kMaxHidden, and few enough row groups for the grid.
absl::StatusOr<RowMatrix> MainRows(absl::string_view op, absl::string_view name, const TensorView& t) {
  LIGERD_ASSIGN_OR_RETURN(RowMatrix m, AsRows(Sv(op), Sv(name), t));
  if (m.rows > 0 && m.cols == 0)
    return Invalid(op, absl::StrCat("tensor '", name, "' has rows but an empty last dim (a distribution over no classes)"));
  if (m.cols > rowwise::kMaxHidden)
    return Invalid(op, absl::StrCat("tensor '", name, "' has rows of ", m.cols, " elements, more than the supported ",
                                    rowwise::kMaxHidden));
  if (m.rows > kMaxGrid)
    return Invalid(op, absl::StrCat("tensor '", name, "' has ", m.rows, " rows, more than the supported ", kMaxGrid));
  return m;
}

// `t` has the sizes of `ref` (any dtype: the fp32 loss of a 16-bit input).
absl::Status CheckSameSizes(absl::string_view op, absl::string_view name, const TensorView& t,
                            absl::string_view ref_name, const TensorView& ref) {
  bool same = t.ndim == ref.ndim;
  for (int d = 0; same && d < t.ndim; ++d) same = t.sizes[d] == ref.sizes[d];
  if (!same)
    return Invalid(op, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t), ", expected ", ShapeString(ref),
                                    " (", ref_name, "'s)"));
  return absl::OkStatus();
}

// A 1-D tensor of n elements, contiguous unless any_stride; returns its stride.
absl::StatusOr<int64_t> Check1D(absl::string_view op, absl::string_view name, const TensorView& t, int64_t n,
                                absl::string_view what, bool any_stride = false) {
  if (t.ndim != 1 || t.sizes[0] != n)
    return Invalid(op, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t), ", expected [", n, "] (", what,
                                    ")"));
  if (!any_stride && n > 1 && t.strides[0] != 1)
    return Invalid(op, absl::StrCat("tensor '", name, "' must be contiguous, got stride ", t.strides[0]));
  return n > 1 ? t.strides[0] : 1;
}

// labels and n_valid: both present (rows may be ignored) or both absent. Returns labels' stride.
absl::StatusOr<int64_t> CheckLabels(absl::string_view op, const TensorView& labels, const TensorView& n_valid,
                                    int64_t rows) {
  if (!labels.present()) {
    if (n_valid.present())
      return Invalid(op, "tensor 'n_valid' is given without 'labels' (the count of non-ignored labels; without "
                         "labels every row counts)");
    return 0;
  }
  if (!n_valid.present())
    return Invalid(op, "tensor 'labels' needs 'n_valid' (the count of labels != ignore_index)");
  LIGERD_RETURN_IF_ERROR(Check1D(op, "n_valid", n_valid, 1, "one count").status());
  return Check1D(op, "labels", labels, rows, "one label per row", true);
}

// A [rows, n]-shaped output of the main input's shape: rows that do not overlap.
absl::StatusOr<RowMatrix> OutputRows(absl::string_view op, absl::string_view name, const TensorView& t) {
  LIGERD_ASSIGN_OR_RETURN(RowMatrix m, AsRows(Sv(op), Sv(name), t));
  LIGERD_RETURN_IF_ERROR(CheckOutputRows(op, name, m));
  return m;
}

// The default config, or the tuned one after checking it; then the launch of one block per
// row group of "<op>_v" / "<op>_s".
absl::StatusOr<KernelLaunch> RowLaunch(absl::string_view op, std::span<const LaunchBound> bounds,
                                       const OpCall& call, int64_t rows, int64_t n, DType x, bool vec_ok,
                                       std::vector<uint8_t> params, LaunchConfig* config) {
  const int max_threads = SmallestBound(bounds);
  LaunchConfig c = DistillDefaultConfig(n, x, vec_ok);
  if (call.tuned != nullptr) {
    absl::Status s = DistillCheckConfig(*call.tuned, max_threads, vec_ok);
    if (!s.ok()) return Invalid(op, absl::StrCat("tuned config: ", s.message()));
    c = *call.tuned;
  }
  const int64_t groups = CeilDiv(rows, c.rows_per_block);
  if (groups > kMaxGrid) return Invalid(op, absl::StrCat(rows, " rows need more than ", kMaxGrid, " blocks"));
  // c.grid stays 0: one block per row group is the only grid these kernels take.
  KernelLaunch k;
  k.kernel = DistillKernelName(std::string(op), c.vectorized);
  k.grid[0] = static_cast<unsigned>(groups);
  k.block[0] = static_cast<unsigned>(c.threads_per_row);
  k.block[1] = static_cast<unsigned>(c.rows_per_block);
  k.params = std::move(params);
  *config = c;
  return k;
}

// ---- kl_div_fwd -----------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanKlFwd(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const TensorView& X = call.tensors[klf::T::X];
  const TensorView& T = call.tensors[klf::T::target];
  const TensorView& L = call.tensors[klf::T::loss];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, MainRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "target", T, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix tm, AsRows(op, "target", T));
  LIGERD_ASSIGN_OR_RETURN(int log_target, Flag(op, "log_target", call.scalars[klf::S::log_target]));
  LIGERD_ASSIGN_OR_RETURN(int reduction, Reduction(op, call.scalars[klf::S::reduction]));
  const double eps = call.scalars[klf::S::eps];
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "eps", eps));
  if (eps < 0) return Invalid(op, absl::StrCat("scalar 'eps' must be >= 0, got ", eps));
  const bool elementwise = reduction == LIGERD_DISTILL_REDUCE_NONE;
  RowMatrix lm{xm.rows, 1, 1};
  if (elementwise) {
    LIGERD_RETURN_IF_ERROR(CheckSameSizes(op, "loss", L, "X", X));
    LIGERD_ASSIGN_OR_RETURN(lm, OutputRows(op, "loss", L));
  } else {
    LIGERD_RETURN_IF_ERROR(Check1D(op, "loss", L, xm.rows, "one sum per row of X").status());
  }

  OpPlan plan;
  plan.variant = MakeVariant(LIGERD_DISTILL_KL_FWD, X.dtype);
  if (xm.rows == 0) return plan;
  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = xm.cols % vec == 0 && RowsVectorizable(X.data, xm, vec) && RowsVectorizable(T.data, tm, vec) &&
                      (!elementwise || RowsVectorizable(L.data, lm, vec));
  LigerdKlDivFwdParams p{};
  p.x = X.data;
  p.t = T.data;
  p.loss = static_cast<float*>(L.data);
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.t_stride = tm.row_stride;
  p.loss_stride = elementwise ? lm.row_stride : 1;
  p.n = static_cast<int>(xm.cols);
  p.log_target = log_target;
  p.elementwise = elementwise ? 1 : 0;
  p.eps = static_cast<float>(eps);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowLaunch(op, klf::kBounds, call, xm.rows, xm.cols, X.dtype, vec_ok,
                                                    PackParams(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- kl_div_bwd -----------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanKlBwd(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const TensorView& T = call.tensors[klb::T::target];
  const TensorView& G = call.tensors[klb::T::G];
  const TensorView& DX = call.tensors[klb::T::dX];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix tm, MainRows(op, "target", T));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "target", T));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dm, OutputRows(op, "dX", DX));
  LIGERD_ASSIGN_OR_RETURN(int log_target, Flag(op, "log_target", call.scalars[klb::S::log_target]));
  const double scale = call.scalars[klb::S::scale];
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "scale", scale));
  // One gradient for the whole loss, or one per element of T (reduction "none").
  const bool elementwise = NumElements(G) != 1;
  RowMatrix gm{tm.rows, 1, 0};
  if (elementwise) {
    if (absl::Status s = CheckSameSizes(op, "G", G, "target", T); !s.ok())
      return Invalid(op, absl::StrCat("tensor 'G' has shape ", ShapeString(G), ", expected one element (the loss's "
                                      "gradient) or target's shape ", ShapeString(T), " (reduction none)"));
    LIGERD_ASSIGN_OR_RETURN(gm, AsRows(op, "G", G));
  }

  OpPlan plan;
  plan.variant = MakeVariant(LIGERD_DISTILL_KL_BWD, T.dtype);
  if (tm.rows == 0) return plan;
  const int vec = RowVectorWidth(T.dtype);
  const bool vec_ok = tm.cols % vec == 0 && RowsVectorizable(T.data, tm, vec) && RowsVectorizable(DX.data, dm, vec) &&
                      (!elementwise || RowsVectorizable(G.data, gm, vec));
  LigerdKlDivBwdParams p{};
  p.t = T.data;
  p.g = static_cast<const float*>(G.data);
  p.dx = DX.data;
  p.rows = tm.rows;
  p.t_stride = tm.row_stride;
  p.g_stride = elementwise ? gm.row_stride : 0;
  p.dx_stride = dm.row_stride;
  p.n = static_cast<int>(tm.cols);
  p.log_target = log_target;
  p.elementwise = elementwise ? 1 : 0;
  p.scale = static_cast<float>(scale);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowLaunch(op, klb::kBounds, call, tm.rows, tm.cols, T.dtype, vec_ok,
                                                    PackParams(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- jsd_fwd --------------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanJsd(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& X = t[js::T::X];
  const TensorView& Y = t[js::T::Y];
  const TensorView& DX = t[js::T::dX];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, MainRows(op, "X", X));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Y", Y, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix ym, AsRows(op, "Y", Y));
  LIGERD_ASSIGN_OR_RETURN(int64_t labels_stride, CheckLabels(op, t[js::T::labels], t[js::T::n_valid], xm.rows));
  LIGERD_RETURN_IF_ERROR(Check1D(op, "loss", t[js::T::loss], xm.rows, "one loss per row of X").status());
  RowMatrix dm = xm;
  if (DX.present()) {
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "X", X));
    LIGERD_ASSIGN_OR_RETURN(dm, OutputRows(op, "dX", DX));
  }
  const double beta = call.scalars[js::S::beta];
  if (!(beta >= 0.0 && beta <= 1.0)) return Invalid(op, absl::StrCat("scalar 'beta' must be in [0, 1], got ", beta));
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", call.scalars[js::S::ignore_index]));

  OpPlan plan;
  plan.variant = MakeVariant(LIGERD_DISTILL_JSD, X.dtype);
  if (xm.rows == 0) return plan;
  const int vec = RowVectorWidth(X.dtype);
  const bool vec_ok = xm.cols % vec == 0 && RowsVectorizable(X.data, xm, vec) && RowsVectorizable(Y.data, ym, vec) &&
                      (!DX.present() || RowsVectorizable(DX.data, dm, vec));
  LigerdJsdParams p{};
  p.x = X.data;
  p.y = Y.data;
  p.labels = static_cast<const long long*>(t[js::T::labels].data);
  p.n_valid = static_cast<const long long*>(t[js::T::n_valid].data);
  p.loss = static_cast<float*>(t[js::T::loss].data);
  p.dx = DX.data;
  p.rows = xm.rows;
  p.x_stride = xm.row_stride;
  p.y_stride = ym.row_stride;
  p.dx_stride = dm.row_stride;
  p.labels_stride = labels_stride;
  p.ignore_index = ignore;
  p.n = static_cast<int>(xm.cols);
  p.beta = static_cast<float>(beta);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowLaunch(op, js::kBounds, call, xm.rows, xm.cols, X.dtype, vec_ok,
                                                    PackParams(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- tvd_fwd --------------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanTvd(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& P = t[tv::T::P];
  const TensorView& Q = t[tv::T::Q];
  const TensorView& L = t[tv::T::loss];
  const TensorView& G = t[tv::T::grad];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix pm, MainRows(op, "P", P));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "Q", Q, "P", P));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix qm, AsRows(op, "Q", Q));
  LIGERD_ASSIGN_OR_RETURN(int64_t labels_stride, CheckLabels(op, t[tv::T::labels], t[tv::T::n_valid], pm.rows));
  LIGERD_ASSIGN_OR_RETURN(int reduction, Reduction(op, call.scalars[tv::S::reduction]));
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", call.scalars[tv::S::ignore_index]));
  const bool elementwise = reduction == LIGERD_DISTILL_REDUCE_NONE;
  RowMatrix lm{pm.rows, 1, 1};
  if (elementwise) {
    LIGERD_RETURN_IF_ERROR(CheckSameSizes(op, "loss", L, "P", P));
    LIGERD_ASSIGN_OR_RETURN(lm, OutputRows(op, "loss", L));
  } else {
    LIGERD_RETURN_IF_ERROR(Check1D(op, "loss", L, pm.rows, "one loss per row of P").status());
  }
  RowMatrix gm = pm;
  if (G.present()) {
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "grad", G, "P", P));
    LIGERD_ASSIGN_OR_RETURN(gm, OutputRows(op, "grad", G));
  }

  OpPlan plan;
  plan.variant = MakeVariant(LIGERD_DISTILL_TVD, P.dtype);
  if (pm.rows == 0) return plan;
  const int vec = RowVectorWidth(P.dtype);
  const bool vec_ok = pm.cols % vec == 0 && RowsVectorizable(P.data, pm, vec) && RowsVectorizable(Q.data, qm, vec) &&
                      (!G.present() || RowsVectorizable(G.data, gm, vec)) &&
                      (!elementwise || RowsVectorizable(L.data, lm, vec));
  LigerdTvdParams p{};
  p.p = P.data;
  p.q = Q.data;
  p.labels = static_cast<const long long*>(t[tv::T::labels].data);
  p.n_valid = static_cast<const long long*>(t[tv::T::n_valid].data);
  p.loss = static_cast<float*>(L.data);
  p.grad = G.data;
  p.rows = pm.rows;
  p.p_stride = pm.row_stride;
  p.q_stride = qm.row_stride;
  p.loss_stride = elementwise ? lm.row_stride : 1;
  p.grad_stride = gm.row_stride;
  p.labels_stride = labels_stride;
  p.ignore_index = ignore;
  p.n = static_cast<int>(pm.cols);
  p.reduction = reduction;
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowLaunch(op, tv::kBounds, call, pm.rows, pm.cols, P.dtype, vec_ok,
                                                    PackParams(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- jsd_logits_fwd -------------------------------------------------------------------------

absl::StatusOr<OpPlan> PlanJsdLogits(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& S = t[jl::T::student];
  const TensorView& T = t[jl::T::teacher];
  const TensorView& labels = t[jl::T::labels];
  const TensorView& H = t[jl::T::hard_loss];
  const TensorView& DS = t[jl::T::d_student];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix sm, MainRows(op, "student", S));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix tm, MainRows(op, "teacher", T));
  if (S.ndim != 2 || T.ndim != 2)
    return Invalid(op, absl::StrCat("tensors 'student' and 'teacher' must be 2-D [rows, n], got ", ShapeString(S), " and ",
                                    ShapeString(T)));
  if (T.dtype != S.dtype) return Invalid(op, "tensor 'teacher' must have the student's dtype");
  if (tm.rows != sm.rows)
    return Invalid(op, absl::StrCat("tensor 'teacher' has ", tm.rows, " rows, 'student' ", sm.rows));
  if (tm.cols < sm.cols)
    return Invalid(op, absl::StrCat("tensor 'teacher' has ", tm.cols, " columns, fewer than the student's ", sm.cols,
                                    " (the student is padded to the teacher's vocabulary, not the reverse)"));
  int64_t labels_stride = 0;
  if (labels.present()) {
    LIGERD_ASSIGN_OR_RETURN(labels_stride, Check1D(op, "labels", labels, sm.rows, "one label per row", true));
  }
  LIGERD_RETURN_IF_ERROR(Check1D(op, "scale", t[jl::T::scale], 1, "the gradient's factor").status());
  LIGERD_RETURN_IF_ERROR(Check1D(op, "loss", t[jl::T::loss], sm.rows, "one loss per row").status());
  const double beta = call.scalars[jl::S::beta];
  if (!(beta >= 0.0 && beta <= 1.0)) return Invalid(op, absl::StrCat("scalar 'beta' must be in [0, 1], got ", beta));
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", call.scalars[jl::S::ignore_index]));
  const double s_scale = call.scalars[jl::S::s_scale], t_scale = call.scalars[jl::S::t_scale];
  const double soft = call.scalars[jl::S::soft_coef], hard = call.scalars[jl::S::hard_coef];
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "s_scale", s_scale));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "t_scale", t_scale));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "soft_coef", soft));
  LIGERD_RETURN_IF_ERROR(CheckFinite(op, "hard_coef", hard));
  if (H.present()) {
    if (!labels.present()) return Invalid(op, "tensor 'hard_loss' needs 'labels' (the hard loss's targets)");
    if (s_scale != 1.0 || sm.cols != tm.cols)
      return Invalid(op, absl::StrCat("tensor 'hard_loss' needs s_scale 1 and the student as wide as the teacher (one softmax for both "
                                      "losses), got s_scale ", s_scale, ", ", sm.cols, " and ", tm.cols, " columns"));
    LIGERD_RETURN_IF_ERROR(Check1D(op, "hard_loss", H, sm.rows, "one loss per row").status());
  }
  RowMatrix dm = sm;
  if (DS.present()) {
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "d_student", DS, "student", S));
    LIGERD_ASSIGN_OR_RETURN(dm, OutputRows(op, "d_student", DS));
  }

  OpPlan plan;
  plan.variant = MakeVariant(LIGERD_DISTILL_JSD_LOGITS, S.dtype);
  if (sm.rows == 0) return plan;
  const int vec = RowVectorWidth(S.dtype);
  const bool vec_ok = sm.cols % vec == 0 && tm.cols % vec == 0 && RowsVectorizable(S.data, sm, vec) &&
                      RowsVectorizable(T.data, tm, vec) && (!DS.present() || RowsVectorizable(DS.data, dm, vec));
  LigerdJsdLogitsParams p{};
  p.s = S.data;
  p.t = T.data;
  p.labels = static_cast<const long long*>(labels.data);
  p.scale = static_cast<const float*>(t[jl::T::scale].data);
  p.loss = static_cast<float*>(t[jl::T::loss].data);
  p.hard_loss = static_cast<float*>(H.data);
  p.ds = DS.data;
  p.rows = sm.rows;
  p.s_stride = sm.row_stride;
  p.t_stride = tm.row_stride;
  p.ds_stride = dm.row_stride;
  p.labels_stride = labels_stride;
  p.ignore_index = ignore;
  p.ns = static_cast<int>(sm.cols);
  p.nt = static_cast<int>(tm.cols);
  p.beta = static_cast<float>(beta);
  p.s_scale = static_cast<float>(s_scale);
  p.t_scale = static_cast<float>(t_scale);
  p.soft_coef = static_cast<float>(soft);
  p.hard_coef = static_cast<float>(hard);
  // The launch is sized by the teacher's row, the longer one every pass but the last streams.
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k, RowLaunch(op, jl::kBounds, call, sm.rows, tm.cols, S.dtype, vec_ok,
                                                    PackParams(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

// ---- autotuning ------------------------------------------------------------------------------

// Launch shapes worth timing for a call: threads a row from 1 to 1024 (powers of two, up to twice
// what one vector a thread needs), blocks of 128..1024 threads (rows packed when a row takes
// fewer), the access width the default plan chose (the call decides whether 16-byte accesses are
// legal). Empty when the call does not plan or has no rows.
std::vector<LaunchConfig> Candidates(const std::string& op, int x_index, std::span<const LaunchBound> bounds,
                                     const OpCall& call, const DeviceInfo& dev) {
  std::vector<LaunchConfig> out;
  const OpSpec* spec = FindOp(op);
  if (spec == nullptr) return out;
  OpCall plain = call;
  plain.tuned = nullptr;
  absl::StatusOr<OpPlan> base = spec->plan(*spec, plain, dev);
  if (!base.ok() || base->launches.empty()) return out;
  const TensorView& x = call.tensors[x_index];
  const int64_t n = x.sizes[x.ndim - 1];
  const bool vec = base->config.vectorized;
  const int64_t nvec = vec ? CeilDiv(n, RowVectorWidth(x.dtype)) : n;
  const int max_threads = SmallestBound(bounds);
  for (int tpr = 1; tpr <= 1024 && tpr <= 2 * NextPow2Saturating(nvec); tpr *= 2)
    for (int block : {128, 256, 512, 1024}) {
      if (block < tpr || block > max_threads) continue;
      LaunchConfig c;
      c.threads_per_row = tpr;
      c.rows_per_block = block / tpr;
      c.vectorized = vec;
      if (DistillCheckConfig(c, max_threads, vec).ok()) out.push_back(c);
    }
  return out;
}

// A representative call of each op for a TuningShape (fresh contiguous scratch tensors; values
// in [-2, 2)): no labels, reduction batchmean (a row sum), the gradient written.
absl::StatusOr<TuningProblem> Problem(int which, const TuningShape& shape) {
  const ScratchTensor rows_n{true, shape.dtype, {shape.rows, shape.cols}, false};
  const ScratchTensor absent{false, DType::kInt64, {}, false};
  const ScratchTensor row_f32{true, DType::kFloat32, {shape.rows}, false};
  TuningProblem p;
  switch (which) {
    case LIGERD_DISTILL_KL_FWD:
      p.tensors = {rows_n, rows_n, row_f32};
      p.scalars = {0.0, LIGERD_DISTILL_REDUCE_BATCHMEAN, 1e-10};
      break;
    case LIGERD_DISTILL_KL_BWD:
      p.tensors = {rows_n, {true, DType::kFloat32, {1}, false}, rows_n};
      p.scalars = {0.0, 1.0};
      break;
    case LIGERD_DISTILL_JSD:
      p.tensors = {rows_n, rows_n, absent, absent, row_f32, rows_n};
      p.scalars = {0.5, -100.0};
      break;
    case LIGERD_DISTILL_JSD_LOGITS:
      p.tensors = {rows_n, rows_n, absent, {true, DType::kFloat32, {1}, false}, row_f32, absent, rows_n};
      p.scalars = {0.5, -100.0, 1.0, 1.0, 1.0, 0.0};
      break;
    default:
      p.tensors = {rows_n, rows_n, absent, absent, row_f32, rows_n};
      p.scalars = {LIGERD_DISTILL_REDUCE_BATCHMEAN, -100.0};
      break;
  }
  return p;
}

OpSpec WithPlan(OpSpec s, int which, int x_index, std::span<const LaunchBound> bounds,
                absl::StatusOr<OpPlan> (*plan)(const OpSpec&, const OpCall&, const DeviceInfo&)) {
  s.variants = AllVariants(which);
  s.plan = plan;
  s.candidates = [name = s.name, x_index, bounds](const OpCall& call, const DeviceInfo& dev) {
    return Candidates(name, x_index, bounds, call, dev);
  };
  s.tuning_shape = RowTuningShape(x_index);
  s.tuning_problem = [which](const TuningShape& shape) { return Problem(which, shape); };
  return s;
}

}  // namespace

LaunchConfig DistillDefaultConfig(int64_t n, DType x, bool vectorized) {
  LaunchConfig c;
  c.vectorized = vectorized;
  c.iters = 0;
  const int64_t nvec = std::max<int64_t>(vectorized ? CeilDiv(n, RowVectorWidth(x)) : n, 1);
  const int64_t want = NextPow2Saturating(CeilDiv(nvec, kDistillVectorsPerThread));
  c.threads_per_row = static_cast<int>(std::min<int64_t>(want, kDistillMaxDefaultThreads));
  c.rows_per_block = std::max(1, kDistillBlockThreads / c.threads_per_row);
  return c;
}

absl::Status DistillCheckConfig(const LaunchConfig& c, int max_threads, bool vectorized_ok) {
  const int tpr = c.threads_per_row, rpb = c.rows_per_block;
  if (c.vectorized && !vectorized_ok)
    return absl::InvalidArgumentError("vectorized access needs n and row strides divisible by the vector width and "
                                      "16-byte aligned pointers");
  if (tpr < 1 || tpr > 1024 || (tpr <= 32 ? (tpr & (tpr - 1)) != 0 : tpr % 32 != 0))
    return absl::InvalidArgumentError(
        absl::StrCat("threads_per_row ", tpr, " must be a power of two <= 32 or a multiple of 32 <= 1024"));
  if (rpb < 1 || int64_t{tpr} * rpb > max_threads || (int64_t{tpr} * rpb) % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat("block of ", tpr, " x ", rpb, " threads must be whole warps, at most ",
                                                   max_threads));
  if (c.iters != 0) return absl::InvalidArgumentError("the distillation kernels stream rows (iters 0)");
  if (c.cluster != 1 || c.shared_bytes != 0)
    return absl::InvalidArgumentError("the distillation kernels take no cluster and no dynamic shared memory");
  return absl::OkStatus();
}

std::string DistillKernelName(const std::string& op, bool vectorized) {
  return absl::StrCat(op, vectorized ? "_v" : "_s");
}

LIGERD_DEFINE_OP(kl_div_fwd, WithPlan(klf::BaseSpec(), LIGERD_DISTILL_KL_FWD, klf::T::X, klf::kBounds, PlanKlFwd))
LIGERD_DEFINE_OP(kl_div_bwd, WithPlan(klb::BaseSpec(), LIGERD_DISTILL_KL_BWD, klb::T::target, klb::kBounds, PlanKlBwd))
LIGERD_DEFINE_OP(jsd_fwd, WithPlan(js::BaseSpec(), LIGERD_DISTILL_JSD, js::T::X, js::kBounds, PlanJsd))
LIGERD_DEFINE_OP(jsd_logits_fwd,
                 WithPlan(jl::BaseSpec(), LIGERD_DISTILL_JSD_LOGITS, jl::T::student, jl::kBounds, PlanJsdLogits))
LIGERD_DEFINE_OP(tvd_fwd, WithPlan(tv::BaseSpec(), LIGERD_DISTILL_TVD, tv::T::P, tv::kBounds, PlanTvd))

}  // namespace ligerd::kernels
