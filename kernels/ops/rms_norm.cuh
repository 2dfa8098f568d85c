// RMSNorm forward and backward, Liger-compatible semantics. Compiled by NVRTC (see rms_norm.cc).
//
// Specialisation (compile-time -D defines, one module per combination):
//   LIGERD_RMS_BWD   0: forward module, 1: backward module (+ the dW reduction kernel)
//   LIGERD_XT        element type of X, Y, dY, dX: float | ligerd::bf16 | ligerd::f16
//   LIGERD_WT        element type of W and dW: LIGERD_XT or float
//   LIGERD_HAS_W     0: elementwise_affine=False (no W, no dW)
//   LIGERD_CAST      0 llama, 1 gemma, 2 none (Liger's casting_mode)
// Each module holds every row shape as its own extern "C" kernel, so the host picks one by
// name: rms_norm_{fwd,bwd}_i<ITERS>_{v,s} keep a whole row in registers, ITERS vectors per
// thread; _v uses 16-byte vectors (needs n % VEC == 0 and aligned rows), _s one element per
// access (any n); rms_norm_{fwd,bwd}_loop_{v,s} stream rows too long for registers in two passes.
// Launch shape: blockDim.x threads share a row (power of two <= 32 or a multiple of 32),
// blockDim.y rows per block.
//
// Numerics (x, w, dy converted to fp32 on load; all sums in fp32 in a fixed order, so results
// are bitwise reproducible for a given launch config):
//   rstd  = 1 / sqrt(sum(x^2) / n + eps), stored fp32 per row
//   llama y = T( T(x * rstd) * (offset + w) )          only the normalised x is rounded first
//   gemma y = T( x * rstd * (offset + w) )             everything fp32, one rounding at the end
//   none  y = T( T(x * T(rstd)) * WT(T(offset) + w) )  each step rounded to the input dtype as
//         Liger's Triton code does in that dtype; rstd = T(rsqrt(T(T(ms) + T(eps)))). The
//         difference from Liger: the sum of squares accumulates in fp32 (Triton's bf16/fp16
//         tree sum rounds partial sums), rounded to T once it is complete.
//   backward (all modes, fp32 like Liger's, which upcasts X there):
//         m = dy * (offset + w); dx = rstd * m - rstd^3 * (sum(m * x) / n) * x
//         dW = sum over rows of dy * xn, xn = T(x * rstd) for llama, x * rstd otherwise.
#include "kernels/ops/common.cuh"
#include "kernels/ops/rms_norm_params.h"

namespace ligerd {
namespace rms {

using XT = LIGERD_XT;
using WT = LIGERD_WT;
constexpr bool kHasW = LIGERD_HAS_W != 0;
constexpr int kCast = LIGERD_CAST;
constexpr int kLlama = 0, kGemma = 1, kNone = 2;
// Elements per 16-byte access of X: the widest single load/store an SM issues.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));

__device__ __forceinline__ float rstd_of(float sum_sq, int n, float eps) {
  if constexpr (kCast == kNone) {
    const float ms = round_to<XT>(sum_sq / static_cast<float>(n));
    return round_to<XT>(rsqrtf(round_to<XT>(ms + round_to<XT>(eps))));
  } else {
    return rsqrtf(sum_sq / static_cast<float>(n) + eps);
  }
}

// One output element from x (fp32), rstd and w (fp32; ignored without weight).
__device__ __forceinline__ float norm_out(float x, float rstd, float w, float offset) {
  if constexpr (kCast == kGemma) {
    const float v = x * rstd;
    return kHasW ? v * (offset + w) : v;
  } else if constexpr (kCast == kLlama) {
    const float xn = round_to<XT>(x * rstd);
    return kHasW ? xn * (offset + w) : xn;
  } else {
    const float xn = round_to<XT>(x * rstd);
    return kHasW ? xn * round_to<WT>(round_to<XT>(offset) + w) : xn;
  }
}

// The normalised input as the weight gradient sees it.
__device__ __forceinline__ float xn_for_dw(float x, float rstd) {
  return kCast == kLlama ? round_to<XT>(x * rstd) : x * rstd;
}

#if LIGERD_RMS_BWD == 0
// The forward loop kernel keeps this many vectors per thread in flight per pass (enough
// outstanding loads to cover DRAM latency without the register cost of a whole row).
constexpr int kLoopUnroll = 4;

// ---------------------------------------------------------------------------------------------
// Forward. Moves 2*rows*n*sizeof(XT) bytes (read x, write y) + n*sizeof(WT) (w, L2-resident
// after the first rows) + 4*rows (rstd): HBM-bound, limit = bytes / copy bandwidth.

// A row in registers: x is read once, kept as raw 16-bit/32-bit words (4 registers per 16-byte
// vector whatever the dtype), reduced, then normalised and written.
template <int ITERS, int VEC>
__device__ __forceinline__ void fwd_reg(const LigerdRmsNormFwdParams& p) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  const int lane = threadIdx.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const XT* x = static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride;

  Vec<XT, VEC> xv[ITERS];
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = lane + k * tpr;
    if (valid && j < nvec) xv[k].load(x + static_cast<long long>(j) * VEC);
    else xv[k].zero();
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float v = xv[k].get(i);
      ss = fmaf(v, v, ss);
    }
  ss = row_sum(ss, red);
  if (!valid) return;  // no barriers below
  const float rstd = rstd_of(ss, p.n, p.eps);
  if (lane == 0) p.rstd[row] = rstd;

  const WT* w = static_cast<const WT*>(p.w);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = lane + k * tpr;
    if (j < nvec) {
      Vec<WT, VEC> wv;
      if constexpr (kHasW) wv.load(w + static_cast<long long>(j) * VEC);
      float o[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = norm_out(xv[k].get(i), rstd, kHasW ? wv.get(i) : 0.f, p.offset);
      Vec<XT, VEC> out;
      out.set_all(o);
      out.store(y + static_cast<long long>(j) * VEC);
    }
  }
}

// Rows longer than registers hold: pass 1 sums squares, pass 2 re-reads x (mostly from L2,
// which holds the rows in flight) and writes y. Costs one extra read of x at worst.
template <int VEC>
__device__ __forceinline__ void fwd_loop(const LigerdRmsNormFwdParams& p) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const XT* x = static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride;

  float ss = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) xv[u].load(x + static_cast<long long>(j) * VEC);
      else xv[u].zero();
    }
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float v = xv[u].get(i);
        ss = fmaf(v, v, ss);
      }
  }
  ss = row_sum(ss, red);
  if (!valid) return;
  const float rstd = rstd_of(ss, p.n, p.eps);
  if (threadIdx.x == 0) p.rstd[row] = rstd;

  const WT* w = static_cast<const WT*>(p.w);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
  for (int j0 = threadIdx.x; j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    Vec<WT, VEC> wv[kLoopUnroll];
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) {
        xv[u].load(x + static_cast<long long>(j) * VEC);
        if constexpr (kHasW) wv[u].load(w + static_cast<long long>(j) * VEC);
      }
    }
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = norm_out(xv[u].get(i), rstd, kHasW ? wv[u].get(i) : 0.f, p.offset);
        Vec<XT, VEC> out;
        out.set_all(o);
        out.store(y + static_cast<long long>(j) * VEC);
      }
    }
  }
}

}  // namespace rms
}  // namespace ligerd

// Every forward kernel may be launched with up to 1024 threads: a row in registers costs
// 4 * ITERS registers, so even ITERS = 8 fits the 64 registers/thread that 1024 threads allow.
#define LIGERD_RMS_FWD_REG(I)                                                                   \
  extern "C" __global__ void __launch_bounds__(1024)                                            \
      rms_norm_fwd_i##I##_v(const LigerdRmsNormFwdParams p) { ligerd::rms::fwd_reg<I, ligerd::rms::kVec>(p); } \
  extern "C" __global__ void __launch_bounds__(1024)                                            \
      rms_norm_fwd_i##I##_s(const LigerdRmsNormFwdParams p) { ligerd::rms::fwd_reg<I, 1>(p); }
LIGERD_RMS_FWD_REG(1)
LIGERD_RMS_FWD_REG(2)
LIGERD_RMS_FWD_REG(3)
LIGERD_RMS_FWD_REG(4)
LIGERD_RMS_FWD_REG(5)
LIGERD_RMS_FWD_REG(6)
LIGERD_RMS_FWD_REG(7)
LIGERD_RMS_FWD_REG(8)
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_fwd_loop_v(const LigerdRmsNormFwdParams p) { ligerd::rms::fwd_loop<ligerd::rms::kVec>(p); }
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_fwd_loop_s(const LigerdRmsNormFwdParams p) { ligerd::rms::fwd_loop<1>(p); }

#else  // LIGERD_RMS_BWD
// The backward loop kernel holds three tensors' vectors plus the dW partials per step; 2 keeps it
// within the 64 registers that 1024-thread blocks allow.
constexpr int kBwdLoopUnroll = 2;
// ---------------------------------------------------------------------------------------------
// Backward. Moves 3*rows*n*sizeof(XT) (read dy and x, write dx) + 4*rows (rstd) + n*sizeof(WT)
// (w) + 2 * P*n*4 (dW partials written here and read by the reduction, P = gridDim.x, the
// persistent grid, so a few percent at most) + n*sizeof(WT) (dW): HBM-bound.

// Persistent: block b takes row groups b, b + gridDim.x, ... and keeps its share of dW in fp32
// registers across them, so dW costs one partial row per block instead of atomics. The block's
// blockDim.y partial rows are summed in shared memory (fixed order) before the single write.
template <int ITERS, int VEC>
__device__ __forceinline__ void bwd_reg(const LigerdRmsNormBwdParams& p) {
  __shared__ float red[2][32];
  extern __shared__ float dw_stage[];  // blockDim.x * blockDim.y * VEC floats when kHasW
  const int tpr = blockDim.x;
  const int lane = threadIdx.x;
  const int nvec = p.n / VEC;
  const float inv_n = 1.f / static_cast<float>(p.n);
  const WT* w = static_cast<const WT*>(p.w);

  // W is re-read for every row rather than held in registers: it stays in L1 (a few KB), and
  // the registers it would pin (ITERS * VEC floats once converted) are what limits how many
  // rows, and so how many bytes of dy and x, an SM can keep in flight.
  float acc[ITERS][VEC];
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[k][i] = 0.f;

  int parity = 0;
  const long long step = static_cast<long long>(gridDim.x) * blockDim.y;
  for (long long base = static_cast<long long>(blockIdx.x) * blockDim.y; base < p.rows; base += step) {
    const long long row = base + threadIdx.y;
    const bool valid = row < p.rows;
    const XT* dy = static_cast<const XT*>(p.dy) + (valid ? row : 0) * p.dy_stride;
    const XT* x = static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride;
    Vec<XT, VEC> dyv[ITERS], xv[ITERS];
    Vec<WT, VEC> wv[ITERS];
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int j = lane + k * tpr;
      if (valid && j < nvec) {
        dyv[k].load(dy + static_cast<long long>(j) * VEC);
        xv[k].load(x + static_cast<long long>(j) * VEC);
        if constexpr (kHasW) wv[k].load(w + static_cast<long long>(j) * VEC);
      } else {
        dyv[k].zero();
        xv[k].zero();
        wv[k].zero();
      }
    }
    const float rstd = valid ? p.rstd[row] : 0.f;
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < ITERS; ++k)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float m = kHasW ? dyv[k].get(i) * (p.offset + wv[k].get(i)) : dyv[k].get(i);
        dot = fmaf(m, xv[k].get(i), dot);
      }
    dot = row_sum(dot, red[parity]);
    parity ^= 1;
    if (valid) {
      const float c = rstd * rstd * rstd * (dot * inv_n);
      XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
#pragma unroll
      for (int k = 0; k < ITERS; ++k) {
        const int j = lane + k * tpr;
        if (j < nvec) {
          float o[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float g = dyv[k].get(i);
            const float xf = xv[k].get(i);
            const float m = kHasW ? g * (p.offset + wv[k].get(i)) : g;
            o[i] = rstd * m - c * xf;
            if constexpr (kHasW) acc[k][i] = fmaf(g, xn_for_dw(xf, rstd), acc[k][i]);
          }
          Vec<XT, VEC> out;
          out.set_all(o);
          out.store(dx + static_cast<long long>(j) * VEC);
        }
      }
    }
  }

  // dw_partial is null when W is frozen (no dW wanted); the branch is uniform over the block.
  if (kHasW && p.dw_partial != nullptr) {
    float* part = p.dw_partial + static_cast<long long>(blockIdx.x) * p.n;
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int j = lane + k * tpr;
      float s[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) s[i] = acc[k][i];
      if (blockDim.y > 1) {
        float* mine = dw_stage + (threadIdx.y * tpr + lane) * VEC;
#pragma unroll
        for (int i = 0; i < VEC; ++i) mine[i] = s[i];
        __syncthreads();
        if (threadIdx.y == 0) {
          for (int r = 1; r < blockDim.y; ++r) {
            const float* other = dw_stage + (r * tpr + lane) * VEC;
#pragma unroll
            for (int i = 0; i < VEC; ++i) s[i] += other[i];
          }
        }
        __syncthreads();
      }
      if (threadIdx.y == 0 && j < nvec) {
        Vec<float, VEC> out;
        out.set_all(s);
        out.store(part + static_cast<long long>(j) * VEC);
      }
    }
  }
}

// Rows too long for registers: pass 1 forms sum(m * x), pass 2 re-reads dy, x (L2) and writes
// dx; this block's dW partial row lives in the workspace and is updated in place (each column
// always belongs to the same thread, so no races). One row per block (blockDim.y == 1).
template <int VEC>
__device__ __forceinline__ void bwd_loop(const LigerdRmsNormBwdParams& p) {
  __shared__ float red[2][32];
  const int tpr = blockDim.x;
  const int nvec = p.n / VEC;
  const float inv_n = 1.f / static_cast<float>(p.n);
  const WT* w = static_cast<const WT*>(p.w);
  float* part = (kHasW && p.dw_partial != nullptr) ? p.dw_partial + static_cast<long long>(blockIdx.x) * p.n : nullptr;
  int parity = 0;
  for (long long row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const bool first = row == blockIdx.x;
    const XT* dy = static_cast<const XT*>(p.dy) + row * p.dy_stride;
    const XT* x = static_cast<const XT*>(p.x) + row * p.x_stride;
    float dot = 0.f;
    for (int j0 = threadIdx.x; j0 < nvec; j0 += kBwdLoopUnroll * tpr) {
      Vec<XT, VEC> dyv[kBwdLoopUnroll], xv[kBwdLoopUnroll];
      Vec<WT, VEC> wv[kBwdLoopUnroll];
#pragma unroll
      for (int u = 0; u < kBwdLoopUnroll; ++u) {
        const int j = j0 + u * tpr;
        if (j < nvec) {
          dyv[u].load(dy + static_cast<long long>(j) * VEC);
          xv[u].load(x + static_cast<long long>(j) * VEC);
          if constexpr (kHasW) wv[u].load(w + static_cast<long long>(j) * VEC);
        } else {
          dyv[u].zero();
          xv[u].zero();
          wv[u].zero();
        }
      }
#pragma unroll
      for (int u = 0; u < kBwdLoopUnroll; ++u)
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float m = kHasW ? dyv[u].get(i) * (p.offset + wv[u].get(i)) : dyv[u].get(i);
          dot = fmaf(m, xv[u].get(i), dot);
        }
    }
    dot = row_sum(dot, red[parity]);
    parity ^= 1;
    const float rstd = p.rstd[row];
    const float c = rstd * rstd * rstd * (dot * inv_n);
    XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
    for (int j0 = threadIdx.x; j0 < nvec; j0 += kBwdLoopUnroll * tpr) {
      Vec<XT, VEC> dyv[kBwdLoopUnroll], xv[kBwdLoopUnroll];
      Vec<WT, VEC> wv[kBwdLoopUnroll];
#pragma unroll
      for (int u = 0; u < kBwdLoopUnroll; ++u) {
        const int j = j0 + u * tpr;
        if (j < nvec) {
          dyv[u].load(dy + static_cast<long long>(j) * VEC);
          xv[u].load(x + static_cast<long long>(j) * VEC);
          if constexpr (kHasW) wv[u].load(w + static_cast<long long>(j) * VEC);
        }
      }
#pragma unroll
      for (int u = 0; u < kBwdLoopUnroll; ++u) {
        const int j = j0 + u * tpr;
        if (j < nvec) {
          float o[VEC], d[VEC];
          Vec<float, VEC> prev;
          if (part != nullptr && !first) prev.load(part + static_cast<long long>(j) * VEC);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float g = dyv[u].get(i);
            const float xf = xv[u].get(i);
            const float m = kHasW ? g * (p.offset + wv[u].get(i)) : g;
            o[i] = rstd * m - c * xf;
            if (part != nullptr) d[i] = fmaf(g, xn_for_dw(xf, rstd), first ? 0.f : prev.get(i));
          }
          Vec<XT, VEC> out;
          out.set_all(o);
          out.store(dx + static_cast<long long>(j) * VEC);
          if (part != nullptr) {
            Vec<float, VEC> dv;
            dv.set_all(d);
            dv.store(part + static_cast<long long>(j) * VEC);
          }
        }
      }
    }
  }
}

}  // namespace rms
}  // namespace ligerd

// Register budget of a row-in-registers backward thread: ITERS * VEC fp32 dW accumulators plus
// raw dy, x and w vectors (4 registers each per 16 bytes). The launch bound caps threads per
// block so the compiler may use what that needs without spilling (64/128/255 registers at
// 1024/512/256 threads); the host's MaxBwdThreads() mirrors this table.
#define LIGERD_RMS_BWD_REG(I, MAXT)                                                             \
  extern "C" __global__ void __launch_bounds__(MAXT)                                            \
      rms_norm_bwd_i##I##_v(const LigerdRmsNormBwdParams p) { ligerd::rms::bwd_reg<I, ligerd::rms::kVec>(p); } \
  extern "C" __global__ void __launch_bounds__(MAXT)                                            \
      rms_norm_bwd_i##I##_s(const LigerdRmsNormBwdParams p) { ligerd::rms::bwd_reg<I, 1>(p); }
LIGERD_RMS_BWD_REG(1, 1024)
LIGERD_RMS_BWD_REG(2, 1024)
LIGERD_RMS_BWD_REG(3, 512)
LIGERD_RMS_BWD_REG(4, 512)
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_bwd_loop_v(const LigerdRmsNormBwdParams p) { ligerd::rms::bwd_loop<ligerd::rms::kVec>(p); }
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_bwd_loop_s(const LigerdRmsNormBwdParams p) { ligerd::rms::bwd_loop<1>(p); }

// dW[c] = sum over partial rows r of partial[r][c], r in ascending order within each of the
// 16 row lanes and then the lanes in ascending order: deterministic, no atomics. Block 32 x 16:
// a warp reads 32 consecutive floats (128-byte transactions). Moves P*n*4 + n*sizeof(WT) bytes.
extern "C" __global__ void __launch_bounds__(512)
    rms_norm_bwd_dw_reduce(const LigerdRmsNormDwReduceParams p) {
  __shared__ float part[16][33];  // +1 column: no bank conflicts on the transposed read
  const int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (col < p.n)
    for (int r = threadIdx.y; r < p.num_partials; r += 16) s += p.partial[static_cast<long long>(r) * p.n + col];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < p.n) {
    float t = 0.f;
    for (int r = 0; r < 16; ++r) t += part[r][threadIdx.x];
    ligerd::store_one(static_cast<ligerd::rms::WT*>(p.dw) + col, t);
  }
}
#endif  // LIGERD_RMS_BWD
