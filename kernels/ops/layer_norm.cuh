// LayerNorm forward and backward, Liger-compatible semantics (LigerLayerNorm /
// liger_layer_norm). Compiled by NVRTC (see layer_norm.cc); shares its row layout, loaders,
// partial-row dW/dB scheme and reduction with RMSNorm (rowwise.cuh).
//
// Specialisation (compile-time -D defines, one module per combination):
//   LIGERD_LN_BWD   0: forward module, 1: backward module (+ the dW/dB reduction kernel)
//   LIGERD_XT       element type of X, Y, dY, dX: float | ligerd::bf16 | ligerd::f16
//   LIGERD_WT       element type of W, B, dW, dB: LIGERD_XT or float
// W and B are optional at run time (null pointers: scale 1, shift 0); the branch is uniform
// over the grid and costs nothing next to the memory traffic, so it does not multiply variants.
// Kernels: layer_norm_{fwd,bwd}_i<ITERS>_{v,s} (a row in registers, ITERS vectors per thread;
// _v 16-byte vectors, _s one element per access) and layer_norm_{fwd,bwd}_loop_{v,s} (rows too
// long for registers, streamed through L2).
//
// Numerics, as Liger's Triton kernels (x, w, b, dy converted to fp32 on load, sums in fp32 in a
// fixed order: bitwise reproducible for a launch config):
//   mean = sum(x) / n;  var = sum((x - mean)^2) / n  (two passes over the row: no cancellation)
//   rstd = 1 / sqrt(var + eps);  y = T((x - mean) * rstd * w + b)
//   mean and rstd are stored in fp32 (Liger stores them in X's dtype; rounding rstd to bf16
//   would put a 2^-9 relative error into every dX and dW element, for 8 bytes per row instead
//   of 4: 0.1% of a 4096-wide bf16 row's traffic).
//   backward: xhat = (x - mean) * rstd, wdy = w * dy, c1 = sum(xhat * wdy) / n,
//   c2 = sum(wdy) / n, dx = (wdy - (xhat * c1 + c2)) * rstd; dW = sum over rows of dy * xhat,
//   dB = sum over rows of dy (fp32 partial rows per block, then a fixed-order column sum).
#include "kernels/ops/common.cuh"
#include "kernels/ops/layer_norm_params.h"
#include "kernels/ops/rowwise.cuh"

namespace ligerd {
namespace ln {

using XT = LIGERD_XT;
using WT = LIGERD_WT;
using rowwise::vec_index;
// Elements per 16-byte access of X.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));

#if LIGERD_LN_BWD == 0
// Vectors per thread in flight per pass of the loop kernel (as RMSNorm's).
constexpr int kLoopUnroll = 4;

// ---------------------------------------------------------------------------------------------
// Forward. Moves 2*rows*n*sizeof(XT) (read x, write y) + 2*n*sizeof(WT) (w, b: L2-resident
// after the first rows) + 8*rows (mean, rstd): HBM-bound, limit = bytes / copy bandwidth.

// y for one vector of x, given the row's mean and rstd; w and b (either may be null) are loaded
// here. (Loading them with x instead, as RMSNorm does, measured 6% slower.)
template <int VEC>
__device__ __forceinline__ void affine_store(const Vec<XT, VEC>& xv, float mean, float rstd,
                                             const WT* w, const WT* b, XT* y, int j) {
  Vec<WT, VEC> wv, bv;
  if (w != nullptr) wv.load(w + static_cast<long long>(j) * VEC);
  if (b != nullptr) bv.load(b + static_cast<long long>(j) * VEC);
  float o[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const float xn = (xv.get(i) - mean) * rstd;
    o[i] = (w != nullptr ? xn * wv.get(i) : xn) + (b != nullptr ? bv.get(i) : 0.f);
  }
  rowwise::store_vec(y, j, o);
}

// A row in registers: read once, summed, centred and summed again (both from registers), then
// normalised and written.
template <int ITERS, int VEC>
__device__ __forceinline__ void fwd_reg(const LigerdLayerNormFwdParams& p) {
  __shared__ float red[2][32];
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const float nf = static_cast<float>(p.n);

  Vec<XT, VEC> xv[ITERS];
  rowwise::load_row<XT, ITERS, VEC>(xv, static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride, valid, nvec);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum += xv[k].get(i);
  const float mean = row_sum(sum, red[0]) / nf;
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
    if (vec_index(k) < nvec)  // the zero padding is not part of the row: (0 - mean)^2 != 0
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float d = xv[k].get(i) - mean;
        ss = fmaf(d, d, ss);
      }
  ss = row_sum(ss, red[1]);
  if (!valid) return;  // no barriers below
  const float rstd = rsqrtf(ss / nf + p.eps);
  if (threadIdx.x == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
  const WT* w = static_cast<const WT*>(p.w);
  const WT* b = static_cast<const WT*>(p.b);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    if (vec_index(k) >= nvec) continue;
    affine_store(xv[k], mean, rstd, w, b, y, vec_index(k));
  }
}

// Rows longer than registers hold: three passes over the row (sum; centred sum of squares;
// normalise and write), the second and third served mostly by L2, which holds the rows in flight.
template <int VEC>
__device__ __forceinline__ void fwd_loop(const LigerdLayerNormFwdParams& p) {
  __shared__ float red[2][32];
  const int tpr = blockDim.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const float nf = static_cast<float>(p.n);
  const XT* x = static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride;

  float sum = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u)
#pragma unroll
      for (int i = 0; i < VEC; ++i) sum += xv[u].get(i);
  }
  const float mean = row_sum(sum, red[0]) / nf;
  float ss = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u)
      if (j0 + u * tpr < nvec)
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float d = xv[u].get(i) - mean;
          ss = fmaf(d, d, ss);
        }
  }
  ss = row_sum(ss, red[1]);
  if (!valid) return;
  const float rstd = rsqrtf(ss / nf + p.eps);
  if (threadIdx.x == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
  const WT* w = static_cast<const WT*>(p.w);
  const WT* b = static_cast<const WT*>(p.b);
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
  for (int j0 = threadIdx.x; j0 < nvec; j0 += kLoopUnroll * tpr) {
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) affine_store(xv[u], mean, rstd, w, b, y, j);
    }
  }
}

}  // namespace ln
}  // namespace ligerd

// Forward kernels: a row in registers costs 4 * ITERS registers, plus w and b for the vector
// being written (up to 16 fp32 registers). Launch bounds: LIGERD_LB_I1..I8 and LIGERD_LB_LOOP,
// from the op's entry (layer_norm.toml, which says why each is what it is).
LIGERD_ROW_KERNELS_I8(layer_norm_fwd, LigerdLayerNormFwdParams, ligerd::ln::fwd_reg,
                      ligerd::ln::fwd_loop, ligerd::ln::kVec)

#else  // LIGERD_LN_BWD
// ---------------------------------------------------------------------------------------------
// Backward. Moves 3*rows*n*sizeof(XT) (read dy and x, write dx) + 8*rows (mean, rstd) +
// n*sizeof(WT) (w) + 2 * 2*P*n*4 (dW and dB partial rows, written here and read by the
// reduction; P = gridDim.x, the persistent grid) + 2*n*sizeof(WT) (dW, dB): HBM-bound.

// Everything one row needs from memory, issued as one batch: the row's mean and rstd (8 bytes)
// together with its dy and x (raw words). Loading the statistics here rather than when the row is
// processed matters: any load issued after the row's data and needed before its math adds a
// whole DRAM round trip per row, which the data prefetch below cannot hide.
template <int ITERS, int VEC>
struct BwdRows {
  Vec<XT, VEC> dy[ITERS], x[ITERS];
  float mean, rstd;  // 0 for a row past the end (then xhat = 0 and dy = 0: it adds nothing)
  __device__ __forceinline__ void load(const LigerdLayerNormBwdParams& p, long long row, int nvec) {
    const bool valid = row < p.rows;
    const long long r0 = valid ? row : 0;
    mean = valid ? p.mean[r0] : 0.f;
    rstd = valid ? p.rstd[r0] : 0.f;
    rowwise::load_row<XT, ITERS, VEC>(dy, static_cast<const XT*>(p.dy) + r0 * p.dy_stride, valid, nvec);
    rowwise::load_row<XT, ITERS, VEC>(x, static_cast<const XT*>(p.x) + r0 * p.x_stride, valid, nvec);
  }
};

// Persistent: block b takes row groups b, b + gridDim.x, ... keeping its dW and dB column sums
// in fp32 registers, and writes one partial row of each at the end. The next row group's mean,
// rstd, dy and x are loaded before this one is reduced (software pipelining): each row's loads
// are in flight across the previous row's barrier and arithmetic, and nothing the current row
// needs is still outstanding when its math starts, so a row costs max(DRAM latency, its own
// work) rather than latency + work. One block per SM can then keep HBM busy even when a row
// takes the whole block (a 4096-8192 wide row: 512-1024 threads x 8 elements).
template <int ITERS, int VEC>
__device__ __forceinline__ void bwd_reg(const LigerdLayerNormBwdParams& p) {
  __shared__ float red[2][2 * 32];
  extern __shared__ float stage[];  // blockDim.x * blockDim.y * VEC floats when partials are wanted
  const int nvec = p.n / VEC;
  const float inv_n = 1.f / static_cast<float>(p.n);
  const WT* w = static_cast<const WT*>(p.w);

  float dw_acc[ITERS][VEC], db_acc[ITERS][VEC];
  rowwise::zero_acc(dw_acc);
  rowwise::zero_acc(db_acc);

  int parity = 0;
  const long long step = static_cast<long long>(gridDim.x) * blockDim.y;
  long long base = static_cast<long long>(blockIdx.x) * blockDim.y;
  BwdRows<ITERS, VEC> next;
  if (base < p.rows) next.load(p, base + threadIdx.y, nvec);
  for (; base < p.rows; base += step) {
    const long long row = base + threadIdx.y;
    const bool valid = row < p.rows;
    const BwdRows<ITERS, VEC> cur = next;
    if (base + step < p.rows) next.load(p, base + step + threadIdx.y, nvec);
    const float mean = cur.mean, rstd = cur.rstd;
    // W is re-read per row (L1-resident) rather than pinned in registers, as in RMSNorm.
    Vec<WT, VEC> wv[ITERS];
    if (w != nullptr) rowwise::load_row<WT, ITERS, VEC>(wv, w, true, nvec);
    float sums[2] = {0.f, 0.f};  // sum(xhat * wdy), sum(wdy); padding has dy = 0
#pragma unroll
    for (int k = 0; k < ITERS; ++k)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float g = cur.dy[k].get(i);
        const float wdy = w != nullptr ? wv[k].get(i) * g : g;
        const float xhat = (cur.x[k].get(i) - mean) * rstd;
        sums[0] = fmaf(xhat, wdy, sums[0]);
        sums[1] += wdy;
      }
    row_sums<2>(sums, red[parity]);
    parity ^= 1;
    if (valid) {
      const float c1 = sums[0] * inv_n, c2 = sums[1] * inv_n;
      XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
#pragma unroll
      for (int k = 0; k < ITERS; ++k) {
        const int j = vec_index(k);
        if (j < nvec) {
          float o[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float g = cur.dy[k].get(i);
            const float wdy = w != nullptr ? wv[k].get(i) * g : g;
            const float xhat = (cur.x[k].get(i) - mean) * rstd;
            o[i] = (wdy - (xhat * c1 + c2)) * rstd;
            dw_acc[k][i] = fmaf(g, xhat, dw_acc[k][i]);
            db_acc[k][i] += g;
          }
          rowwise::store_vec(dx, j, o);
        }
      }
    }
  }
  // Null partial pointers: that gradient is not wanted (uniform over the grid).
  if (p.dw_partial != nullptr)
    rowwise::store_block_partial(dw_acc, p.dw_partial + static_cast<long long>(blockIdx.x) * p.n, stage, nvec);
  if (p.db_partial != nullptr)
    rowwise::store_block_partial(db_acc, p.db_partial + static_cast<long long>(blockIdx.x) * p.n, stage, nvec);
}

// Rows too long for registers, one row per block (blockDim.y == 1): pass 1 forms the two sums,
// pass 2 re-reads dy, x (L2) and writes dx; the block's dW/dB partial rows live in the workspace
// and are updated in place (each column always belongs to the same thread: no races).
template <int VEC>
__device__ __forceinline__ void bwd_loop(const LigerdLayerNormBwdParams& p) {
  __shared__ float red[2][2 * 32];
  const int tpr = blockDim.x;
  const int nvec = p.n / VEC;
  const float inv_n = 1.f / static_cast<float>(p.n);
  const WT* w = static_cast<const WT*>(p.w);
  float* dwp = p.dw_partial != nullptr ? p.dw_partial + static_cast<long long>(blockIdx.x) * p.n : nullptr;
  float* dbp = p.db_partial != nullptr ? p.db_partial + static_cast<long long>(blockIdx.x) * p.n : nullptr;
  int parity = 0;
  for (long long row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const bool first = row == blockIdx.x;
    const XT* dy = static_cast<const XT*>(p.dy) + row * p.dy_stride;
    const XT* x = static_cast<const XT*>(p.x) + row * p.x_stride;
    const float mean = p.mean[row], rstd = p.rstd[row];
    float sums[2] = {0.f, 0.f};
    for (int j = threadIdx.x; j < nvec; j += tpr) {
      Vec<XT, VEC> dyv, xv;
      Vec<WT, VEC> wv;
      dyv.load(dy + static_cast<long long>(j) * VEC);
      xv.load(x + static_cast<long long>(j) * VEC);
      if (w != nullptr) wv.load(w + static_cast<long long>(j) * VEC);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float g = dyv.get(i);
        const float wdy = w != nullptr ? wv.get(i) * g : g;
        sums[0] = fmaf((xv.get(i) - mean) * rstd, wdy, sums[0]);
        sums[1] += wdy;
      }
    }
    row_sums<2>(sums, red[parity]);
    parity ^= 1;
    const float c1 = sums[0] * inv_n, c2 = sums[1] * inv_n;
    XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
    for (int j = threadIdx.x; j < nvec; j += tpr) {
      Vec<XT, VEC> dyv, xv;
      Vec<WT, VEC> wv;
      dyv.load(dy + static_cast<long long>(j) * VEC);
      xv.load(x + static_cast<long long>(j) * VEC);
      if (w != nullptr) wv.load(w + static_cast<long long>(j) * VEC);
      float o[VEC], dw[VEC], db[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float g = dyv.get(i);
        const float wdy = w != nullptr ? wv.get(i) * g : g;
        const float xhat = (xv.get(i) - mean) * rstd;
        o[i] = (wdy - (xhat * c1 + c2)) * rstd;
        dw[i] = g * xhat;
        db[i] = g;
      }
      rowwise::store_vec(dx, j, o);
      if (dwp != nullptr) rowwise::update_partial(dwp, j, first, dw);
      if (dbp != nullptr) rowwise::update_partial(dbp, j, first, db);
    }
  }
}

}  // namespace ln
}  // namespace ligerd

// Register budget of a row-in-registers backward thread, per 16-byte vector: 2 * VEC fp32
// accumulators (dW, dB) + raw dy and x for this row and the next (16 registers) + w (4), and the
// next row's mean and rstd (2 registers per thread, not per vector). The
// launch bounds (LIGERD_LB_*, from the entry) let the compiler use what that needs
// (64/128/255 registers at 1024/512/256 threads).
LIGERD_ROW_KERNELS_I4(layer_norm_bwd, LigerdLayerNormBwdParams, ligerd::ln::bwd_reg,
                      ligerd::ln::bwd_loop, ligerd::ln::kVec)

// dW (blockIdx.y 0) and dB (1), or whichever is wanted: column sums of the partial rows.
extern "C" __global__ void LIGERD_LB_REDUCE
    layer_norm_bwd_reduce(const LigerdRowReduceParams p) { ligerd::rowwise::reduce_partials<ligerd::ln::WT>(p); }
#endif  // LIGERD_LN_BWD
