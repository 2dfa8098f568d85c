// SwiGLU and GeGLU (Liger's LigerSiLUMulFunction / LigerGELUMulFunction), forward and backward.
// Compiled by NVRTC (see glu.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_GLU_BWD  0: forward module, 1: backward module
//   LIGERD_GLU_ACT  0: silu(x) = x * sigmoid(x); 1: gelu_tanh(x) = 0.5 x (1 + tanh(k0 (x + k1 x^3)))
//                   with k0 = sqrt(2/pi), k1 = 0.044715
//   LIGERD_XT       element type of every tensor: float | ligerd::bf16 | ligerd::f16
// Kernels in each module: glu_{fwd,bwd}_v (16-byte vectors: needs cols % VEC == 0, every row
// stride % VEC == 0, 16-byte aligned pointers) and glu_{fwd,bwd}_s (one element per access,
// any shape). 1-D blocks, each over one contiguous chunk of the rows x cols elements (a
// persistent grid-stride loop measured 4-7% slower on an H100: 2.81-2.91 vs 3.05 TB/s at
// 16384 x 14336 bf16, for any block size or grid multiple).
// glu_{fwd,bwd}_v1 / _v4: the vector kernels with 1 / 4 positions per thread instead of
// LIGERD_GLU_POSITIONS_PER_THREAD (the autotuner's LaunchConfig::iters; glu.cc names them).
//
// Numerics: a, b, dc are converted to fp32 on load; everything is computed in fp32 and each
// output is rounded once to XT (torch eager rounds act(a) to XT before the multiply; Liger
// does too; we don't, so we are at least as close to the exact value).
//   forward   c  = act(a) * b
//   backward  da = dc * b * act'(a),  db = dc * act(a)   (act recomputed, nothing saved)
//   silu'(x)      = s (1 + x (1 - s)),  s = sigmoid(x)
//   gelu_tanh'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k0 (1 + 3 k1 x^2),  t = tanh(k0 (x + k1 x^3))
// The backward writes da over a and db over b when called in place: each thread reads its
// element of dc, a, b before writing the same element of da, db, so that is race-free.
#include "kernels/ops/common.cuh"
#include "kernels/ops/glu_params.h"

namespace ligerd {
namespace glu {

using XT = LIGERD_XT;
constexpr int kAct = LIGERD_GLU_ACT;
// Elements per 16-byte access.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
constexpr float kK0 = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kK1 = 0.044715f;
// Vector positions per thread of the default kernels (glu_params.h says why this many).
constexpr int kUnroll = LIGERD_GLU_POSITIONS_PER_THREAD;

// 16-bit outputs keep 8 (bf16) or 11 (fp16) bits, so the activation uses the SFU's fast exp
// (ex2.approx, ~2 ulp of fp32) and a fast division: that halves the instruction count, which
// matters because at ~25 fp32 instructions per element with IEEE expf/division these kernels
// are as much issue-bound as HBM-bound on an H100 (3.3 TB/s against 235 M elements per pass at
// LLaMA-3-8B's MLP). fp32 outputs keep the accurate expf/tanhf and IEEE division.
constexpr bool kFast = sizeof(XT) == 2;

__device__ __forceinline__ float exp_(float x) { return kFast ? __expf(x) : expf(x); }
__device__ __forceinline__ float div_(float a, float b) { return kFast ? __fdividef(a, b) : a / b; }
// tanh(y) = 1 - 2 / (1 + e^(2y)): in the fast form the absolute error stays ~1e-7 (the relative
// error grows near 0, where gelu's 0.5 x (1 + t) does not care).
__device__ __forceinline__ float tanh_(float y) {
  return kFast ? 1.f - div_(2.f, 1.f + exp_(2.f * y)) : tanhf(y);
}

__device__ __forceinline__ float act(float x) {
  if constexpr (kAct == 0) {
    return div_(x, 1.f + exp_(-x));
  } else {
    const float t = tanh_(kK0 * fmaf(kK1 * x, x * x, x));
    return 0.5f * x * (1.f + t);
  }
}

// act(x) and act'(x) together (they share the exp / tanh).
__device__ __forceinline__ void act_and_grad(float x, float* f, float* g) {
  if constexpr (kAct == 0) {
    const float s = div_(1.f, 1.f + exp_(-x));
    *f = x * s;
    *g = s * fmaf(x, 1.f - s, 1.f);
  } else {
    const float x2 = x * x;
    const float t = tanh_(kK0 * fmaf(kK1 * x, x2, x));
    *f = 0.5f * x * (1.f + t);
    *g = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * kK0 * fmaf(3.f * kK1, x2, 1.f);
  }
}

// Element (or vector) index i of the rows x cols grid (in VEC units) -> row and column.
// A dense call arrives as one row, so the division is skipped on the hot path.
struct Pos {
  long long row, col;
};
__device__ __forceinline__ Pos pos_of(long long i, long long ncols, long long rows) {
  if (rows == 1) return {0, i};
  const long long r = i / ncols;
  return {r, i - r * ncols};
}

#if LIGERD_GLU_BWD == 0
// Forward. Moves 3*M*F*b bytes (read a, b; write c) and nothing else: HBM-bound,
// limit = 3*M*F*b / copy bandwidth.
template <int VEC, int UNROLL>
__device__ __forceinline__ void fwd(const LigerdGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* a = static_cast<const XT*>(p.a);
  const XT* b = static_cast<const XT*>(p.b);
  XT* c = static_cast<XT*>(p.out0);
  // Block k owns the contiguous chunk of UNROLL * blockDim.x vectors starting at
  // k * UNROLL * blockDim.x; thread t takes positions t, t + blockDim.x, ... of it, all loads
  // issued before any math. The grid normally covers every chunk once (the loop runs once).
  const long long step = blockDim.x;
  const long long chunk = UNROLL * step;
  for (long long i0 = static_cast<long long>(blockIdx.x) * chunk + threadIdx.x; i0 < total;
       i0 += static_cast<long long>(gridDim.x) * chunk) {
    Vec<XT, VEC> av[UNROLL], bv[UNROLL];
    long long off_a[UNROLL], off_b[UNROLL], off_c[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const long long i = i0 + u * step;
      if (i < total) {
        const Pos q = pos_of(i, ncols, p.rows);
        const long long col = q.col * VEC;
        off_a[u] = q.row * p.a_stride + col;
        off_b[u] = q.row * p.b_stride + col;
        off_c[u] = q.row * p.out0_stride + col;
        av[u].load(a + off_a[u]);
        bv[u].load(b + off_b[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (i0 + u * step < total) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] = act(av[u].get(k)) * bv[u].get(k);
        Vec<XT, VEC> cv;
        cv.set_all(o);
        cv.store(c + off_c[u]);
      }
    }
  }
}
}  // namespace glu
}  // namespace ligerd

// Launch bounds: LIGERD_LB_V, _S, _V1, _V4 from the entries (glu.toml).
extern "C" __global__ void LIGERD_LB_V glu_fwd_v(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, ligerd::glu::kUnroll>(p);
}
extern "C" __global__ void LIGERD_LB_S glu_fwd_s(const LigerdGluParams p) {
  ligerd::glu::fwd<1, ligerd::glu::kUnroll>(p);
}
#if LIGERD_GLU_POSITIONS_PER_THREAD != 1
extern "C" __global__ void LIGERD_LB_V1 glu_fwd_v1(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, 1>(p);
}
#endif
#if LIGERD_GLU_POSITIONS_PER_THREAD != 4
extern "C" __global__ void LIGERD_LB_V4 glu_fwd_v4(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, 4>(p);
}
#endif

#else  // LIGERD_GLU_BWD
// Backward. Moves 5*M*F*b bytes (read dc, a, b; write da, db) and nothing else: HBM-bound,
// limit = 5*M*F*b / copy bandwidth. In place (da over a, db over b) it needs no extra memory.
template <int VEC, int UNROLL>
__device__ __forceinline__ void bwd(const LigerdGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* dc = static_cast<const XT*>(p.dc);
  const XT* a = static_cast<const XT*>(p.a);
  const XT* b = static_cast<const XT*>(p.b);
  XT* da = static_cast<XT*>(p.out0);
  XT* db = static_cast<XT*>(p.out1);
  // Chunks and positions as in fwd; every load before any store (which also keeps the
  // in-place case race-free: a thread reads its own elements before writing them).
  const long long step = blockDim.x;
  const long long chunk = UNROLL * step;
  for (long long i0 = static_cast<long long>(blockIdx.x) * chunk + threadIdx.x; i0 < total;
       i0 += static_cast<long long>(gridDim.x) * chunk) {
    Vec<XT, VEC> gv[UNROLL], av[UNROLL], bv[UNROLL];
    Pos q[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const long long i = i0 + u * step;
      if (i < total) {
        q[u] = pos_of(i, ncols, p.rows);
        const long long col = q[u].col * VEC;
        gv[u].load(dc + q[u].row * p.dc_stride + col);
        av[u].load(a + q[u].row * p.a_stride + col);
        bv[u].load(b + q[u].row * p.b_stride + col);
      }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (i0 + u * step < total) {
        float oa[VEC], ob[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          float f, g;
          act_and_grad(av[u].get(k), &f, &g);
          const float d = gv[u].get(k);
          oa[k] = d * bv[u].get(k) * g;
          ob[k] = d * f;
        }
        const long long col = q[u].col * VEC;
        Vec<XT, VEC> dav, dbv;
        dav.set_all(oa);
        dbv.set_all(ob);
        dav.store(da + q[u].row * p.out0_stride + col);
        dbv.store(db + q[u].row * p.out1_stride + col);
      }
    }
  }
}
}  // namespace glu
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_V glu_bwd_v(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, ligerd::glu::kUnroll>(p);
}
extern "C" __global__ void LIGERD_LB_S glu_bwd_s(const LigerdGluParams p) {
  ligerd::glu::bwd<1, ligerd::glu::kUnroll>(p);
}
#if LIGERD_GLU_POSITIONS_PER_THREAD != 1
extern "C" __global__ void LIGERD_LB_V1 glu_bwd_v1(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, 1>(p);
}
#endif
#if LIGERD_GLU_POSITIONS_PER_THREAD != 4
extern "C" __global__ void LIGERD_LB_V4 glu_bwd_v4(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, 4>(p);
}
#endif
#endif  // LIGERD_GLU_BWD
