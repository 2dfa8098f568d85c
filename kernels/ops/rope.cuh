// Rotary position embedding (Liger's LigerRopeFunction / HF Llama apply_rotary_pos_emb, the
// "rotate_half" layout), forward and backward, q and k in one launch. Compiled by NVRTC (rope.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_ROPE_BWD  0: forward (rotate by +theta), 1: backward (rotate by -theta)
//   LIGERD_XT        element type of q, k and the outputs: float | ligerd::bf16 | ligerd::f16
//   LIGERD_CT        element type of cos and sin: LIGERD_XT or float
// Kernels in each module: rope_v (16-byte vectors: needs hd/2 % VEC == 0, 16-byte aligned
// pointers and leading strides) and rope_s (one element per access, any even hd).
//
// Math, per token and head, with lo = x[:hd/2], hi = x[hd/2:], c = cos, s = sin of that token
// (the full hd-wide rows, both halves, exactly as HF multiplies them):
//   forward   y = x * c + rotate_half(x) * s,  rotate_half(x) = [-hi, lo]
//             y_lo = lo * c_lo - hi * s_lo        y_hi = hi * c_hi + lo * s_hi
//   backward  the transpose of that linear map:
//             dx_lo = dy_lo * c_lo + dy_hi * s_hi  dx_hi = dy_hi * c_hi - dy_lo * s_lo
//   (with HF's cos/sin, whose halves are equal, this is the rotation by -theta; written as the
//   transpose it stays exact for any cos/sin). Computed in fp32, one fma per output element,
//   each output rounded once to XT (torch eager rounds q*cos, rotate_half(q)*sin and their sum).
//
// Work split: one thread per (token, head group, vector lane). A thread loads its token's
// cos/sin vectors (lo and hi halves) once and applies them to every head of its group, q heads
// and k heads alike; the head groups of a token are adjacent threads of one block, so cos/sin
// come from DRAM once per token and from L1 after that. Tokens are ordered seq-major (batch
// fastest), so a cos/sin of batch 1 is read from DRAM once per position, not once per batch.
// Each thread loads the halves of kUnroll heads before it stores any (the stores may alias the
// loads: in place), which keeps 2 * kUnroll 16-byte loads in flight per thread.
//
// Bytes (the speed of light): read and write q and k once, read cos and sin once:
//   2 * (Hq + Hk) * B * S * hd * b  +  2 * Bc * S * hd * b_cs
// and nothing else (no workspace, no copies for strided q/k: the HF layout is a transposed view
// of [B, S, H, hd] storage and is read through its strides). Limit = bytes / copy bandwidth;
// in place or not moves the same bytes.
#include "kernels/ops/common.cuh"
#include "kernels/ops/rope_params.h"

namespace ligerd {
namespace rope {

using XT = LIGERD_XT;
using CT = LIGERD_CT;
// Elements per 16-byte access of q/k; cos/sin use the same element count (32 bytes if fp32).
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
// Heads whose loads are issued before the first store (memory-level parallelism per thread).
constexpr int kUnroll = 4;

template <class I>
struct Split {
  I s, b, group, lane;
};
template <class I>
__device__ __forceinline__ Split<I> split(I item, const LigerdRopeParams& p) {
  const I lanes = static_cast<I>(p.lanes), per_token = static_cast<I>(p.groups) * lanes;
  const I tok = item / per_token, rest = item - tok * per_token;
  const I group = rest / lanes;
  const I s = tok / static_cast<I>(p.batch);
  return {s, tok - s * static_cast<I>(p.batch), group, rest - group * lanes};
}

template <int VEC>
__device__ __forceinline__ void run(const LigerdRopeParams& p) {
  // Thread -> (token, group, lane), tokens seq-major (batch fastest). 32-bit divisions when
  // the item count allows (always, short of 4G items); 64-bit otherwise.
  const unsigned long long item =
      static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= static_cast<unsigned long long>(p.items)) return;
  long long s, b, col;
  int group;
  if (p.items <= 0xffffffffll) {
    const Split<unsigned> q = split<unsigned>(static_cast<unsigned>(item), p);
    s = q.s, b = q.b, group = static_cast<int>(q.group), col = static_cast<long long>(q.lane) * VEC;
  } else {
    const Split<unsigned long long> q = split<unsigned long long>(item, p);
    s = q.s, b = q.b, group = static_cast<int>(q.group), col = static_cast<long long>(q.lane) * VEC;
  }

  const CT* cp = static_cast<const CT*>(p.cos) + b * p.cos_stride[0] + s * p.cos_stride[1] + col;
  const CT* sp = static_cast<const CT*>(p.sin) + b * p.sin_stride[0] + s * p.sin_stride[1] + col;
  Vec<CT, VEC> cv_lo, cv_hi, sv_lo, sv_hi;
  cv_lo.load(cp);
  cv_hi.load(cp + p.half);
  sv_lo.load(sp);
  sv_hi.load(sp + p.half);
  // Base pointers of this token's rows in q and k (head 0), inputs and outputs. Scalars, not
  // arrays indexed by a runtime q/k choice (that would put them in local memory).
  const XT* const xq = static_cast<const XT*>(p.x[0]) + b * p.x_stride[0][0] + s * p.x_stride[0][2] + col;
  const XT* const xk = static_cast<const XT*>(p.x[1]) + b * p.x_stride[1][0] + s * p.x_stride[1][2] + col;
  XT* const yq = static_cast<XT*>(p.y[0]) + b * p.y_stride[0][0] + s * p.y_stride[0][2] + col;
  XT* const yk = static_cast<XT*>(p.y[1]) + b * p.y_stride[1][0] + s * p.y_stride[1][2] + col;
  const long long nq = p.heads[0];
  const long long h_begin = group * p.heads_per_thread;
  long long h_end = h_begin + p.heads_per_thread;
  if (h_end > nq + p.heads[1]) h_end = nq + p.heads[1];

  for (long long h0 = h_begin; h0 < h_end; h0 += kUnroll) {
    Vec<XT, VEC> lo[kUnroll], hi[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long h = h0 + u;
      if (h < h_end) {
        const XT* src = h < nq ? xq + h * p.x_stride[0][1] : xk + (h - nq) * p.x_stride[1][1];
        lo[u].load(src);
        hi[u].load(src + p.half);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long h = h0 + u;
      if (h < h_end) {
        XT* dst = h < nq ? yq + h * p.y_stride[0][1] : yk + (h - nq) * p.y_stride[1][1];
        float o_lo[VEC], o_hi[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          // cos/sin stay packed in registers (fewer registers, more threads resident) and are
          // widened per use: a shift for bf16, one cvt for fp16.
          const float xl = lo[u].get(e), xh = hi[u].get(e);
#if LIGERD_ROPE_BWD
          o_lo[e] = fmaf(xl, cv_lo.get(e), xh * sv_hi.get(e));
          o_hi[e] = fmaf(xh, cv_hi.get(e), -(xl * sv_lo.get(e)));
#else
          o_lo[e] = fmaf(xl, cv_lo.get(e), -(xh * sv_lo.get(e)));
          o_hi[e] = fmaf(xh, cv_hi.get(e), xl * sv_hi.get(e));
#endif
        }
        Vec<XT, VEC> vl, vh;
        vl.set_all(o_lo);
        vh.set_all(o_hi);
        vl.store(dst);
        vh.store(dst + p.half);
      }
    }
  }
}

}  // namespace rope
}  // namespace ligerd

// Launch bounds LIGERD_LB_V / _S from the entries (rope.toml: 512 threads leave the compiler 128
// registers a thread, enough for the fp32 cos/sin and 4 heads' vectors without spilling; 1024
// would cap it at 64). rope.cc plans with the same bound.
extern "C" __global__ void LIGERD_LB_V rope_v(const LigerdRopeParams p) {
  ligerd::rope::run<ligerd::rope::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_S rope_s(const LigerdRopeParams p) {
  ligerd::rope::run<1>(p);
}
