// RMSNorm forward and backward, Liger-compatible semantics, and the same kernels with the
// residual add fused in (Liger's LigerFusedAddRMSNorm). Compiled by NVRTC (see rms_norm.cc).
//
// Specialisation (compile-time -D defines, one module per combination):
//   LIGERD_RMS_BWD   0: forward module, 1: backward module (+ the dW reduction kernel)
//   LIGERD_RMS_ADD   1: fused add. Forward: the row is S = T(X + R) (rounded to X's dtype, as
//                    torch's `residual + hidden` is), S is written out and normalised.
//                    Backward: the saved S is the input row and dS (the new residual's gradient,
//                    optional) is added into dX before its one rounding: dX = dnorm(dY) + dS.
//   LIGERD_XT        element type of X, Y, dY, dX (and R, S, dS): float | ligerd::bf16 | ligerd::f16
//   LIGERD_WT        element type of W and dW: LIGERD_XT or float
//   LIGERD_HAS_W     0: elementwise_affine=False (no W, no dW)
//   LIGERD_CAST      0 llama, 1 gemma, 2 none (Liger's casting_mode)
// Each module holds every row shape as its own extern "C" kernel, so the host picks one by
// name: rms_norm_{fwd,bwd}_i<ITERS>_{v,s} keep a whole row in registers, ITERS vectors per
// thread; _v uses 16-byte vectors (needs n % VEC == 0 and aligned rows), _s one element per
// access (any n); rms_norm_{fwd,bwd}_loop_{v,s} stream rows too long for registers in two passes.
// Launch shape and shared helpers: rowwise.cuh.
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
//         m = dy * (offset + w); dx = rstd * m - rstd^3 * (sum(m * x) / n) * x  (+ ds if fused)
//         dW = sum over rows of dy * xn, xn = T(x * rstd) for llama, x * rstd otherwise.
#include "kernels/ops/common.cuh"
#include "kernels/ops/rms_norm_params.h"
#include "kernels/ops/rowwise.cuh"

namespace ligerd {
namespace rms {

using XT = LIGERD_XT;
using WT = LIGERD_WT;
using rowwise::vec_index;
constexpr bool kHasW = LIGERD_HAS_W != 0;
constexpr bool kAdd = LIGERD_RMS_ADD != 0;
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

// Fused add: v <- T(v + r), the new residual, which is also what gets normalised.
template <int VEC>
__device__ __forceinline__ void add_residual(Vec<XT, VEC>& v, const Vec<XT, VEC>& r) {
  float s[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) s[i] = v.get(i) + r.get(i);
  v.set_all(s);
}

#if LIGERD_RMS_BWD == 0
// The forward loop kernel keeps this many vectors per thread in flight per pass (enough
// outstanding loads to cover DRAM latency without the register cost of a whole row).
constexpr int kLoopUnroll = 4;

// ---------------------------------------------------------------------------------------------
// Forward. Moves 2*rows*n*sizeof(XT) bytes (read x, write y) + n*sizeof(WT) (w, L2-resident
// after the first rows) + 4*rows (rstd): HBM-bound, limit = bytes / copy bandwidth. Fused add:
// 4*rows*n*sizeof(XT) (read x and r, write y and s).

// A row in registers: x is read once, kept as raw 16-bit/32-bit words (4 registers per 16-byte
// vector whatever the dtype), reduced, then normalised and written.
template <int ITERS, int VEC>
__device__ __forceinline__ void fwd_reg(const LigerdRmsNormFwdParams& p) {
  __shared__ float red[32];
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const long long r0 = valid ? row : 0;

  Vec<XT, VEC> xv[ITERS];
  rowwise::load_row<XT, ITERS, VEC>(xv, static_cast<const XT*>(p.x) + r0 * p.x_stride, valid, nvec);
  if constexpr (kAdd) {
    Vec<XT, VEC> rv[ITERS];
    rowwise::load_row<XT, ITERS, VEC>(rv, static_cast<const XT*>(p.r) + r0 * p.r_stride, valid, nvec);
    XT* s = static_cast<XT*>(p.s) + r0 * p.s_stride;
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      add_residual(xv[k], rv[k]);
      if (valid && vec_index(k) < nvec) xv[k].store(s + static_cast<long long>(vec_index(k)) * VEC);
    }
  }
  // The plain forward loads w with x, before the reduction (as Liger's Triton kernel does): its
  // loads are then in flight during the reduction rather than between the stores (measured in
  // docs/perf/rms_norm.md). The fused add keeps loading w per vector: its registers already hold r.
  constexpr bool kWEarly = kHasW && !kAdd;
  Vec<WT, VEC> w_early[kWEarly ? ITERS : 1];
  if constexpr (kWEarly) rowwise::load_row<WT, ITERS, VEC>(w_early, static_cast<const WT*>(p.w), valid, nvec);
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
  if (threadIdx.x == 0) p.rstd[row] = rstd;

  const WT* w = static_cast<const WT*>(p.w);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = vec_index(k);
    if (j < nvec) {
      Vec<WT, VEC> wv;
      if constexpr (kHasW) {
        if constexpr (kWEarly) wv = w_early[k];
        else wv.load(w + static_cast<long long>(j) * VEC);
      }
      float o[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = norm_out(xv[k].get(i), rstd, kHasW ? wv.get(i) : 0.f, p.offset);
      rowwise::store_vec(y, j, o);
    }
  }
}

// Rows longer than registers hold: pass 1 sums squares, pass 2 re-reads x (mostly from L2,
// which holds the rows in flight) and writes y. Costs one extra read of x at worst. Fused add:
// pass 1 writes s, and pass 2 reads s back instead of x and r (each column is written and
// re-read by the same thread, so program order makes it visible).
template <int VEC>
__device__ __forceinline__ void fwd_loop(const LigerdRmsNormFwdParams& p) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const long long r0 = valid ? row : 0;
  const XT* x = static_cast<const XT*>(p.x) + r0 * p.x_stride;
  const XT* r = kAdd ? static_cast<const XT*>(p.r) + r0 * p.r_stride : nullptr;
  XT* s = kAdd ? static_cast<XT*>(p.s) + r0 * p.s_stride : nullptr;

  float ss = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
    if constexpr (kAdd) {
#pragma unroll
      for (int u = 0; u < kLoopUnroll; ++u) {
        const int j = j0 + u * tpr;
        if (j < nvec) {
          Vec<XT, VEC> rv;
          rv.load(r + static_cast<long long>(j) * VEC);
          add_residual(xv[u], rv);
          xv[u].store(s + static_cast<long long>(j) * VEC);
        }
      }
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

  const XT* xin = kAdd ? s : x;
  const WT* w = static_cast<const WT*>(p.w);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
  for (int j0 = threadIdx.x; j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    Vec<WT, VEC> wv[kLoopUnroll];
    rowwise::load_chunk(xv, xin, j0, nvec);
    if constexpr (kHasW) rowwise::load_chunk(wv, w, j0, nvec);
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = norm_out(xv[u].get(i), rstd, kHasW ? wv[u].get(i) : 0.f, p.offset);
        rowwise::store_vec(y, j, o);
      }
    }
  }
}

}  // namespace rms
}  // namespace ligerd

// Launch bounds: LIGERD_LB_I1..I8 and LIGERD_LB_LOOP, from the op's entry (rms_norm.toml, which
// says why each is what it is; the planner reads the same numbers). A row in registers costs
// 4 * ITERS registers, plus 4 * ITERS for r while the fused add runs.
LIGERD_ROW_KERNELS_I8(rms_norm_fwd, LigerdRmsNormFwdParams, ligerd::rms::fwd_reg,
                      ligerd::rms::fwd_loop, ligerd::rms::kVec)

#else  // LIGERD_RMS_BWD
// The backward loop kernel holds three tensors' vectors plus the dW partials per step; 2 keeps it
// within the 64 registers that 1024-thread blocks allow.
constexpr int kBwdLoopUnroll = 2;
// ---------------------------------------------------------------------------------------------
// Backward. Moves 3*rows*n*sizeof(XT) (read dy and x, write dx; fused: + read ds) + 4*rows
// (rstd) + n*sizeof(WT) (w) + 2 * P*n*4 (dW partials written here and read by the reduction,
// P = gridDim.x, the persistent grid, so a few percent at most) + n*sizeof(WT) (dW): HBM-bound.

// Persistent: block b takes row groups b, b + gridDim.x, ... and keeps its share of dW in fp32
// registers across them, so dW costs one partial row per block instead of atomics
// (rowwise::store_block_partial).
template <int ITERS, int VEC>
__device__ __forceinline__ void bwd_reg(const LigerdRmsNormBwdParams& p) {
  __shared__ float red[2][32];
  extern __shared__ float dw_stage[];  // blockDim.x * blockDim.y * VEC floats when kHasW
  const int nvec = p.n / VEC;
  const float inv_n = 1.f / static_cast<float>(p.n);
  const WT* w = static_cast<const WT*>(p.w);
  const bool has_ds = kAdd && p.ds != nullptr;  // uniform over the grid

  // W is re-read for every row rather than held in registers: it stays in L1 (a few KB), and
  // the registers it would pin (ITERS * VEC floats once converted) are what limits how many
  // rows, and so how many bytes of dy and x, an SM can keep in flight.
  float acc[ITERS][VEC];
  rowwise::zero_acc(acc);

  int parity = 0;
  const long long step = static_cast<long long>(gridDim.x) * blockDim.y;
  for (long long base = static_cast<long long>(blockIdx.x) * blockDim.y; base < p.rows; base += step) {
    const long long row = base + threadIdx.y;
    const bool valid = row < p.rows;
    const long long r0 = valid ? row : 0;
    // Every load of the row is issued here, before any math: rstd, dy, x, w and (fused) dS. dS
    // is not needed until after the row sum, but a load issued after the reduction would be a
    // second DRAM round trip per row on the critical path; holding it costs 4 registers per
    // vector, which the launch bounds below allow for.
    const float rstd = valid ? p.rstd[r0] : 0.f;
    Vec<XT, VEC> dyv[ITERS], xv[ITERS], dsv[ITERS];
    Vec<WT, VEC> wv[ITERS];
    rowwise::load_row<XT, ITERS, VEC>(dyv, static_cast<const XT*>(p.dy) + r0 * p.dy_stride, valid, nvec);
    rowwise::load_row<XT, ITERS, VEC>(xv, static_cast<const XT*>(p.x) + r0 * p.x_stride, valid, nvec);
    if (has_ds) rowwise::load_row<XT, ITERS, VEC>(dsv, static_cast<const XT*>(p.ds) + r0 * p.ds_stride, valid, nvec);
    if constexpr (kHasW) rowwise::load_row<WT, ITERS, VEC>(wv, w, valid, nvec);
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
        const int j = vec_index(k);
        if (j < nvec) {
          float o[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float g = dyv[k].get(i);
            const float xf = xv[k].get(i);
            const float m = kHasW ? g * (p.offset + wv[k].get(i)) : g;
            o[i] = rstd * m - c * xf;
            if (has_ds) o[i] += dsv[k].get(i);
            if constexpr (kHasW) acc[k][i] = fmaf(g, xn_for_dw(xf, rstd), acc[k][i]);
          }
          rowwise::store_vec(dx, j, o);
        }
      }
    }
  }

  // dw_partial is null when W is frozen (no dW wanted); the branch is uniform over the block.
  if (kHasW && p.dw_partial != nullptr)
    rowwise::store_block_partial(acc, p.dw_partial + static_cast<long long>(blockIdx.x) * p.n, dw_stage, nvec);
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
  const bool has_ds = kAdd && p.ds != nullptr;
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
      rowwise::load_chunk(dyv, dy, j0, nvec);
      rowwise::load_chunk(xv, x, j0, nvec);
      if constexpr (kHasW) rowwise::load_chunk(wv, w, j0, nvec);
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
    const XT* ds = has_ds ? static_cast<const XT*>(p.ds) + row * p.ds_stride : nullptr;
    for (int j0 = threadIdx.x; j0 < nvec; j0 += kBwdLoopUnroll * tpr) {
      Vec<XT, VEC> dyv[kBwdLoopUnroll], xv[kBwdLoopUnroll], dsv[kBwdLoopUnroll];
      Vec<WT, VEC> wv[kBwdLoopUnroll];
      rowwise::load_chunk(dyv, dy, j0, nvec);
      rowwise::load_chunk(xv, x, j0, nvec);
      if constexpr (kHasW) rowwise::load_chunk(wv, w, j0, nvec);
      if (has_ds) rowwise::load_chunk(dsv, ds, j0, nvec);
#pragma unroll
      for (int u = 0; u < kBwdLoopUnroll; ++u) {
        const int j = j0 + u * tpr;
        if (j < nvec) {
          float o[VEC], d[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float g = dyv[u].get(i);
            const float xf = xv[u].get(i);
            const float m = kHasW ? g * (p.offset + wv[u].get(i)) : g;
            o[i] = rstd * m - c * xf;
            if (has_ds) o[i] += dsv[u].get(i);
            if (part != nullptr) d[i] = g * xn_for_dw(xf, rstd);
          }
          rowwise::store_vec(dx, j, o);
          if (part != nullptr) rowwise::update_partial(part, j, first, d);
        }
      }
    }
  }
}

}  // namespace rms
}  // namespace ligerd

// Register budget of a row-in-registers backward thread: ITERS * VEC fp32 dW accumulators plus
// raw dy, x and w vectors (4 registers each per 16 bytes), and dS's when fused (all loaded up
// front: 16 + 8 = 24 registers per vector for bf16 fused, at most 96 at i4). The launch bounds
// (LIGERD_LB_*, from the entry) cap threads per block so the compiler may use what that needs
// without spilling (64/128/255 registers at 1024/512/256 threads).
LIGERD_ROW_KERNELS_I4(rms_norm_bwd, LigerdRmsNormBwdParams, ligerd::rms::bwd_reg,
                      ligerd::rms::bwd_loop, ligerd::rms::kVec)

// dW = column sums of the partial rows (rowwise::reduce_partials; gridDim.y == 1).
extern "C" __global__ void LIGERD_LB_DW_REDUCE
    rms_norm_bwd_dw_reduce(const LigerdRowReduceParams p) { ligerd::rowwise::reduce_partials<ligerd::rms::WT>(p); }
#endif  // LIGERD_RMS_BWD
