// RoPE, Liger-compatible (liger_rotary_pos_emb / LigerRopeFunction): HF Llama's rotate_half
// rotation of q and k, forward (+theta) and backward (the transpose: -theta), both in one launch.
// Tensors and launch bounds: the entries (rope.toml); kernels, numerics and the byte count:
// rope.cuh. This file: the variants, the checks the entries cannot state, planning.
//   Q: [B, Hq, S, hd], K: [B, Hk, S, hd] (Hq, Hk may differ, either may be 0), fp32/bf16/fp16,
//   one dtype; any strides on the batch, head and seq dims (HF passes transposed views of
//   [B, S, H, hd] storage), a contiguous last dim, hd even. COS, SIN: [Bc, S, hd] with Bc 1 or B,
//   Q's dtype or fp32 (both the same), any batch/seq strides, contiguous last dim. Q_out, K_out:
//   Q's and K's shapes and dtype, their own strides, no two elements at one address; Q_out may
//   be exactly Q and K_out exactly K (rotation in place, as Liger does); any other overlap of an
//   output is refused by the generic checks.
#include "kernels/ops/rope.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/rope.h"
#include "kernels/ops/rope_params.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

// Tensor positions (rope_fwd's names; rope_bwd's are the same places, static_assert below).
namespace fwd = entry::rope_fwd;
namespace bwd = entry::rope_bwd;
static_assert(fwd::T::Q == bwd::T::dQ && fwd::T::K == bwd::T::dK && fwd::T::COS == bwd::T::COS &&
              fwd::T::SIN == bwd::T::SIN && fwd::T::Q_out == bwd::T::dQ_out &&
              fwd::T::K_out == bwd::T::dK_out);
enum { kQ = fwd::T::Q, kK = fwd::T::K, kCos = fwd::T::COS, kSin = fwd::T::SIN, kQOut = fwd::T::Q_out,
       kKOut = fwd::T::K_out };

constexpr int kDefaultBlock = 256;
// Heads per thread by default: 4 heads' loads in flight per thread (the kernel's kUnroll) and,
// at LLaMA-3-8B (40 heads of 128, bf16), 10 threads per token lane: ~1.3M threads for 16K
// tokens, several waves on an H100, cos/sin reused 4x in registers and 10x from L1.
constexpr int kDefaultHeadsPerThread = 4;
// The kernels' launch bound (rope.toml: 512, so that they get up to 128 registers).
constexpr int kMaxThreadsPerBlock = std::min(SmallestBound(fwd::kBounds), SmallestBound(bwd::kBounds));
constexpr size_t kVectorAlign = 16;

KernelVariant MakeVariant(bool backward, DType x, DType cs) {
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x), ".cs", ShortName(cs));
  v.defines = {absl::StrCat("LIGERD_ROPE_BWD=", backward ? 1 : 0),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x)),
               absl::StrCat("LIGERD_CT=", DeviceTypeName(cs))};
  return v;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// Every dim of size > 1 other than the last has a stride of whole 16-byte vectors.
bool StridesVectorAligned(const TensorView& t) {
  for (int i = 0; i + 1 < t.ndim; ++i)
    if (t.sizes[i] > 1 && (t.strides[i] * DTypeBytes(t.dtype)) % kVectorAlign != 0) return false;
  return true;
}

absl::Status Invalid(const std::string& op, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", msg));
}

absl::StatusOr<OpPlan> Plan(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev,
                            bool backward) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const auto name = [&](int i) { return spec.tensors[i].name; };
  const TensorView& Q = t[kQ];
  const TensorView& K = t[kK];
  const TensorView& C = t[kCos];
  const TensorView& S = t[kSin];
  if (Q.ndim != 4)
    return Invalid(op, absl::StrCat("tensor '", name(kQ), "' has shape ", ShapeString(Q),
                                    ", expected 4 dims [batch, n_q_head, seq, head_dim]"));
  if (K.ndim != 4)
    return Invalid(op, absl::StrCat("tensor '", name(kK), "' has shape ", ShapeString(K),
                                    ", expected 4 dims [batch, n_kv_head, seq, head_dim]"));
  const int64_t B = Q.sizes[0], Hq = Q.sizes[1], Sq = Q.sizes[2], D = Q.sizes[3];
  if (K.sizes[0] != B || K.sizes[2] != Sq || K.sizes[3] != D)
    return Invalid(op, absl::StrCat("tensor '", name(kK), "' has shape ", ShapeString(K),
                                    ", expected [", B, ", n_kv_head, ", Sq, ", ", D,
                                    "] (batch, seq and head_dim of ", name(kQ), ")"));
  if (K.dtype != Q.dtype)
    return Invalid(op, absl::StrCat("tensor '", name(kK), "' has dtype ", DTypeName(K.dtype),
                                    ", expected ", DTypeName(Q.dtype), " (dtype of ", name(kQ), ")"));
  if (D <= 0 || D % 2 != 0)
    return Invalid(op, absl::StrCat("head_dim ", D, " of '", name(kQ), "' must be even and > 0"));
  if (C.ndim != 3 || (C.sizes[0] != 1 && C.sizes[0] != B) || C.sizes[1] != Sq || C.sizes[2] != D)
    return Invalid(op, absl::StrCat("tensor '", name(kCos), "' has shape ", ShapeString(C),
                                    ", expected [1 or ", B, ", ", Sq, ", ", D,
                                    "] ([1 or batch, seq, head_dim] of ", name(kQ), ")"));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, name(kSin), S, name(kCos), C));
  if (C.dtype != Q.dtype && C.dtype != DType::kFloat32)
    return Invalid(op, absl::StrCat("tensor '", name(kCos), "' has dtype ", DTypeName(C.dtype),
                                    ", expected ", DTypeName(Q.dtype), " (dtype of ", name(kQ),
                                    ") or float32"));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, name(kQOut), t[kQOut], name(kQ), Q));
  LIGERD_RETURN_IF_ERROR(CheckSameShape(op, name(kKOut), t[kKOut], name(kK), K));
  for (int i = 0; i < 6; ++i) {
    const TensorView& v = t[i];
    if (v.sizes[v.ndim - 1] > 1 && NumElements(v) > 0 && v.strides[v.ndim - 1] != 1)
      return Invalid(op, absl::StrCat("tensor '", name(i), "' must have a contiguous last dim ",
                                      "(stride 1), got stride ", v.strides[v.ndim - 1],
                                      "; make it contiguous"));
  }
  for (int i : {kQOut, kKOut})
    if (!NoInternalOverlap(t[i]))
      return Invalid(op, absl::StrCat("output '", name(i), "' of shape ", ShapeString(t[i]),
                                      " has elements sharing memory (e.g. an expanded view)"));

  OpPlan plan;
  plan.variant = MakeVariant(backward, Q.dtype, C.dtype);
  const int64_t Hk = K.sizes[1];
  if (B == 0 || Sq == 0 || Hq + Hk == 0) return plan;

  const int64_t half = D / 2;
  const int vec = RopeVectorWidth(Q.dtype);
  bool vec_ok = half % vec == 0;
  for (int i = 0; i < 6; ++i)
    vec_ok = vec_ok && Aligned(t[i].data, kVectorAlign) && StridesVectorAligned(t[i]);
  if (call.tuned != nullptr) {
    absl::Status st = RopeCheckConfig(*call.tuned, vec_ok);
    if (!st.ok()) return Invalid(op, absl::StrCat("tuned config: ", st.message()));
    plan.config = *call.tuned;
  } else {
    plan.config = RopeDefaultConfig(vec_ok);
  }
  const LaunchConfig& c = plan.config;

  LigerdRopeParams p{};
  const TensorView* xs[2] = {&Q, &K};
  const TensorView* ys[2] = {&t[kQOut], &t[kKOut]};
  for (int i = 0; i < 2; ++i) {
    p.x[i] = xs[i]->data;
    p.y[i] = ys[i]->data;
    p.heads[i] = xs[i]->sizes[1];
    for (int d = 0; d < 3; ++d) {
      p.x_stride[i][d] = xs[i]->strides[d];
      p.y_stride[i][d] = ys[i]->strides[d];
    }
  }
  p.cos = C.data;
  p.sin = S.data;
  // A cos/sin of batch 1 serves every batch: stride 0.
  p.cos_stride[0] = C.sizes[0] == 1 ? 0 : C.strides[0];
  p.cos_stride[1] = C.strides[1];
  p.sin_stride[0] = S.sizes[0] == 1 ? 0 : S.strides[0];
  p.sin_stride[1] = S.strides[1];
  p.batch = B;
  p.seq = Sq;
  p.half = half;
  p.lanes = c.vectorized ? half / vec : half;
  p.heads_per_thread = std::min<int64_t>(c.iters, Hq + Hk);
  p.groups = CeilDiv(Hq + Hk, p.heads_per_thread);
  // Sizes were checked against overflow by the generic checks (every tensor's byte extent fits
  // in int64 / 2), so B * S * groups * lanes <= B * S * (Hq + Hk) * hd fits too.
  p.items = B * Sq * p.groups * p.lanes;
  const int block = c.threads_per_row;
  const int64_t grid = CeilDiv(p.items, block);
  if (grid > 0x7fffffff)
    return Invalid(op, absl::StrCat(p.items, " thread items need more than 2^31 blocks of ",
                                    block, "; raise heads per thread"));

  KernelLaunch launch;
  launch.kernel = RopeKernelName(c.vectorized);
  launch.grid[0] = static_cast<unsigned>(grid);
  launch.block[0] = static_cast<unsigned>(block);
  launch.params.resize(sizeof(p));
  std::memcpy(launch.params.data(), &p, sizeof(p));
  plan.launches.push_back(std::move(launch));
  (void)dev;  // one item per thread: the grid follows from the shape, not from occupancy
  return plan;
}

OpSpec MakeSpec(bool backward) {
  const std::vector<DType> floats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  OpSpec s = backward ? bwd::BaseSpec() : fwd::BaseSpec();
  for (DType x : floats) {
    s.variants.push_back(MakeVariant(backward, x, x));
    if (x != DType::kFloat32) s.variants.push_back(MakeVariant(backward, x, DType::kFloat32));
  }
  s.plan = [backward](const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
    return Plan(spec, call, dev, backward);
  };
  return s;
}

}  // namespace

int RopeVectorWidth(DType x) { return static_cast<int>(kVectorAlign) / DTypeBytes(x); }

LaunchConfig RopeDefaultConfig(bool vectorized) {
  LaunchConfig c;
  c.threads_per_row = kDefaultBlock;
  c.rows_per_block = 1;
  c.iters = kDefaultHeadsPerThread;
  c.vectorized = vectorized;
  c.grid = 0;
  return c;
}

absl::Status RopeCheckConfig(const LaunchConfig& c, bool vectorized_ok) {
  if (c.vectorized && !vectorized_ok)
    return absl::InvalidArgumentError("vectorized access needs head_dim/2 divisible by the vector "
                                      "width, 16-byte aligned pointers and strides");
  if (c.threads_per_row < 32 || c.threads_per_row > kMaxThreadsPerBlock || c.threads_per_row % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat("block of ", c.threads_per_row,
                                                   " threads must be a multiple of 32 <= ",
                                                   kMaxThreadsPerBlock));
  if (c.rows_per_block != 1)
    return absl::InvalidArgumentError("the RoPE kernels take 1-D blocks (rows_per_block 1)");
  if (c.iters < 1)
    return absl::InvalidArgumentError(absl::StrCat("heads per thread (iters) must be >= 1, got ", c.iters));
  if (c.grid != 0)
    return absl::InvalidArgumentError("grid must be 0 (one thread per item: derived from the shape)");
  return absl::OkStatus();
}

std::string RopeKernelName(bool vectorized) { return vectorized ? "rope_v" : "rope_s"; }

LIGERD_DEFINE_OP(rope_fwd, MakeSpec(false))
LIGERD_DEFINE_OP(rope_bwd, MakeSpec(true))

}  // namespace ligerd::kernels
