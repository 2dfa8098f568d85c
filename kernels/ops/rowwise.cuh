// What the row-wise norm kernels (rms_norm.cuh, layer_norm.cuh) share. Compiled by NVRTC only.
//
// Layout they all use: blockDim.x threads share a row (a power of two <= 32 or a multiple of 32),
// blockDim.y rows per block; a row of n elements is nvec = n / VEC vectors, and thread `lane`
// holds vectors lane, lane + blockDim.x, ... (ITERS of them) when the row lives in registers.
// Consecutive lanes touch consecutive 16-byte vectors, so every warp access is fully coalesced.
//
// Weight gradients (RMSNorm's dW, LayerNorm's dW and dB) are never reduced with atomics: each
// block of a persistent grid keeps fp32 column sums for the rows it visits, writes them as one
// partial row, and reduce_partials() sums the partial rows per column in a fixed order. So dW is
// deterministic (bitwise reproducible for a launch config) and costs 2 * P * n * 4 bytes of
// traffic with P = grid size (about 264 rows on an H100: ~1% of a 16K-row bf16 backward).
#pragma once

#include "kernels/ops/common.cuh"
#include "kernels/ops/rowwise_params.h"

namespace ligerd {
namespace rowwise {

// Index of this thread's k-th vector in its row (valid when < nvec).
__device__ __forceinline__ int vec_index(int k) { return threadIdx.x + k * blockDim.x; }

// This thread's share of a row into registers: ITERS vectors, zero outside the row or when the
// row itself is past the end (`valid` false; those threads still take part in row_sums).
template <class T, int ITERS, int VEC>
__device__ __forceinline__ void load_row(Vec<T, VEC> (&v)[ITERS], const T* row, bool valid, int nvec) {
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = vec_index(k);
    if (valid && j < nvec) v[k].load(row + static_cast<long long>(j) * VEC);
    else v[k].zero();
  }
}

// U vectors of a row streamed by the loop kernels: vectors j0, j0 + blockDim.x, ... (a thread's
// next U in one batch, so U independent 16-byte loads are in flight), zero past the row's end.
template <class T, int U, int VEC>
__device__ __forceinline__ void load_chunk(Vec<T, VEC> (&v)[U], const T* row, int j0, int nvec) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int j = j0 + u * blockDim.x;
    if (j < nvec) v[u].load(row + static_cast<long long>(j) * VEC);
    else v[u].zero();
  }
}

// Vector j of a row (VEC elements of T, 16 bytes when vectorised) from fp32 values.
template <class T, int VEC>
__device__ __forceinline__ void store_vec(T* row, int j, const float (&v)[VEC]) {
  Vec<T, VEC> out;
  out.set_all(v);
  out.store(row + static_cast<long long>(j) * VEC);
}

// The loop kernels' weight-gradient partial row lives in the workspace (`part`, this block's
// fp32 row) and is updated in place: part[j] = add on the block's first row, part[j] + add after.
// Each column always belongs to the same thread, so its own earlier store is what it reads (no
// races, no barrier). Costs 8 bytes per element per row, served by L2 (P rows of n fp32 stay
// resident: ~4 MB at n = 4096 on an H100).
template <int VEC>
__device__ __forceinline__ void update_partial(float* part, int j, bool first, float (&add)[VEC]) {
  if (!first) {
    Vec<float, VEC> prev;
    prev.load(part + static_cast<long long>(j) * VEC);
#pragma unroll
    for (int i = 0; i < VEC; ++i) add[i] += prev.get(i);
  }
  store_vec(part, j, add);
}

// Zero fp32 accumulators of the register-row layout.
template <int ITERS, int VEC>
__device__ __forceinline__ void zero_acc(float (&acc)[ITERS][VEC]) {
#pragma unroll
  for (int k = 0; k < ITERS; ++k)
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[k][i] = 0.f;
}

// Per-thread column sums `acc` (register-row layout) summed over the block's blockDim.y rows
// (through `stage`, blockDim.x * blockDim.y * VEC floats of shared memory, in ascending row
// order) and written by the first row's threads as one fp32 row at `part`. Every thread of the
// block must call it (barriers inside when blockDim.y > 1).
template <int ITERS, int VEC>
__device__ __forceinline__ void store_block_partial(const float (&acc)[ITERS][VEC], float* part,
                                                    float* stage, int nvec) {
  const int tpr = blockDim.x;
  const int lane = threadIdx.x;
#pragma unroll
  for (int k = 0; k < ITERS; ++k) {
    const int j = vec_index(k);
    float s[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) s[i] = acc[k][i];
    if (blockDim.y > 1) {
      float* mine = stage + (threadIdx.y * tpr + lane) * VEC;
#pragma unroll
      for (int i = 0; i < VEC; ++i) mine[i] = s[i];
      __syncthreads();
      if (threadIdx.y == 0) {
        for (int r = 1; r < blockDim.y; ++r) {
          const float* other = stage + (r * tpr + lane) * VEC;
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

// Column sums of the partial rows: out[k][c] = sum over r of partial[k][r][c], r in ascending
// order within each of the 16 row lanes and then the lanes in ascending order: deterministic, no
// atomics. Block 32 x 16 (a warp reads 32 consecutive floats: 128-byte transactions), grid
// (ceil(n / 32), outputs). Moves outputs * (P * n * 4 + n * sizeof(WT)) bytes.
constexpr int kReduceCols = 32, kReduceLanes = 16;
template <class WT>
__device__ __forceinline__ void reduce_partials(const LigerdRowReduceParams& p) {
  __shared__ float part[kReduceLanes][kReduceCols + 1];  // +1: no bank conflicts on the transposed read
  const int col = blockIdx.x * kReduceCols + threadIdx.x;
  const float* base = p.partial + static_cast<long long>(blockIdx.y) * p.num_partials * p.n;
  float s = 0.f;
  if (col < p.n)
    for (int r = threadIdx.y; r < p.num_partials; r += kReduceLanes) s += base[static_cast<long long>(r) * p.n + col];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < p.n) {
    float t = 0.f;
    for (int r = 0; r < kReduceLanes; ++r) t += part[r][threadIdx.x];
    store_one(static_cast<WT*>(p.out[blockIdx.y]) + col, t);
  }
}

}  // namespace rowwise
}  // namespace ligerd

// The extern "C" kernel table of a family, by the names the host's RowKernelName() forms:
// <PREFIX>_i<I>_v / _s run FN<I, VEC> / FN<I, 1> (a row in registers, I vectors per thread, 16-byte
// or one-element accesses), <PREFIX>_loop_v / _s run FN<VEC> / FN<1> (streamed rows). BOUNDS is
// the kernels' __launch_bounds__(...), LIGERD_LB_<KEY> from the op's entry (the host plans with
// the same numbers).
#define LIGERD_ROW_REG_KERNELS_LB(PREFIX, I, BOUNDS, PARAMS, FN, VEC)                         \
  extern "C" __global__ void BOUNDS PREFIX##_i##I##_v(const PARAMS p) { FN<I, VEC>(p); } \
  extern "C" __global__ void BOUNDS PREFIX##_i##I##_s(const PARAMS p) { FN<I, 1>(p); }
#define LIGERD_ROW_LOOP_KERNELS(PREFIX, BOUNDS, PARAMS, FN, VEC)                          \
  extern "C" __global__ void BOUNDS PREFIX##_loop_v(const PARAMS p) { FN<VEC>(p); } \
  extern "C" __global__ void BOUNDS PREFIX##_loop_s(const PARAMS p) { FN<1>(p); }
// A family's whole table: register kernels i1..i4 (LIGERD_ROW_KERNELS_I4) or i1..i8
// (LIGERD_ROW_KERNELS_I8), each bounded by LIGERD_LB_I<k>, plus the loop kernels bounded by
// LIGERD_LB_LOOP; REG_FN<I, VEC> and LOOP_FN<VEC> are the row functions.
#define LIGERD_ROW_KERNELS_I4(PREFIX, PARAMS, REG_FN, LOOP_FN, VEC)              \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 1, LIGERD_LB_I1, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 2, LIGERD_LB_I2, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 3, LIGERD_LB_I3, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 4, LIGERD_LB_I4, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_LOOP_KERNELS(PREFIX, LIGERD_LB_LOOP, PARAMS, LOOP_FN, VEC)
#define LIGERD_ROW_KERNELS_I8(PREFIX, PARAMS, REG_FN, LOOP_FN, VEC)              \
  LIGERD_ROW_KERNELS_I4(PREFIX, PARAMS, REG_FN, LOOP_FN, VEC)                    \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 5, LIGERD_LB_I5, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 6, LIGERD_LB_I6, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 7, LIGERD_LB_I7, PARAMS, REG_FN, VEC)       \
  LIGERD_ROW_REG_KERNELS_LB(PREFIX, 8, LIGERD_LB_I8, PARAMS, REG_FN, VEC)
