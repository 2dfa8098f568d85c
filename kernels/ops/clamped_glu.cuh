// Clamped gated activation of GPT-OSS's and DeepSeek-V4's MoE experts (transformers'
// GptOssExperts._apply_gate, DeepseekV4Experts._apply_gate), forward and backward. Compiled by
// NVRTC (see clamped_glu.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_CGLU_BWD    0: forward module, 1: backward module
//   LIGERD_CGLU_PAIRS  layout of the [rows, 2I] input x (and of dx):
//                      0: halves, gate = x[:, :I], up = x[:, I:] (DeepSeek-V4, chunk(2));
//                      1: pairs, gate = x[:, 0::2], up = x[:, 1::2] (GPT-OSS)
//   LIGERD_XT          element type of every tensor: float | ligerd::bf16 | ligerd::f16
// Kernels in each module:
//   clamped_glu_{fwd,bwd}_v  16-byte vectors: every pointer 16-byte aligned, I and every row
//                            stride multiples of the vector width VEC. A thread's position is VEC
//                            outputs of a row: halves read VEC gates and the VEC ups I further on,
//                            pairs read the 2 VEC contiguous inputs of those outputs.
//   clamped_glu_{fwd,bwd}_s  one element per access: any I, any alignment.
// 1-D blocks, each over one contiguous chunk of LIGERD_CGLU_POSITIONS_PER_THREAD * blockDim.x
// positions of the rows x (I / VEC) grid (glu.cuh's layout; a grid smaller than the chunk count
// loops).
//
// Numerics: x and dy are converted to fp32 on load, everything is computed in fp32, and each
// output is rounded once to XT (torch eager rounds every intermediate to XT; we don't).
//   g = min(gate, limit)            u = max(min(up, limit), -limit)     (NaN stays NaN, as clamp)
//   s = sigmoid(alpha g)            y = g s (u + up_offset)
//   backward, with autograd's clamp gradients (torch passes the gradient only strictly inside
//   the bounds: zero where the input was clamped, at exactly +-limit and for NaN):
//   dgate = gate < limit            ? dy (u + up_offset) s (1 + alpha g (1 - s)) : 0
//   dup   = -limit < up < limit     ? dy g s                                      : 0
// GPT-OSS: alpha = swiglu_alpha (1.702), up_offset = 1; DeepSeek-V4: alpha = 1 (silu),
// up_offset = 0. As glu.cuh, 16-bit outputs use the SFU's fast exp (~2 ulp of fp32, far below
// their own rounding), fp32 outputs the accurate expf. s = 1 / (1 + e) is the correctly rounded
// reciprocal (__frcp_rn, what IEEE 1.f / y gives) in both: the fast division's approximation
// returns 0 for denominators above 2^126, which would zero s (and y) for -alpha g in
// (87.3, 88.7) where the true value is still a representable ~2^-126.
#include "kernels/ops/clamped_glu_params.h"
#include "kernels/ops/common.cuh"

namespace ligerd {
namespace cglu {

using XT = LIGERD_XT;
constexpr bool kPairs = LIGERD_CGLU_PAIRS != 0;
// Elements per 16-byte access.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
constexpr int kUnroll = LIGERD_CGLU_POSITIONS_PER_THREAD;
constexpr bool kFast = sizeof(XT) == 2;

__device__ __forceinline__ float exp_(float x) { return kFast ? __expf(x) : expf(x); }
// sigmoid(z) = 1 / (1 + e^-z): 0 for e^-z = inf, 1 for e^-z = 0.
__device__ __forceinline__ float sigmoid_(float z) { return __frcp_rn(1.f + exp_(-z)); }

// Position i of the rows x ncols grid (in VEC units) -> row and column.
struct Pos {
  long long row, col;
};
__device__ __forceinline__ Pos pos_of(long long i, long long ncols, long long rows) {
  if (rows == 1) return {0, i};
  const long long r = i / ncols;
  return {r, i - r * ncols};
}

// The two VEC-element pieces of x (or dx) behind outputs [c, c + VEC) of a row: halves: the
// gates at c and the ups at I + c; pairs: the 2 VEC contiguous elements at 2c, split in two.
__device__ __forceinline__ long long off0(long long c, long long /*cols*/) { return kPairs ? 2 * c : c; }
template <int VEC>
__device__ __forceinline__ long long off1(long long c, long long cols) {
  return kPairs ? 2 * c + VEC : cols + c;
}
// Gate / up of output k from the two pieces a, b (element j of the pair layout's 2 VEC chunk is
// a[j] for j < VEC, else b[j - VEC]). k is a compile-time constant after unrolling.
template <int VEC>
__device__ __forceinline__ float gate_of(const Vec<XT, VEC>& a, const Vec<XT, VEC>& b, int k) {
  if constexpr (!kPairs) return a.get(k);
  return 2 * k < VEC ? a.get(2 * k) : b.get(2 * k - VEC);
}
template <int VEC>
__device__ __forceinline__ float up_of(const Vec<XT, VEC>& a, const Vec<XT, VEC>& b, int k) {
  if constexpr (!kPairs) return b.get(k);
  return 2 * k + 1 < VEC ? a.get(2 * k + 1) : b.get(2 * k + 1 - VEC);
}

__device__ __forceinline__ float clamp_gate(float x, float limit) { return x > limit ? limit : x; }
__device__ __forceinline__ float clamp_up(float x, float limit) {
  return x > limit ? limit : (x < -limit ? -limit : x);
}

#if LIGERD_CGLU_BWD == 0
// Forward. Moves 3*R*I*b bytes (read x: 2*R*I elements; write y: R*I; b bytes each) and nothing
// else: HBM-bound, limit = 3*R*I*b / copy bandwidth.
template <int VEC>
__device__ __forceinline__ void run(const LigerdClampedGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* x = static_cast<const XT*>(p.x);
  XT* y = static_cast<XT*>(p.out);
  const long long step = blockDim.x;
  const long long chunk = kUnroll * step;
  for (long long i0 = static_cast<long long>(blockIdx.x) * chunk + threadIdx.x; i0 < total;
       i0 += static_cast<long long>(gridDim.x) * chunk) {
    Vec<XT, VEC> av[kUnroll], bv[kUnroll];
    long long off_y[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long i = i0 + u * step;
      if (i < total) {
        const Pos q = pos_of(i, ncols, p.rows);
        const long long c = q.col * VEC;
        const XT* xr = x + q.row * p.x_stride;
        av[u].load(xr + off0(c, p.cols));
        bv[u].load(xr + off1<VEC>(c, p.cols));
        off_y[u] = q.row * p.out_stride + c;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i0 + u * step < total) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float g = clamp_gate(gate_of<VEC>(av[u], bv[u], k), p.limit);
          const float up = clamp_up(up_of<VEC>(av[u], bv[u], k), p.limit);
          const float s = sigmoid_(p.alpha * g);
          o[k] = (g * s) * (up + p.up_offset);
        }
        Vec<XT, VEC> ov;
        ov.set_all(o);
        ov.store(y + off_y[u]);
      }
    }
  }
}
#else
// Backward. Moves 5*R*I*b bytes (read x: 2*R*I elements, dy: R*I; write dx: 2*R*I) and nothing
// else: HBM-bound, limit = 5*R*I*b / copy bandwidth. dx is never dy or x (the planner's generic
// checks refuse any overlap of an output).
template <int VEC>
__device__ __forceinline__ void run(const LigerdClampedGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* x = static_cast<const XT*>(p.x);
  const XT* dy = static_cast<const XT*>(p.dy);
  XT* dx = static_cast<XT*>(p.out);
  const long long step = blockDim.x;
  const long long chunk = kUnroll * step;
  for (long long i0 = static_cast<long long>(blockIdx.x) * chunk + threadIdx.x; i0 < total;
       i0 += static_cast<long long>(gridDim.x) * chunk) {
    Vec<XT, VEC> av[kUnroll], bv[kUnroll], gv[kUnroll];
    Pos q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long i = i0 + u * step;
      if (i < total) {
        q[u] = pos_of(i, ncols, p.rows);
        const long long c = q[u].col * VEC;
        const XT* xr = x + q[u].row * p.x_stride;
        av[u].load(xr + off0(c, p.cols));
        bv[u].load(xr + off1<VEC>(c, p.cols));
        gv[u].load(dy + q[u].row * p.dy_stride + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i0 + u * step < total) {
        float dgate[VEC], dup[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xg = gate_of<VEC>(av[u], bv[u], k);
          const float xu = up_of<VEC>(av[u], bv[u], k);
          const float g = clamp_gate(xg, p.limit);
          const float up = clamp_up(xu, p.limit);
          const float s = sigmoid_(p.alpha * g);
          const float d = gv[u].get(k);
          // d(g s)/dg = s (1 + alpha g (1 - s)), formed as s (1 + (alpha (1 - s)) g) so that a
          // saturated s = 1 gives 1 for any finite g, and taken as 0 where s underflowed to 0 for
          // a finite g (alpha g may overflow fp32 there, and the true value is below fp32's
          // range); an infinite g gives NaN, as autograd's inf * 0.
          const float dglu = (s == 0.f && isfinite(g)) ? 0.f : s * fmaf(p.alpha * (1.f - s), g, 1.f);
          // Selects, not products: a clamped position's gradient is 0 even for an inf/NaN dy.
          dgate[k] = xg < p.limit ? d * (up + p.up_offset) * dglu : 0.f;
          dup[k] = (xu < p.limit && xu > -p.limit) ? d * (g * s) : 0.f;
        }
        // Back into x's layout: halves: piece a = gates, b = ups; pairs: element 2k = gate k,
        // 2k + 1 = up k of the 2 VEC chunk.
        float oa[VEC], ob[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          if constexpr (kPairs) {
            oa[j] = (j & 1) ? dup[j >> 1] : dgate[j >> 1];
            const int jb = j + VEC;
            ob[j] = (jb & 1) ? dup[jb >> 1] : dgate[jb >> 1];
          } else {
            oa[j] = dgate[j];
            ob[j] = dup[j];
          }
        }
        const long long c = q[u].col * VEC;
        XT* dr = dx + q[u].row * p.out_stride;
        Vec<XT, VEC> dav, dbv;
        dav.set_all(oa);
        dbv.set_all(ob);
        dav.store(dr + off0(c, p.cols));
        dbv.store(dr + off1<VEC>(c, p.cols));
      }
    }
  }
}
#endif

}  // namespace cglu
}  // namespace ligerd

// Launch bounds: LIGERD_LB_V, LIGERD_LB_S from the entries (clamped_glu.toml).
#if LIGERD_CGLU_BWD == 0
extern "C" __global__ void LIGERD_LB_V clamped_glu_fwd_v(const LigerdClampedGluParams p) {
  ligerd::cglu::run<ligerd::cglu::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_S clamped_glu_fwd_s(const LigerdClampedGluParams p) {
  ligerd::cglu::run<1>(p);
}
#else
extern "C" __global__ void LIGERD_LB_V clamped_glu_bwd_v(const LigerdClampedGluParams p) {
  ligerd::cglu::run<ligerd::cglu::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_S clamped_glu_bwd_s(const LigerdClampedGluParams p) {
  ligerd::cglu::run<1>(p);
}
#endif
