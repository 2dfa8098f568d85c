// Clamped GLU of GPT-OSS's and DeepSeek-V4's MoE experts (transformers' GptOssExperts /
// DeepseekV4Experts ._apply_gate): y = g sigmoid(alpha g) (u + up_offset) with g = min(gate,
// limit), u = clamp(up, -limit, limit), gate/up the halves or the even/odd columns of one
// [rows, 2I] tensor. Tensors, scalars and launch bounds: the entries (clamped_glu.toml); kernels
// and numerics: clamped_glu.cuh. This file: the variants (dtype x direction x layout), the checks
// the entries cannot state, and planning.
//   clamped_glu_fwd [X, Y->], clamped_glu_bwd [dY, X, dX->]; scalars [alpha, limit, up_offset,
//   pairs]: X and dX [..., 2I], Y and dY [..., I] with X's leading dims; one dtype (fp32 / bf16 /
//   fp16), 1-D to 4-D, contiguous last dim, leading dims flattening into rows with one stride each
//   (a tensor may be a column slice of a wider buffer). alpha and up_offset finite, limit >= 0
//   (inf allowed: no clamp), pairs 0 (halves) or 1 (pairs). No aliasing, no workspace.
// Not tunable (no candidates): an element-wise stream at the default shape; an explicit config
// (ligerctl, tests) is checked by ClampedGluCheckConfig.
#include "kernels/ops/clamped_glu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/ops/clamped_glu_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/clamped_glu.h"
#include "kernels/ops/flat_launch.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

namespace fwd = entry::clamped_glu_fwd;
namespace bwd = entry::clamped_glu_bwd;

// One block limit for the family's kernels, from their launch bounds (clamped_glu.toml).
constexpr int kMaxThreadsPerBlock = std::min(SmallestBound(fwd::kBounds), SmallestBound(bwd::kBounds));
constexpr size_t kVectorAlign = 16;
// The family's launch shape (flat_launch.h).
constexpr FlatFamily kFamily{
    "clamped-GLU",
    "vectorized access needs 16-byte aligned pointers and I and every row stride divisible "
    "by the vector width",
    kMaxThreadsPerBlock, LIGERD_CGLU_POSITIONS_PER_THREAD};
constexpr double kMaxFloat = 3.4028234663852886e38;

KernelVariant MakeVariant(bool backward, bool pairs, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat(pairs ? "pairs_" : "halves_", "x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_CGLU_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_CGLU_PAIRS=", pairs ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// `t` ([..., I]) has X's ([..., 2I]) leading dims, half its last dim, and its dtype.
absl::Status CheckHalfShape(const std::string& op, const char* name, const TensorView& t,
                            const TensorView& X) {
  bool ok = t.ndim == X.ndim && t.dtype == X.dtype && X.ndim >= 1;
  for (int d = 0; ok && d + 1 < X.ndim; ++d) ok = t.sizes[d] == X.sizes[d];
  ok = ok && 2 * t.sizes[X.ndim - 1] == X.sizes[X.ndim - 1];
  if (!ok)
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": tensor '", name, "' is ", ShapeString(t), " ", DTypeName(t.dtype), ", expected X's (",
        ShapeString(X), " ", DTypeName(X.dtype), ") leading dims and dtype with half its last dim"));
  return absl::OkStatus();
}

struct Scalars {
  float alpha, limit, up_offset;
  bool pairs;
};

absl::StatusOr<Scalars> ReadScalars(const std::string& op, std::span<const double> s) {
  const double alpha = s[fwd::S::alpha], limit = s[fwd::S::limit], off = s[fwd::S::up_offset],
               pairs = s[fwd::S::pairs];
  for (auto [name, v] : {std::pair<const char*, double>{"alpha", alpha}, {"up_offset", off}})
    if (!std::isfinite(v) || std::fabs(v) > kMaxFloat)
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": scalar '", name, "' is ", v, ", expected a finite fp32 value"));
  if (std::isnan(limit) || limit < 0 || (std::isfinite(limit) && limit > kMaxFloat))
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": scalar 'limit' is ", limit, ", expected >= 0 (inf: no clamp)"));
  if (pairs != 0 && pairs != 1)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": scalar 'pairs' is ", pairs, ", expected 0 (halves) or 1 (pairs)"));
  return Scalars{static_cast<float>(alpha), static_cast<float>(limit), static_cast<float>(off),
                 pairs == 1};
}

absl::StatusOr<OpPlan> Plan(const OpSpec& spec, const OpCall& call, bool backward) {
  const std::string& op = spec.name;
  static_assert(fwd::S::alpha == bwd::S::alpha && fwd::S::limit == bwd::S::limit &&
                fwd::S::up_offset == bwd::S::up_offset && fwd::S::pairs == bwd::S::pairs,
                "both entries list the scalars in one order");
  LIGERD_ASSIGN_OR_RETURN(Scalars sc, ReadScalars(op, call.scalars));
  const TensorView& X = call.tensors[backward ? bwd::T::X : fwd::T::X];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  if (xm.cols % 2 != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": X's last dim is ", xm.cols, ", expected an even 2I (gate and up)"));
  // The [..., I] tensor (Y or dY) and the [..., 2I] output (dX).
  const char* half_name = backward ? "dY" : "Y";
  const TensorView& H = call.tensors[backward ? bwd::T::dY : fwd::T::Y];
  LIGERD_RETURN_IF_ERROR(CheckHalfShape(op, half_name, H, X));
  LIGERD_ASSIGN_OR_RETURN(RowMatrix hm, AsRows(op, half_name, H));
  RowMatrix dxm;
  if (backward) {
    const TensorView& dX = call.tensors[bwd::T::dX];
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", dX, "X", X));
    LIGERD_ASSIGN_OR_RETURN(dxm, AsRows(op, "dX", dX));
    if (dxm.rows > 1 && dxm.row_stride < dxm.cols)
      return absl::InvalidArgumentError(absl::StrCat(op, ": output 'dX' has overlapping rows"));
  } else if (hm.rows > 1 && hm.row_stride < hm.cols) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output 'Y' has overlapping rows"));
  }
  const int64_t rows = xm.rows, cols = xm.cols / 2;

  OpPlan plan;
  plan.variant = MakeVariant(backward, sc.pairs, X.dtype);
  if (rows == 0 || cols == 0) return plan;  // nothing to compute

  LigerdClampedGluParams p{};
  p.rows = rows;
  p.cols = cols;
  p.x = X.data;
  p.x_stride = xm.row_stride;
  if (backward) {
    p.dy = H.data;
    p.dy_stride = hm.row_stride;
    p.out = call.tensors[bwd::T::dX].data;
    p.out_stride = dxm.row_stride;
  } else {
    p.out = H.data;
    p.out_stride = hm.row_stride;
  }
  p.alpha = sc.alpha;
  p.limit = sc.limit;
  p.up_offset = sc.up_offset;

  // 16-byte accesses: I a multiple of the vector width (then every piece a thread reads starts on
  // a vector boundary of its row), aligned starts and row strides.
  const int vec = ClampedGluVectorWidth(X.dtype);
  bool vec_ok = cols % vec == 0;
  for (auto [ptr, stride] : {std::pair<const void*, int64_t>{p.x, p.x_stride}, {p.out, p.out_stride},
                             {p.dy, p.dy_stride}}) {
    if (ptr == nullptr) continue;
    vec_ok = vec_ok && Aligned(ptr, kVectorAlign) && (rows == 1 || stride % vec == 0);
  }
  LIGERD_ASSIGN_OR_RETURN(plan.config, FlatChooseConfig(kFamily, op, call.tuned, vec_ok));
  const LaunchConfig& c = plan.config;

  // Positions: vectors or elements (flat_launch.h's FlatLaunch sizes the grid over them).
  const int64_t units = rows * (cols / (c.vectorized ? vec : 1));
  KernelLaunch launch = FlatLaunch(ClampedGluKernelName(backward, c.vectorized), c, units, &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  return plan;
}

OpSpec MakeSpec(bool backward) {
  OpSpec s = backward ? bwd::BaseSpec() : fwd::BaseSpec();
  for (bool pairs : {false, true})
    for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
      s.variants.push_back(MakeVariant(backward, pairs, x));
  s.plan = [backward](const OpSpec& spec, const OpCall& call, const DeviceInfo& /*dev*/) {
    return Plan(spec, call, backward);
  };
  return s;
}

}  // namespace

int ClampedGluVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig ClampedGluDefaultConfig(bool vectorized) { return FlatDefaultConfig(kFamily, vectorized); }

absl::Status ClampedGluCheckConfig(const LaunchConfig& c, bool vectorized_ok) {
  return FlatCheckConfig(kFamily, c, vectorized_ok);
}

std::string ClampedGluKernelName(bool backward, bool vectorized) {
  return absl::StrCat(backward ? "clamped_glu_bwd_" : "clamped_glu_fwd_", vectorized ? "v" : "s");
}

LIGERD_DEFINE_OP(clamped_glu_fwd, MakeSpec(false))
LIGERD_DEFINE_OP(clamped_glu_bwd, MakeSpec(true))

}  // namespace ligerd::kernels
