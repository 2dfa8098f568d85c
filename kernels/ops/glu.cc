// SwiGLU and GeGLU, Liger-compatible (LigerSiLUMulFunction / LigerGELUMulFunction):
// c = act(a) * b, act = silu or tanh-approximation GELU. Kernels and numerics: glu.cuh.
// This file: the four OpSpecs (one family; the activation is part of the op name), their checks
// and planning.
//
// swiglu_fwd / geglu_fwd  tensors [A, B, C->]                  no scalars
// swiglu_bwd / geglu_bwd  tensors [dC, A, B, dA->, dB->]       no scalars
//   A, B, C, dC, dA, dB: one shape and dtype (fp32/bf16/fp16), 1-D to 4-D, contiguous last dim,
//   leading dims flattening into rows with one stride each (so A and B may be the two halves of
//   one [rows, 2F] tensor). dA may be exactly A and dB exactly B (Liger writes the gradients into
//   the saved inputs); any other overlap of an output is refused by the generic checks.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/embedded_sources.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/glu_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/ops.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

enum Act { kSilu = 0, kGeluTanh = 1 };

constexpr int kDefaultBlock = 256;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kVectorAlign = 16;
constexpr int64_t kMaxGrid = 0x7fffffff;  // gridDim.x limit


KernelVariant MakeVariant(bool backward, Act act, DType x) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x));
  v.defines = {absl::StrCat("LIGERD_GLU_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_GLU_ACT=", static_cast<int>(act)),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x))};
  return v;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

struct Operand {
  const char* name;
  const TensorView* t;
  RowMatrix m;
};

absl::StatusOr<OpPlan> Plan(const OpSpec& spec, const OpCall& call, const DeviceInfo& /*dev*/,
                            bool backward, Act act) {
  const std::string& op = spec.name;
  // Operands in the kernel's order: [dC,] A, B, out0, [out1].
  std::vector<Operand> ops;
  const char* fwd_names[] = {"A", "B", "C"};
  const char* bwd_names[] = {"dC", "A", "B", "dA", "dB"};
  const size_t count = backward ? 5 : 3;
  const int a_index = backward ? 1 : 0;
  const TensorView& A = call.tensors[a_index];
  for (size_t i = 0; i < count; ++i) {
    const char* name = backward ? bwd_names[i] : fwd_names[i];
    const TensorView& t = call.tensors[i];
    if (static_cast<int>(i) != a_index) LIGERD_RETURN_IF_ERROR(CheckSameShape(op, name, t, "A", A));
    LIGERD_ASSIGN_OR_RETURN(RowMatrix m, AsRows(op, name, t));
    const bool output = backward ? i >= 3 : i == 2;
    if (output && m.rows > 1 && m.row_stride < m.cols)
      return absl::InvalidArgumentError(absl::StrCat(op, ": output '", name, "' has overlapping rows"));
    ops.push_back({name, &t, m});
  }
  const int64_t rows = ops[0].m.rows, cols = ops[0].m.cols;
  if (cols > (int64_t{1} << 40))
    return absl::InvalidArgumentError(absl::StrCat(op, ": last dim ", cols, " is too large"));

  OpPlan plan;
  plan.variant = MakeVariant(backward, act, A.dtype);
  if (rows == 0 || cols == 0) return plan;

  const int vec = GluVectorWidth(A.dtype);
  bool vec_ok = cols % vec == 0;
  bool dense = true;  // every operand laid out as one contiguous [rows, cols] block
  for (const Operand& o : ops) {
    vec_ok = vec_ok && Aligned(o.t->data, kVectorAlign) && (rows == 1 || o.m.row_stride % vec == 0);
    dense = dense && (rows == 1 || o.m.row_stride == cols);
  }
  if (call.tuned != nullptr) {
    absl::Status s = GluCheckConfig(*call.tuned, vec_ok);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(op, ": tuned config: ", s.message()));
    plan.config = *call.tuned;
  } else {
    plan.config = GluDefaultConfig(vec_ok);
  }
  const LaunchConfig& c = plan.config;
  const int block = c.threads_per_row;
  const std::string kernel = GluKernelName(backward, c.vectorized);

  LigerdGluParams p{};
  int k = 0;
  if (backward) {
    p.dc = ops[k].t->data;
    p.dc_stride = ops[k++].m.row_stride;
  }
  p.a = ops[k].t->data;
  p.a_stride = ops[k++].m.row_stride;
  p.b = ops[k].t->data;
  p.b_stride = ops[k++].m.row_stride;
  p.out0 = ops[k].t->data;
  p.out0_stride = ops[k++].m.row_stride;
  if (backward) {
    p.out1 = ops[k].t->data;
    p.out1_stride = ops[k++].m.row_stride;
  }
  // A dense call is one long row: the kernels then skip the per-element row/column division.
  p.rows = dense ? 1 : rows;
  p.cols = dense ? rows * cols : cols;

  // One block per chunk of POSITIONS_PER_THREAD * block vectors (glu.cuh); a tuned grid may
  // be smaller (blocks then loop over chunks).
  const int64_t work = CeilDiv(p.rows * (p.cols / (c.vectorized ? vec : 1)),
                               int64_t{block} * LIGERD_GLU_POSITIONS_PER_THREAD);
  const int64_t grid = std::min<int64_t>(c.grid > 0 ? std::min<int64_t>(c.grid, work) : work,
                                         kMaxGrid);

  KernelLaunch launch;
  launch.kernel = kernel;
  launch.grid[0] = static_cast<unsigned>(grid);
  launch.block[0] = static_cast<unsigned>(block);
  launch.params.resize(sizeof(p));
  std::memcpy(launch.params.data(), &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  return plan;
}

OpSpec MakeSpec(bool backward, Act act) {
  const std::vector<DType> floats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  const char* family = act == kSilu ? "swiglu" : "geglu";
  const char* act_doc = act == kSilu ? "silu(A)" : "gelu_tanh(A)";
  OpSpec s;
  s.name = absl::StrCat(family, backward ? "_bwd" : "_fwd");
  s.doc = backward
              ? absl::StrCat(family, " backward: dA = dC*B*act'(A), dB = dC*", act_doc,
                             " (act recomputed); dA may alias A and dB may alias B (in place).")
              : absl::StrCat(family, " forward: C = ", act_doc, " * B, computed in fp32.");
  if (backward) {
    s.tensors = {{"dC", false, false, floats, ""},
                 {"A", false, false, floats, ""},
                 {"B", false, false, floats, ""},
                 {"dA", true, false, floats, "A"},
                 {"dB", true, false, floats, "B"}};
  } else {
    s.tensors = {{"A", false, false, floats, ""},
                 {"B", false, false, floats, ""},
                 {"C", true, false, floats, ""}};
  }
  s.main = {"kernels/ops/glu.cuh", EmbeddedSource("kernels/ops/glu.cuh")};
  s.headers = {{"kernels/ops/common.cuh", EmbeddedSource("kernels/ops/common.cuh")},
               {"kernels/ops/glu_params.h", EmbeddedSource("kernels/ops/glu_params.h")}};
  s.options = {"--std=c++17"};
  for (DType x : floats) s.variants.push_back(MakeVariant(backward, act, x));
  s.plan = [backward, act](const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
    return Plan(spec, call, dev, backward, act);
  };
  return s;
}

}  // namespace

int GluVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig GluDefaultConfig(bool vectorized) {
  LaunchConfig c;
  c.threads_per_row = kDefaultBlock;
  c.rows_per_block = 1;
  c.iters = 1;
  c.vectorized = vectorized;
  c.grid = 0;
  return c;
}

absl::Status GluCheckConfig(const LaunchConfig& c, bool vectorized_ok) {
  if (c.vectorized && !vectorized_ok)
    return absl::InvalidArgumentError("vectorized access needs the last dim and row strides "
                                      "divisible by the vector width and 16-byte aligned pointers");
  if (c.threads_per_row < 32 || c.threads_per_row > kMaxThreadsPerBlock || c.threads_per_row % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat("block of ", c.threads_per_row,
                                                   " threads must be a multiple of 32 <= 1024"));
  if (c.rows_per_block != 1)
    return absl::InvalidArgumentError("the GLU kernels take 1-D blocks (rows_per_block 1)");
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  return absl::OkStatus();
}

std::string GluKernelName(bool backward, bool vectorized) {
  return absl::StrCat(backward ? "glu_bwd_" : "glu_fwd_", vectorized ? "v" : "s");
}

const OpSpec& SwiGluForwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(false, kSilu));
  return *spec;
}
const OpSpec& SwiGluBackwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(true, kSilu));
  return *spec;
}
const OpSpec& GeGluForwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(false, kGeluTanh));
  return *spec;
}
const OpSpec& GeGluBackwardSpec() {
  static const OpSpec* spec = new OpSpec(MakeSpec(true, kGeluTanh));
  return *spec;
}

}  // namespace ligerd::kernels
