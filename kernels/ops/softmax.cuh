// Softmax over the last dimension (Liger-Kernel's LigerSoftmax / liger_softmax), forward and
// backward. Compiled by NVRTC (see softmax.cc).
//
// Bytes moved and the bandwidth limit (b = sizeof(XT), M rows of n):
//   forward, row in registers:  read x, write y                        2*M*n*b (the minimum)
//   forward, streamed row:      read x (max + sum), read x again, write y  3*M*n*b
//   backward, row in registers: read dy and y, write dx                3*M*n*b (the minimum)
//   backward, streamed row:     read dy, y (the dot), read them again, write dx  5*M*n*b
// All of it is HBM traffic except what the second reads of a streamed row find in L2, so the
// limit is bytes / copy bandwidth: a forward at 2 bytes per element per pass is a copy of x. The
// rows that reach the streaming kernels are long (over 32K fp32 / 64K 16-bit elements, e.g. a
// 151936-wide vocabulary row: 297 KB in bf16); with 1024 threads a row, 2 rows per SM are in flight
// (78 MB on an H100, more than its 50 MB L2), so pass 2 walks the row backwards: it re-reads the
// end of the row first, which pass 1 touched last and L2 still holds.
//
// Specialisation (compile-time -D defines, one module per combination):
//   LIGERD_SOFTMAX_BWD  0: forward module, 1: backward module
//   LIGERD_XT           element type of X, Y, dY, dX: float | ligerd::bf16 | ligerd::f16
// Each module holds every row shape as its own extern "C" kernel (the host picks one by name,
// rowwise.h's RowKernelFamily): softmax_{fwd,bwd}_i<ITERS>_{v,s} keep a whole row in registers,
// ITERS vectors per thread; _v uses 16-byte vectors (needs n % VEC == 0 and aligned rows), _s one
// element per access (any n); softmax_{fwd,bwd}_loop_{v,s} stream rows too long for registers.
// Layout: blockDim.x threads a row, blockDim.y rows a block (rowwise.cuh). One row group per
// block, no persistent grid: the backward has no weight gradient to accumulate.
//
// Numerics (inputs converted to fp32 on load; everything in fp32; one rounding, at the store):
//   forward:  m = max(x), s = sum(exp(x - m)), y = exp(x - m) * (1 / s)
//             Each thread keeps its own (max, sum) pair, sum rescaled when its max grows (the
//             "online" softmax); the pairs of a row merge in one reduction (row_max_sum), so a row
//             costs one pass over x and one barrier before the outputs. -inf inputs give 0; a row
//             of -inf only, or holding +inf or NaN, gives NaN everywhere, as torch.softmax does.
//   backward: dot = sum(dy * y), dx = y * (dy - dot)
// Sums are in a fixed order for a launch config, so results are bitwise reproducible for it.
// expf, not __expf: __expf's error grows with |x - m| (its argument is scaled in fp32 first), and
// fp32 outputs are tested to 1e-5 relative (tests/gpu/test_softmax.py).
#include "kernels/ops/common.cuh"
#include "kernels/ops/rowwise.cuh"
#include "kernels/ops/softmax_params.h"

namespace ligerd {
namespace softmax {

using XT = LIGERD_XT;
using rowwise::vec_index;
// Elements per 16-byte access of X: the widest single load/store an SM issues.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
// -inf (NVRTC compiles without headers, so no INFINITY macro).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

// exp(m - mmax) for a partial maximum m <= mmax: exactly 1 when they are equal, which also covers
// m == mmax == -inf (an empty or all -inf partial, whose difference would be NaN).
__device__ __forceinline__ float rescale(float m, float mmax) { return m == mmax ? 1.f : expf(m - mmax); }

// (m, s) <- the merge of two (max, sum of exp(x - max)) pairs. Symmetric bit for bit (max and the
// final add commute; the products are kept out of FMA contraction), so both lanes of a shuffle
// pair end with the same value and every thread of a row sees the same (max, sum).
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = __fadd_rn(__fmul_rn(s, rescale(m, mm)), __fmul_rn(s2, rescale(m2, mm)));
  m = mm;
}

// Merges the (m, s) pairs of the blockDim.x threads that share a row (threadIdx.y names the row)
// and returns the row's pair to all of them, bitwise identical in every lane. Same layout rules
// as common.cuh's row_sums; every thread of the block calls it. `red` is >= 64 floats of shared
// memory (one pair per warp of the block). The cross-warp step is a second butterfly over the
// warps' pairs, done redundantly by every warp of the row, so it costs one barrier and log2(32)
// merges rather than one merge (two exps) per warp.
__device__ __forceinline__ void row_max_sum(float& m, float& s, float* red) {
  const int tpr = blockDim.x;
  const int width = tpr < 32 ? tpr : 32;
  for (int off = width >> 1; off > 0; off >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off));
  if (tpr <= 32) return;
  const int warps = tpr >> 5, lane = threadIdx.x & 31;
  float* row_red = red + 2 * threadIdx.y * warps;
  if (lane == 0) {
    row_red[2 * (threadIdx.x >> 5)] = m;
    row_red[2 * (threadIdx.x >> 5) + 1] = s;
  }
  __syncthreads();
  m = lane < warps ? row_red[2 * lane] : neg_inf();
  s = lane < warps ? row_red[2 * lane + 1] : 0.f;
  for (int off = 16; off > 0; off >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off));
}

// A vector of fp32 results, rounded to XT and stored with an evict-first hint (st.global.cs, as
// Liger's kernels store y): the outputs are not read again by this kernel, so they should not
// push out of L2 the inputs a streamed row re-reads. 16-byte vectors only; narrower ones are the
// unaligned fallback and take the plain store.
template <int VEC>
__device__ __forceinline__ void store_vec_cs(XT* row, int j, const float (&v)[VEC]) {
  Vec<XT, VEC> out;
  out.set_all(v);
  XT* p = row + static_cast<long long>(j) * VEC;
  if constexpr (Vec<XT, VEC>::kBytes == 16) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};"
                 :: "l"(p), "r"(out.w[0]), "r"(out.w[1]), "r"(out.w[2]), "r"(out.w[3]) : "memory");
  } else {
    out.store(p);
  }
}

#if LIGERD_SOFTMAX_BWD == 0
// The forward loop kernel keeps this many vectors per thread in flight per step (enough
// outstanding loads to cover DRAM latency without the register cost of a whole row; as
// rms_norm.cuh's forward loop).
constexpr int kLoopUnroll = 4;

// This thread's (max, sum) over the U vectors of v whose index j0 + u * step is below nvec
// (vectors past the row's end were loaded as zeros and must not count), merged into (m, s).
template <int U, int VEC>
__device__ __forceinline__ void accumulate(float& m, float& s, const Vec<XT, VEC> (&v)[U], int j0, int step, int nvec) {
  float cm = m;
#pragma unroll
  for (int u = 0; u < U; ++u)
    if (j0 + u * step < nvec)
#pragma unroll
      for (int i = 0; i < VEC; ++i) cm = fmaxf(cm, v[u].get(i));
  if (cm == neg_inf()) return;  // nothing but -inf so far: every exp would be 0 (and m == cm)
  s *= rescale(m, cm);
#pragma unroll
  for (int u = 0; u < U; ++u)
    if (j0 + u * step < nvec)
#pragma unroll
      for (int i = 0; i < VEC; ++i) s += expf(v[u].get(i) - cm);
  m = cm;
}

// ---------------------------------------------------------------------------------------------
// Forward, a row in registers: x read once, y written once. Two forms:
//  - exp kept (a thread's row part is at most kKeepExp elements): the row's max first (one max
//    reduction), then e = exp(x - max) once per element, kept in fp32 registers in place of x,
//    their sum (one sum reduction), y = e * (1 / sum). One exp per element.
//  - online (longer parts, whose fp32 exps would not fit the registers a 1024-thread block
//    leaves): each thread's (max, sum) pair merged in one reduction (row_max_sum), then the
//    exps computed again for y. Two exps per element, x kept as raw 16/32-bit words.
// At 2 bytes an element (bf16 in, bf16 out) a second accurate expf per element costs about as
// much issue time as the memory time (docs/perf/softmax.md), hence the first form wherever it fits.
// 32 fp32 exps + the raw words of x being converted fit 1024-thread blocks' 64 registers (checked
// with ptxas -v for every dtype: no spills).
constexpr int kKeepExp = 32;

// The max of v over the blockDim.x threads of a row, in every lane. Same layout rules as
// common.cuh's row_sums; `red` is >= 32 floats of shared memory not used by another reduction
// before the next barrier.
__device__ __forceinline__ float row_max(float v, float* red) {
  const int tpr = blockDim.x;
  const int width = tpr < 32 ? tpr : 32;
  for (int off = width >> 1; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (tpr <= 32) return v;
  const int warps = tpr >> 5;
  if ((threadIdx.x & 31) == 0) red[threadIdx.y * warps + (threadIdx.x >> 5)] = v;
  __syncthreads();
  v = red[threadIdx.y * warps];
  for (int i = 1; i < warps; ++i) v = fmaxf(v, red[threadIdx.y * warps + i]);
  return v;
}

template <int ITERS, int VEC>
__device__ __forceinline__ void fwd_reg(const LigerdSoftmaxFwdParams& p) {
  __shared__ float red[64];
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const long long r0 = valid ? row : 0;

  Vec<XT, VEC> xv[ITERS];
  rowwise::load_row<XT, ITERS, VEC>(xv, static_cast<const XT*>(p.x) + r0 * p.x_stride, valid, nvec);
  XT* y = static_cast<XT*>(p.y) + r0 * p.y_stride;
  if constexpr (ITERS * VEC <= kKeepExp) {
    // NaN entries: fmaxf skips them, their exp is NaN, so the sum and every y are NaN (torch's).
    // All -inf: max -inf, every x - max NaN: NaN everywhere (torch's). +inf: NaN likewise.
    float m = neg_inf();
#pragma unroll
    for (int k = 0; k < ITERS; ++k)
      if (valid && vec_index(k) < nvec)
#pragma unroll
        for (int i = 0; i < VEC; ++i) m = fmaxf(m, xv[k].get(i));
    m = row_max(m, red);
    float e[ITERS][VEC];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const bool in = valid && vec_index(k) < nvec;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        e[k][i] = in ? expf(xv[k].get(i) - m) : 0.f;
        s += e[k][i];
      }
    }
    s = row_sum(s, red + 32);
    if (!valid) return;  // no barriers below
    const float inv = 1.f / s;
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int j = vec_index(k);
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = e[k][i] * inv;
        store_vec_cs(y, j, o);
      }
    }
  } else {
    float m = neg_inf(), s = 0.f;
    if (valid) accumulate<ITERS, VEC>(m, s, xv, threadIdx.x, blockDim.x, nvec);  // vectors vec_index(k)
    row_max_sum(m, s, red);
    if (!valid) return;  // no barriers below
    const float inv = 1.f / s;
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int j = vec_index(k);
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = expf(xv[k].get(i) - m) * inv;
        store_vec_cs(y, j, o);
      }
    }
  }
}

// Forward, rows longer than registers hold: pass 1 streams x once for the online (max, sum);
// pass 2 re-reads x, last chunk first (see the top of the file), and writes y.
template <int VEC>
__device__ __forceinline__ void fwd_loop(const LigerdSoftmaxFwdParams& p) {
  __shared__ float red[64];
  const int tpr = blockDim.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const int chunk = kLoopUnroll * tpr;  // vectors a row advances per step
  const XT* x = static_cast<const XT*>(p.x) + (valid ? row : 0) * p.x_stride;

  float m = neg_inf(), s = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += chunk) {
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
    accumulate<kLoopUnroll, VEC>(m, s, xv, j0, tpr, nvec);
  }
  row_max_sum(m, s, red);
  if (!valid) return;
  const float inv = 1.f / s;
  XT* y = static_cast<XT*>(p.y) + row * p.y_stride;
  for (int c = (nvec + chunk - 1) / chunk - 1; c >= 0; --c) {
    const int j0 = threadIdx.x + c * chunk;
    Vec<XT, VEC> xv[kLoopUnroll];
    rowwise::load_chunk(xv, x, j0, nvec);
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = expf(xv[u].get(i) - m) * inv;
        store_vec_cs(y, j, o);
      }
    }
  }
}

}  // namespace softmax
}  // namespace ligerd

// Launch bounds: LIGERD_LB_I1..I8 and LIGERD_LB_LOOP, from the op's entry (softmax.toml, which
// says why each is what it is; the planner reads the same numbers). A row in registers costs
// 4 * ITERS registers of raw words.
LIGERD_ROW_KERNELS_I8(softmax_fwd, LigerdSoftmaxFwdParams, ligerd::softmax::fwd_reg,
                      ligerd::softmax::fwd_loop, ligerd::softmax::kVec)

#else  // LIGERD_SOFTMAX_BWD
// The backward loop kernel reads two tensors per step, so half the forward's vectors per tensor
// keep the same bytes in flight.
constexpr int kBwdLoopUnroll = 2;

// ---------------------------------------------------------------------------------------------
// Backward, a row in registers: dy and y read once, one sum, dx written once. dx may be dy: every
// thread reads its own vectors before the reduction's barrier and writes only those after it.
template <int ITERS, int VEC>
__device__ __forceinline__ void bwd_reg(const LigerdSoftmaxBwdParams& p) {
  __shared__ float red[32];
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const long long r0 = valid ? row : 0;

  Vec<XT, VEC> dyv[ITERS], yv[ITERS];
  rowwise::load_row<XT, ITERS, VEC>(dyv, static_cast<const XT*>(p.dy) + r0 * p.dy_stride, valid, nvec);
  rowwise::load_row<XT, ITERS, VEC>(yv, static_cast<const XT*>(p.y) + r0 * p.y_stride, valid, nvec);
  float dot = 0.f;  // vectors past the row's end are zeros: they add nothing
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) dot = fmaf(dyv[k].get(i), yv[k].get(i), dot);
  dot = row_sum(dot, red);
  if (!valid) return;  // no barriers below
  XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = vec_index(k);
    if (j < nvec) {
      float o[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = yv[k].get(i) * (dyv[k].get(i) - dot);
      rowwise::store_vec(dx, j, o);
    }
  }
}

// Backward, rows longer than registers hold: pass 1 streams dy and y for the dot; pass 2 re-reads
// them, last chunk first, and writes dx. In place (dx == dy) each thread reads a chunk of dy
// before it writes the same vectors of dx, and no other thread touches them.
template <int VEC>
__device__ __forceinline__ void bwd_loop(const LigerdSoftmaxBwdParams& p) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int nvec = p.n / VEC;
  const int chunk = kBwdLoopUnroll * tpr;
  const long long r0 = valid ? row : 0;
  const XT* dy = static_cast<const XT*>(p.dy) + r0 * p.dy_stride;
  const XT* y = static_cast<const XT*>(p.y) + r0 * p.y_stride;

  float dot = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += chunk) {
    Vec<XT, VEC> dyv[kBwdLoopUnroll], yv[kBwdLoopUnroll];
    rowwise::load_chunk(dyv, dy, j0, nvec);
    rowwise::load_chunk(yv, y, j0, nvec);
#pragma unroll
    for (int u = 0; u < kBwdLoopUnroll; ++u)
#pragma unroll
      for (int i = 0; i < VEC; ++i) dot = fmaf(dyv[u].get(i), yv[u].get(i), dot);
  }
  dot = row_sum(dot, red);
  if (!valid) return;
  XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
  for (int c = (nvec + chunk - 1) / chunk - 1; c >= 0; --c) {
    const int j0 = threadIdx.x + c * chunk;
    Vec<XT, VEC> dyv[kBwdLoopUnroll], yv[kBwdLoopUnroll];
    rowwise::load_chunk(dyv, dy, j0, nvec);
    rowwise::load_chunk(yv, y, j0, nvec);
#pragma unroll
    for (int u = 0; u < kBwdLoopUnroll; ++u) {
      const int j = j0 + u * tpr;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) o[i] = yv[u].get(i) * (dyv[u].get(i) - dot);
        rowwise::store_vec(dx, j, o);
      }
    }
  }
}

}  // namespace softmax
}  // namespace ligerd

// Launch bounds: LIGERD_LB_I1..I4 and LIGERD_LB_LOOP, from the entry. A row in registers costs
// 8 * ITERS registers of raw words (dy and y).
LIGERD_ROW_KERNELS_I4(softmax_bwd, LigerdSoftmaxBwdParams, ligerd::softmax::bwd_reg,
                      ligerd::softmax::bwd_loop, ligerd::softmax::kVec)
#endif  // LIGERD_SOFTMAX_BWD
