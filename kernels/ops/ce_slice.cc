// Vocabulary-sliced cross-entropy: the two per-slice steps of the fused linear cross-entropy's
// sliced path. Tensors, scalars and launch bounds: the entries (ce_slice.toml); kernels and
// numerics: ce_slice.cuh; semantics: python_client/ligerd/testing/reference/ce_slice.py. This
// file: the variants (one per logits dtype and kernel), the checks the entries cannot state, and
// planning.
// ce_slice_stats [X, target, weight?, stats->, idx?->] (v0, first, softcap)
//   X: [rows, n] fp32/bf16/fp16, the logits of classes [v0, v0 + n): unit last stride, any row
//   stride >= n (a column slice of a wider logits buffer). target: int64 [rows] contiguous.
//   weight: fp32 [V] contiguous, V >= v0 + n. stats: fp32 [rows, 4] contiguous. idx: int64
//   [rows] contiguous. v0: integer >= 0; first: 0 (update) or 1 (initialise); softcap: 0 = none,
//   else > 0 and finite.
// ce_slice_grad [X, target, weight?, coef, dX->] (v0, softcap, ignore_index)
//   X, target, weight, v0, softcap as above; coef: fp32 [rows, 4] contiguous; dX: X's shape and
//   dtype, its own row stride >= n, or exactly X (in place; any other overlap is refused by the
//   generic checks, validate.cc). ignore_index: an integer.
// No tuning hooks: both kernels stream the slice once (stats) or read and write it once (grad),
// one block per row, and the GEMM that produced the slice costs ~15x more (ce_slice.cuh); a
// block size or grid search would move a few percent of a few percent. The ops are simply never
// tuned (OpSpec::candidates left empty, as gemm and cross_entropy_scale).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/catalogue.h"
#include "kernels/ops/ce_slice_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/ce_slice.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

namespace st = entry::ce_slice_stats;
namespace gr = entry::ce_slice_grad;

enum Part { kStats = 0, kGrad = 1 };

// 256 threads per block: a row of the sliced sweep's default 16384-class bf16 slice is 2048
// 16-byte vectors, 8 per thread (a 4096-class one 2), and 8 warps are enough to hide the block reduction's barrier while several blocks share an SM
// (one block's barrier stalls only its own warps).
constexpr int kBlockThreads = 256;
static_assert(kBlockThreads % 32 == 0, "the kernels reduce over whole warps");
static_assert(kBlockThreads <= MaxThreadsOf(st::kBounds, "stats"), "ce_slice.toml bounds the stats kernel");
static_assert(kBlockThreads <= MaxThreadsOf(gr::kBounds, "grad"), "ce_slice.toml bounds the grad kernel");
// Resident blocks per SM assumed without an occupancy oracle (tests): 2048 threads per SM on
// sm_80 / sm_90 hold 8 blocks of 256.
constexpr int kFallbackBlocksPerSm = 2048 / kBlockThreads;
// The most CUDA grid.x the planner asks for (the kernels loop over the rows past it).
constexpr int64_t kMaxGrid = 0x7fffffff;

const char* KernelName(Part part) { return part == kStats ? "ce_slice_stats" : "ce_slice_grad"; }

KernelVariant MakeVariant(Part part, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_CE_SLICE_PART=", static_cast<int>(part)),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

absl::Status Invalid(absl::string_view op, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", msg));
}

// X (or dX): 2-D [rows, n], unit last stride, rows that do not overlap (row stride >= n; the
// kernels write dX row by row and may write it over X). n >= 1 when there are rows: a slice of
// no classes has no statistics.
absl::StatusOr<RowMatrix> CheckLogits(absl::string_view op, absl::string_view name, const TensorView& t) {
  if (t.ndim != 2)
    return Invalid(op, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t),
                                    ", expected 2-D [rows, n] (the logits of one slice of classes)"));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix m, AsRows(std::string(op), std::string(name), t));
  if (m.rows > 1 && m.row_stride < m.cols)
    return Invalid(op, absl::StrCat("tensor '", name, "' has overlapping rows (row stride ", m.row_stride,
                                    " < ", m.cols, " columns)"));
  if (m.rows > 0 && m.cols == 0)
    return Invalid(op, absl::StrCat("tensor '", name, "' has rows but no classes (a slice of width 0)"));
  return m;
}

// A contiguous tensor of exactly `sizes` (1-D [rows] or 2-D [rows, 4]).
absl::Status CheckDense(absl::string_view op, absl::string_view name, const TensorView& t,
                        std::initializer_list<int64_t> sizes, absl::string_view what) {
  bool ok = t.ndim == static_cast<int>(sizes.size());
  int d = 0;
  for (int64_t s : sizes) ok = ok && t.sizes[d++] == s;
  if (!ok) {
    std::string want;
    for (int64_t s : sizes) absl::StrAppend(&want, want.empty() ? "" : ", ", s);
    return Invalid(op, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t), ", expected [", want,
                                    "] (", what, ")"));
  }
  if (!IsContiguous(t))
    return Invalid(op, absl::StrCat("tensor '", name, "' must be contiguous; make it contiguous"));
  return absl::OkStatus();
}

// weight, when given: fp32 [V] contiguous with V >= v0 + n (the kernels read weight[v0 + j]).
absl::Status CheckWeight(absl::string_view op, const TensorView& w, int64_t v0, int64_t n) {
  if (!w.present()) return absl::OkStatus();
  if (w.ndim != 1)
    return Invalid(op, absl::StrCat("tensor 'weight' has shape ", ShapeString(w), ", expected 1-D [V] (class weights)"));
  if (w.sizes[0] > 1 && w.strides[0] != 1)
    return Invalid(op, absl::StrCat("tensor 'weight' must be contiguous, got stride ", w.strides[0]));
  if (w.sizes[0] - n < v0)  // no overflow: both sizes are in [0, 2^62]
    return Invalid(op, absl::StrCat("tensor 'weight' has ", w.sizes[0], " classes, fewer than v0 + n = ", v0, " + ",
                                    n, " (the slice's classes)"));
  return absl::OkStatus();
}

// An integer scalar, |v| <= 9e15 (doubles hold every integer up to 2^53).
absl::StatusOr<int64_t> IntegralScalar(absl::string_view op, absl::string_view name, double v) {
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.0e15)
    return Invalid(op, absl::StrCat("scalar '", name, "' must be an integer, got ", v));
  return static_cast<int64_t>(v);
}

absl::StatusOr<int64_t> SliceStart(absl::string_view op, double v) {
  LIGERD_ASSIGN_OR_RETURN(int64_t v0, IntegralScalar(op, "v0", v));
  if (v0 < 0) return Invalid(op, absl::StrCat("scalar 'v0' (the slice's first class) must be >= 0, got ", v0));
  return v0;
}

absl::StatusOr<float> Softcap(absl::string_view op, double v) {
  if (!(v >= 0.0) || !std::isfinite(v))
    return Invalid(op, absl::StrCat("scalar 'softcap' must be > 0 (or 0 for none) and finite, got ", v));
  return static_cast<float>(v);
}

// One block per row, a persistent grid of as many blocks as are resident at once (the kernels
// loop over the rows past it).
absl::StatusOr<KernelLaunch> RowLaunch(const std::string& op, Part part, const KernelVariant& variant,
                                       const DeviceInfo& dev, int64_t rows, const void* params, size_t size,
                                       LaunchConfig* config) {
  const char* kernel = KernelName(part);
  int per_sm = kFallbackBlocksPerSm;
  if (dev.blocks_per_sm) {
    LIGERD_ASSIGN_OR_RETURN(per_sm, dev.blocks_per_sm(op, variant, kernel, kBlockThreads, 0));
  }
  if (per_sm <= 0)
    return absl::InternalError(absl::StrCat(op, ": kernel ", kernel, " cannot run with ", kBlockThreads, " threads"));
  const int64_t grid = std::min<int64_t>({rows, int64_t{std::max(dev.sm_count, 1)} * per_sm, kMaxGrid});
  config->threads_per_row = kBlockThreads;
  config->rows_per_block = 1;
  config->iters = 0;
  config->vectorized = true;
  config->grid = static_cast<int>(grid);
  KernelLaunch k;
  k.kernel = kernel;
  k.grid[0] = static_cast<unsigned>(grid);
  k.block[0] = kBlockThreads;
  k.params.resize(size);
  std::memcpy(k.params.data(), params, size);
  return k;
}

absl::StatusOr<OpPlan> PlanStats(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& X = t[st::T::X];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, CheckLogits(op, "X", X));
  const int64_t rows = xm.rows, n = xm.cols;
  LIGERD_ASSIGN_OR_RETURN(int64_t v0, SliceStart(op, call.scalars[st::S::v0]));
  LIGERD_ASSIGN_OR_RETURN(int64_t first, IntegralScalar(op, "first", call.scalars[st::S::first]));
  if (first != 0 && first != 1)
    return Invalid(op, absl::StrCat("scalar 'first' must be 0 (update the statistics) or 1 (initialise them), got ",
                                    first));
  LIGERD_ASSIGN_OR_RETURN(float softcap, Softcap(op, call.scalars[st::S::softcap]));
  LIGERD_RETURN_IF_ERROR(CheckDense(op, "target", t[st::T::target], {rows}, "one per row of X"));
  LIGERD_RETURN_IF_ERROR(CheckWeight(op, t[st::T::weight], v0, n));
  LIGERD_RETURN_IF_ERROR(CheckDense(op, "stats", t[st::T::stats], {rows, 4}, "m, s, sz, zy per row of X"));
  if (t[st::T::idx].present())
    LIGERD_RETURN_IF_ERROR(CheckDense(op, "idx", t[st::T::idx], {rows}, "one per row of X"));

  OpPlan plan;
  plan.variant = MakeVariant(kStats, X.dtype);
  if (rows == 0) return plan;
  LigerdCeSliceStatsParams p;
  std::memset(&p, 0, sizeof(p));  // padding too: the plan cache compares parameter blocks bytewise
  p.x = X.data;
  p.target = static_cast<const long long*>(t[st::T::target].data);
  p.weight = static_cast<const float*>(t[st::T::weight].data);
  p.stats = static_cast<float*>(t[st::T::stats].data);
  p.idx = static_cast<long long*>(t[st::T::idx].data);
  p.rows = rows;
  p.x_stride = xm.row_stride;
  p.n = n;
  p.v0 = v0;
  p.softcap = softcap;
  p.first = static_cast<int>(first);
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k,
                          RowLaunch(op, kStats, plan.variant, dev, rows, &p, sizeof(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

absl::StatusOr<OpPlan> PlanGrad(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& X = t[gr::T::X];
  const TensorView& DX = t[gr::T::dX];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, CheckLogits(op, "X", X));
  const int64_t rows = xm.rows, n = xm.cols;
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", DX, "X", X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix dm, CheckLogits(op, "dX", DX));
  LIGERD_ASSIGN_OR_RETURN(int64_t v0, SliceStart(op, call.scalars[gr::S::v0]));
  LIGERD_ASSIGN_OR_RETURN(float softcap, Softcap(op, call.scalars[gr::S::softcap]));
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", call.scalars[gr::S::ignore_index]));
  LIGERD_RETURN_IF_ERROR(CheckDense(op, "target", t[gr::T::target], {rows}, "one per row of X"));
  LIGERD_RETURN_IF_ERROR(CheckWeight(op, t[gr::T::weight], v0, n));
  LIGERD_RETURN_IF_ERROR(CheckDense(op, "coef", t[gr::T::coef], {rows, 4}, "lse, A, B, C per row of X"));

  OpPlan plan;
  plan.variant = MakeVariant(kGrad, X.dtype);
  if (rows == 0) return plan;
  LigerdCeSliceGradParams p;
  std::memset(&p, 0, sizeof(p));  // padding too: the plan cache compares parameter blocks bytewise
  p.x = X.data;
  p.dx = DX.data;
  p.target = static_cast<const long long*>(t[gr::T::target].data);
  p.weight = static_cast<const float*>(t[gr::T::weight].data);
  p.coef = static_cast<const float*>(t[gr::T::coef].data);
  p.rows = rows;
  p.x_stride = xm.row_stride;
  p.dx_stride = dm.row_stride;
  p.n = n;
  p.v0 = v0;
  p.ignore_index = ignore;
  p.softcap = softcap;
  LIGERD_ASSIGN_OR_RETURN(KernelLaunch k,
                          RowLaunch(op, kGrad, plan.variant, dev, rows, &p, sizeof(p), &plan.config));
  plan.launches.push_back(std::move(k));
  return plan;
}

OpSpec MakeSpec(Part part) {
  OpSpec s = part == kStats ? st::BaseSpec() : gr::BaseSpec();
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) s.variants.push_back(MakeVariant(part, x));
  s.plan = part == kStats ? PlanStats : PlanGrad;
  return s;
}

}  // namespace

LIGERD_DEFINE_OP(ce_slice_stats, MakeSpec(kStats))
LIGERD_DEFINE_OP(ce_slice_grad, MakeSpec(kGrad))

}  // namespace ligerd::kernels
