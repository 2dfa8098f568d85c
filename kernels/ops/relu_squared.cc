// Squared ReLU, Liger-compatible (LigerReLUSquared / liger_relu_squared; Nemotron's "relu2"):
// y = relu(x)^2, dx = 2 relu(x) dy. Tensors and launch bounds: the entries (relu_squared.toml);
// kernels and numerics: relu_squared.cuh. This file: the variants (one per dtype and direction),
// the checks the entries cannot state, and planning.
//   relu_squared_fwd [X, Y->], relu_squared_bwd [dY, X, dX->]: one shape and dtype (fp32 / bf16 /
//   fp16), 1-D to 4-D, contiguous last dim, leading dims flattening into rows with one stride
//   each (a tensor may be a column slice of a wider buffer). dX may be exactly dY (in place); any
//   other overlap of an output is refused by the generic checks. No scalars, no workspace.
// Not tunable (no candidates): an element-wise stream at the default shape; an explicit config
// (ligerctl, tests) is checked by ReluSquaredCheckConfig.
#include "kernels/ops/relu_squared.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/relu_squared.h"
#include "kernels/ops/flat_launch.h"
#include "kernels/ops/relu_squared_params.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

namespace fwd = entry::relu_squared_fwd;
namespace bwd = entry::relu_squared_bwd;

// One block limit for the family's kernels, from their launch bounds (relu_squared.toml).
constexpr int kMaxThreadsPerBlock = std::min(SmallestBound(fwd::kBounds), SmallestBound(bwd::kBounds));
constexpr size_t kVectorAlign = 16;
// The family's launch shape (flat_launch.h).
constexpr FlatFamily kFamily{
    "squared-ReLU",
    "vectorized access needs 16-byte aligned pointers, row strides divisible by the vector "
    "width and, unless the tensors are one dense block, a last dim divisible by it too",
    kMaxThreadsPerBlock, LIGERD_RELU2_POSITIONS_PER_THREAD};

KernelVariant MakeVariant(bool backward, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_RELU2_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

struct Operand {
  const TensorView* t;
  RowMatrix m;
};

absl::StatusOr<OpPlan> Plan(const OpSpec& spec, const OpCall& call, bool backward) {
  const std::string& op = spec.name;
  const int x_index = backward ? bwd::T::X : fwd::T::X;
  const int out_index = backward ? bwd::T::dX : fwd::T::Y;
  const TensorView& X = call.tensors[x_index];
  // Operands in entry order: [X, Y] or [dY, X, dX].
  std::vector<Operand> ops;
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const std::string& name = spec.tensors[i].name;
    const TensorView& t = call.tensors[i];
    if (static_cast<int>(i) != x_index) LIGERD_RETURN_IF_ERROR(CheckSameShape(op, name, t, "X", X));
    LIGERD_ASSIGN_OR_RETURN(RowMatrix m, AsRows(op, name, t));
    if (static_cast<int>(i) == out_index && m.rows > 1 && m.row_stride < m.cols)
      return absl::InvalidArgumentError(absl::StrCat(op, ": output '", name, "' has overlapping rows"));
    ops.push_back({&t, m});
  }
  const int64_t rows = ops[0].m.rows, cols = ops[0].m.cols;

  OpPlan plan;
  plan.variant = MakeVariant(backward, X.dtype);
  if (rows == 0 || cols == 0) return plan;  // nothing to compute

  bool dense = true;  // every operand one contiguous [rows, cols] block: then one long row
  for (const Operand& o : ops) dense = dense && (rows == 1 || o.m.row_stride == cols);
  LigerdReluSquaredParams p{};
  p.rows = dense ? 1 : rows;
  p.cols = dense ? rows * cols : cols;

  // 16-byte accesses: aligned starts and row strides; a ragged last dim only in one dense row
  // (its last cols % VEC elements are done one by one, relu_squared.cuh).
  const int vec = ReluSquaredVectorWidth(X.dtype);
  bool vec_ok = p.rows == 1 || p.cols % vec == 0;
  for (const Operand& o : ops)
    vec_ok = vec_ok && Aligned(o.t->data, kVectorAlign) && (p.rows == 1 || o.m.row_stride % vec == 0);
  LIGERD_ASSIGN_OR_RETURN(plan.config, FlatChooseConfig(kFamily, op, call.tuned, vec_ok));
  const LaunchConfig& c = plan.config;

  int k = 0;
  if (backward) {
    p.dy = ops[k].t->data;
    p.dy_stride = ops[k++].m.row_stride;
  }
  p.x = ops[k].t->data;
  p.x_stride = ops[k++].m.row_stride;
  p.out = ops[k].t->data;
  p.out_stride = ops[k++].m.row_stride;

  // Positions: vectors or elements (flat_launch.h's FlatLaunch sizes the grid over them; at least
  // one block, which also does a dense row's ragged end).
  const int64_t units = p.rows * (p.cols / (c.vectorized ? vec : 1));
  KernelLaunch launch = FlatLaunch(ReluSquaredKernelName(backward, c.vectorized), c, units, &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  return plan;
}

OpSpec MakeSpec(bool backward) {
  OpSpec s = backward ? bwd::BaseSpec() : fwd::BaseSpec();
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
    s.variants.push_back(MakeVariant(backward, x));
  s.plan = [backward](const OpSpec& spec, const OpCall& call, const DeviceInfo& /*dev*/) {
    return Plan(spec, call, backward);
  };
  return s;
}

}  // namespace

int ReluSquaredVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig ReluSquaredDefaultConfig(bool vectorized) { return FlatDefaultConfig(kFamily, vectorized); }

absl::Status ReluSquaredCheckConfig(const LaunchConfig& c, bool vectorized_ok) {
  return FlatCheckConfig(kFamily, c, vectorized_ok);
}

std::string ReluSquaredKernelName(bool backward, bool vectorized) {
  return absl::StrCat(backward ? "relu_squared_bwd_" : "relu_squared_fwd_", vectorized ? "v" : "s");
}

LIGERD_DEFINE_OP(relu_squared_fwd, MakeSpec(false))
LIGERD_DEFINE_OP(relu_squared_bwd, MakeSpec(true))

}  // namespace ligerd::kernels
