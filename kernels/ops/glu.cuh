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
// any shape). Both are grid-stride loops over the rows x cols elements, 1-D blocks.
// glu_{fwd,bwd}_v2 / _v4: the vector kernel with 2 / 4 vectors per thread per loop trip, all
// loads issued before any math, so each thread keeps 2-4x more bytes in flight (the autotuner's
// LaunchConfig::iters; _v is iters 1). A block covers blockDim.x * ITERS consecutive vectors,
// vector k of thread t at k * blockDim.x + t, so every load instruction stays coalesced.
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

__device__ __forceinline__ float act(float x) {
  if constexpr (kAct == 0) {
    return x / (1.f + expf(-x));
  } else {
    const float t = tanhf(kK0 * fmaf(kK1 * x, x * x, x));
    return 0.5f * x * (1.f + t);
  }
}

// act(x) and act'(x) together (they share the exp / tanh).
__device__ __forceinline__ void act_and_grad(float x, float* f, float* g) {
  if constexpr (kAct == 0) {
    const float s = 1.f / (1.f + expf(-x));
    *f = x * s;
    *g = s * fmaf(x, 1.f - s, 1.f);
  } else {
    const float x2 = x * x;
    const float t = tanhf(kK0 * fmaf(kK1 * x, x2, x));
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
template <int VEC, int ITERS>
__device__ __forceinline__ void fwd(const LigerdGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* a = static_cast<const XT*>(p.a);
  const XT* b = static_cast<const XT*>(p.b);
  XT* c = static_cast<XT*>(p.out0);
  const long long tile = static_cast<long long>(blockDim.x) * ITERS;
  const long long step = static_cast<long long>(gridDim.x) * tile;
  for (long long base = static_cast<long long>(blockIdx.x) * tile + threadIdx.x; base < total; base += step) {
    Vec<XT, VEC> av[ITERS], bv[ITERS];
    Pos q[ITERS];
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const long long i = base + static_cast<long long>(k) * blockDim.x;
      if (i < total) {
        q[k] = pos_of(i, ncols, p.rows);
        av[k].load(a + q[k].row * p.a_stride + q[k].col * VEC);
        bv[k].load(b + q[k].row * p.b_stride + q[k].col * VEC);
      }
    }
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      if (base + static_cast<long long>(k) * blockDim.x < total) {
        float o[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = act(av[k].get(e)) * bv[k].get(e);
        Vec<XT, VEC> cv;
        cv.set_all(o);
        cv.store(c + q[k].row * p.out0_stride + q[k].col * VEC);
      }
    }
  }
}
}  // namespace glu
}  // namespace ligerd

extern "C" __global__ void __launch_bounds__(1024) glu_fwd_v(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, 1>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_fwd_v2(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, 2>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_fwd_v4(const LigerdGluParams p) {
  ligerd::glu::fwd<ligerd::glu::kVec, 4>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_fwd_s(const LigerdGluParams p) {
  ligerd::glu::fwd<1, 1>(p);
}

#else  // LIGERD_GLU_BWD
// Backward. Moves 5*M*F*b bytes (read dc, a, b; write da, db) and nothing else: HBM-bound,
// limit = 5*M*F*b / copy bandwidth. In place (da over a, db over b) it needs no extra memory.
template <int VEC, int ITERS>
__device__ __forceinline__ void bwd(const LigerdGluParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* dc = static_cast<const XT*>(p.dc);
  const XT* a = static_cast<const XT*>(p.a);
  const XT* b = static_cast<const XT*>(p.b);
  XT* da = static_cast<XT*>(p.out0);
  XT* db = static_cast<XT*>(p.out1);
  const long long tile = static_cast<long long>(blockDim.x) * ITERS;
  const long long step = static_cast<long long>(gridDim.x) * tile;
  for (long long base = static_cast<long long>(blockIdx.x) * tile + threadIdx.x; base < total; base += step) {
    Vec<XT, VEC> gv[ITERS], av[ITERS], bv[ITERS];
    Pos q[ITERS];
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const long long i = base + static_cast<long long>(k) * blockDim.x;
      if (i < total) {
        q[k] = pos_of(i, ncols, p.rows);
        gv[k].load(dc + q[k].row * p.dc_stride + q[k].col * VEC);
        av[k].load(a + q[k].row * p.a_stride + q[k].col * VEC);
        bv[k].load(b + q[k].row * p.b_stride + q[k].col * VEC);
      }
    }
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      if (base + static_cast<long long>(k) * blockDim.x < total) {
        float oa[VEC], ob[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float f, g;
          act_and_grad(av[k].get(e), &f, &g);
          const float d = gv[k].get(e);
          oa[e] = d * bv[k].get(e) * g;
          ob[e] = d * f;
        }
        Vec<XT, VEC> dav, dbv;
        dav.set_all(oa);
        dbv.set_all(ob);
        // In place (da over a, db over b) is still race-free: this thread read element i of
        // dc, a, b above, and no other thread touches element i.
        dav.store(da + q[k].row * p.out0_stride + q[k].col * VEC);
        dbv.store(db + q[k].row * p.out1_stride + q[k].col * VEC);
      }
    }
  }
}
}  // namespace glu
}  // namespace ligerd

extern "C" __global__ void __launch_bounds__(1024) glu_bwd_v(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, 1>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_bwd_v2(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, 2>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_bwd_v4(const LigerdGluParams p) {
  ligerd::glu::bwd<ligerd::glu::kVec, 4>(p);
}
extern "C" __global__ void __launch_bounds__(1024) glu_bwd_s(const LigerdGluParams p) {
  ligerd::glu::bwd<1, 1>(p);
}
#endif  // LIGERD_GLU_BWD
