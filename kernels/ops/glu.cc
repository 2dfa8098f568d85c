// SwiGLU and GeGLU, Liger-compatible (LigerSiLUMulFunction / LigerGELUMulFunction):
// c = act(a) * b, act = silu or tanh-approximation GELU. Tensors and launch bounds: the entries
// (glu.toml; one family, the activation is part of the op name); kernels and numerics: glu.cuh.
// This file: the variants, the checks the entries cannot state, planning and tuning.
//   A, B, C, dC, dA, dB: one shape and dtype (fp32/bf16/fp16), 1-D to 4-D, contiguous last dim,
//   leading dims flattening into rows with one stride each (so A and B may be the two halves of
//   one [rows, 2F] tensor). dA may be exactly A and dB exactly B (Liger writes the gradients into
//   the saved inputs); any other overlap of an output is refused by the generic checks.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/glu_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/glu.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

enum Act { kSilu = 0, kGeluTanh = 1 };
// SwiGLU and GeGLU take the same tensors (glu.toml): one plan serves both.
static_assert(entry::swiglu_fwd::T::A == entry::geglu_fwd::T::A &&
              entry::swiglu_bwd::T::A == entry::geglu_bwd::T::A &&
              entry::swiglu_bwd::T::kCount == entry::geglu_bwd::T::kCount);

constexpr int kDefaultBlock = 256;
// Positions (16-byte vectors per operand) per thread the vector kernels come in (glu.cuh:
// glu_*_v = LIGERD_GLU_POSITIONS_PER_THREAD, glu_*_v1, glu_*_v4); the scalar kernels take only
// the default.
constexpr int kIterChoices[] = {1, 2, 4};
static_assert(LIGERD_GLU_POSITIONS_PER_THREAD == 1 || LIGERD_GLU_POSITIONS_PER_THREAD == 2 ||
              LIGERD_GLU_POSITIONS_PER_THREAD == 4, "glu.cuh instantiates 1, 2, 4 and the default");
// Autotuning candidates: block sizes, and besides the default one-shot grid (one block per
// chunk), persistent grids of 1, 2 or 4 waves of resident blocks that loop over the chunks.
constexpr int kCandidateBlocks[] = {128, 256, 512, 1024};
constexpr int kCandidateWaves[] = {1, 2, 4};
// One block limit for the family's kernels, from their launch bounds (glu.toml).
constexpr int kMaxThreadsPerBlock =
    std::min({SmallestBound(entry::swiglu_fwd::kBounds), SmallestBound(entry::swiglu_bwd::kBounds),
              SmallestBound(entry::geglu_fwd::kBounds), SmallestBound(entry::geglu_bwd::kBounds)});
constexpr size_t kVectorAlign = 16;
constexpr int64_t kMaxGrid = 0x7fffffff;  // gridDim.x limit
// Blocks per SM assumed for the tuner's "waves" grids when no occupancy oracle is available (tests).
constexpr int kFallbackBlocksPerSm = 8;


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
  const size_t count = spec.tensors.size();
  const int a_index = backward ? entry::swiglu_bwd::T::A : entry::swiglu_fwd::T::A;
  const TensorView& A = call.tensors[a_index];
  for (size_t i = 0; i < count; ++i) {
    const char* name = spec.tensors[i].name.c_str();
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
  const std::string kernel = GluKernelName(backward, c.vectorized, c.iters);

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

  // One block per chunk of iters (positions per thread) * block vectors (glu.cuh); a tuned grid
  // may be smaller (blocks then loop over chunks).
  const int64_t work = CeilDiv(p.rows * (p.cols / (c.vectorized ? vec : 1)), int64_t{block} * c.iters);
  const int64_t grid = std::min<int64_t>(c.grid > 0 ? std::min<int64_t>(c.grid, work) : work, kMaxGrid);

  KernelLaunch launch;
  launch.kernel = kernel;
  launch.grid[0] = static_cast<unsigned>(grid);
  launch.block[0] = static_cast<unsigned>(block);
  launch.params.resize(sizeof(p));
  std::memcpy(launch.params.data(), &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  return plan;
}

// Every legal config worth timing: 1-D blocks of 128..1024 threads, 1/2/4 positions per thread
// (vector kernels only), the one-shot grid (0, the default) or 1/2/4 waves of resident blocks.
// Empty when the call is empty or not a valid GLU call.
std::vector<LaunchConfig> Candidates(const std::string& op, const OpCall& call, const DeviceInfo& dev,
                                     bool backward) {
  std::vector<LaunchConfig> out;
  if (call.tensors.size() != (backward ? 5u : 3u)) return out;
  const TensorView& A = call.tensors[backward ? 1 : 0];
  // The default plan tells whether vector access is possible and how much work there is.
  absl::StatusOr<OpPlan> base = PlanOp(op, OpCall{call.tensors, call.scalars}, dev);
  if (!base.ok() || base->launches.empty()) return out;
  const bool vec_ok = base->config.vectorized;
  const int vec = vec_ok ? GluVectorWidth(A.dtype) : 1;
  LigerdGluParams p;
  std::memcpy(&p, base->launches[0].params.data(), sizeof(p));
  const int64_t units = p.rows * (p.cols / vec);
  for (int block : kCandidateBlocks) {
    for (int iters : kIterChoices) {
      LaunchConfig c = GluDefaultConfig(vec_ok);
      c.threads_per_row = block;
      c.iters = iters;
      if (!GluCheckConfig(c, vec_ok).ok()) continue;
      const int64_t chunks = CeilDiv(units, int64_t{block} * iters);
      c.grid = 0;
      out.push_back(c);
      int per_sm = kFallbackBlocksPerSm;
      if (dev.blocks_per_sm) {
        absl::StatusOr<int> b =
            dev.blocks_per_sm(op, base->variant, GluKernelName(backward, vec_ok, iters), block, 0);
        if (!b.ok() || *b <= 0) continue;
        per_sm = *b;
      }
      const int64_t wave = int64_t{std::max(dev.sm_count, 1)} * per_sm;
      for (int w : kCandidateWaves) {
        if (wave * w >= chunks || wave * w > kMaxGrid) break;  // no smaller than the one-shot grid
        c.grid = static_cast<int>(wave * w);
        out.push_back(c);
      }
    }
  }
  return out;
}

OpSpec MakeSpec(bool backward, Act act) {
  const std::vector<DType> floats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  OpSpec s = act == kSilu ? (backward ? entry::swiglu_bwd::BaseSpec() : entry::swiglu_fwd::BaseSpec())
                          : (backward ? entry::geglu_bwd::BaseSpec() : entry::geglu_fwd::BaseSpec());
  for (DType x : floats) s.variants.push_back(MakeVariant(backward, act, x));
  s.plan = [backward, act](const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
    return Plan(spec, call, dev, backward, act);
  };
  const std::string name = s.name;
  s.candidates = [backward, name](const OpCall& call, const DeviceInfo& dev) {
    return Candidates(name, call, dev, backward);
  };
  s.tuning_shape = RowTuningShape(backward ? entry::swiglu_bwd::T::A : entry::swiglu_fwd::T::A);
  s.tuning_problem = [backward](const TuningShape& shape) -> absl::StatusOr<TuningProblem> {
    TuningProblem p;
    const ScratchTensor t{true, shape.dtype, {shape.rows, shape.cols}, false};
    p.tensors.assign(backward ? 5 : 3, t);  // separate outputs (timing is the same in place)
    return p;
  };
  return s;
}

}  // namespace

int GluVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig GluDefaultConfig(bool vectorized) {
  LaunchConfig c;
  c.threads_per_row = kDefaultBlock;
  c.rows_per_block = 1;
  c.iters = LIGERD_GLU_POSITIONS_PER_THREAD;
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
  if (c.vectorized ? (c.iters != 1 && c.iters != 2 && c.iters != 4) : c.iters != LIGERD_GLU_POSITIONS_PER_THREAD)
    return absl::InvalidArgumentError(absl::StrCat(
        "iters ", c.iters, " not available (positions per thread: 1, 2 or 4 with vector access, ",
        LIGERD_GLU_POSITIONS_PER_THREAD, " without)"));
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  return absl::OkStatus();
}

std::string GluKernelName(bool backward, bool vectorized, int iters) {
  return absl::StrCat(backward ? "glu_bwd_" : "glu_fwd_", vectorized ? "v" : "s",
                      iters == LIGERD_GLU_POSITIONS_PER_THREAD ? std::string() : absl::StrCat(iters));
}

LIGERD_DEFINE_OP(swiglu_fwd, MakeSpec(false, kSilu))
LIGERD_DEFINE_OP(swiglu_bwd, MakeSpec(true, kSilu))
LIGERD_DEFINE_OP(geglu_fwd, MakeSpec(false, kGeluTanh))
LIGERD_DEFINE_OP(geglu_bwd, MakeSpec(true, kGeluTanh))

}  // namespace ligerd::kernels
