// Squared ReLU (Liger's LigerReLUSquaredFunction; Nemotron's "relu2" MLP activation), forward and
// backward. Compiled by NVRTC (see relu_squared.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_RELU2_BWD  0: forward module, 1: backward module
//   LIGERD_XT         element type of every tensor: float | ligerd::bf16 | ligerd::f16
// Kernels in each module:
//   relu_squared_{fwd,bwd}_v  16-byte vectors: every pointer 16-byte aligned, every row stride a
//                             multiple of the vector width, and the last dim too unless the call
//                             is one dense row; that row's last cols % VEC elements (an odd size
//                             such as 4097) are done one by one by the first block.
//   relu_squared_{fwd,bwd}_s  one element per access: any shape, any alignment.
// 1-D blocks, each over one contiguous chunk of LIGERD_RELU2_POSITIONS_PER_THREAD * blockDim.x
// positions (the layout glu.cuh measured; a grid smaller than the chunk count loops).
//
// Numerics: x and dy are converted to fp32 on load, each output is rounded once to XT.
//   forward   y  = relu(x)^2              = x <= 0 ? 0 : x * x
//   backward  dx = 2 * relu(x) * dy       = x <= 0 ? 0 : (2 x) * dy
// For bf16/fp16 inputs both products are exact in fp32 (8+8 or 11+11 significant bits), for
// fp32 they are one rounding of the exact (float64) product: the only rounding is the final one,
// so every output is the exact result correctly rounded to XT. NaN x gives NaN in both; where
// x <= 0 the backward gives 0 even for an infinite or NaN dy, as torch's relu backward does
// (threshold_backward zeroes those positions). The backward may write dx over dy: each thread
// reads its elements of x and dy before writing the same elements of dx, so that is race-free.
#include "kernels/ops/common.cuh"
#include "kernels/ops/relu_squared_params.h"

namespace ligerd {
namespace relu2 {

using XT = LIGERD_XT;
// Elements per 16-byte access.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
constexpr int kUnroll = LIGERD_RELU2_POSITIONS_PER_THREAD;

// Position i of the rows x ncols grid (in VEC units) -> row and column. A dense call arrives as
// one row, so the division is skipped on the hot path.
struct Pos {
  long long row, col;
};
__device__ __forceinline__ Pos pos_of(long long i, long long ncols, long long rows) {
  if (rows == 1) return {0, i};
  const long long r = i / ncols;
  return {r, i - r * ncols};
}

#if LIGERD_RELU2_BWD == 0
// Forward. Moves 2*N*b bytes (read x, write y; N elements of b bytes) and nothing else:
// HBM-bound, limit = 2*N*b / copy bandwidth.
__device__ __forceinline__ float op(float x, float /*dy*/) { return x <= 0.f ? 0.f : x * x; }
constexpr bool kReadsDy = false;
#else
// Backward. Moves 3*N*b bytes (read x, dy; write dx) and nothing else: HBM-bound,
// limit = 3*N*b / copy bandwidth. In place (dx over dy) it needs no extra memory.
__device__ __forceinline__ float op(float x, float dy) { return x <= 0.f ? 0.f : (2.f * x) * dy; }
constexpr bool kReadsDy = true;
#endif

template <int VEC>
__device__ __forceinline__ void run(const LigerdReluSquaredParams& p) {
  const long long ncols = p.cols / VEC;
  const long long total = ncols * p.rows;
  const XT* x = static_cast<const XT*>(p.x);
  const XT* dy = static_cast<const XT*>(p.dy);
  XT* out = static_cast<XT*>(p.out);
  // Block k owns the chunk of kUnroll * blockDim.x positions starting at k * kUnroll *
  // blockDim.x; thread t takes positions t, t + blockDim.x, ... of it, all loads issued before
  // any math. The default grid covers every chunk once (the loop body runs once).
  const long long step = blockDim.x;
  const long long chunk = kUnroll * step;
  for (long long i0 = static_cast<long long>(blockIdx.x) * chunk + threadIdx.x; i0 < total;
       i0 += static_cast<long long>(gridDim.x) * chunk) {
    Vec<XT, VEC> xv[kUnroll], gv[kUnroll];
    long long off_out[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long i = i0 + u * step;
      if (i < total) {
        const Pos q = pos_of(i, ncols, p.rows);
        const long long col = q.col * VEC;
        xv[u].load(x + q.row * p.x_stride + col);
        if constexpr (kReadsDy) gv[u].load(dy + q.row * p.dy_stride + col);
        off_out[u] = q.row * p.out_stride + col;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i0 + u * step < total) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] = op(xv[u].get(k), kReadsDy ? gv[u].get(k) : 0.f);
        Vec<XT, VEC> ov;
        ov.set_all(o);
        ov.store(out + off_out[u]);
      }
    }
  }
  // The dense row's last cols % VEC elements (fewer than VEC <= 8 < blockDim.x): the planner
  // takes the vector kernel with a ragged last dim only for one dense row, and gives it at least
  // one block.
  if constexpr (VEC > 1) {
    const long long t = ncols * VEC + threadIdx.x;
    if (blockIdx.x == 0 && p.rows == 1 && t < p.cols) {
      const float g = kReadsDy ? load_one(dy + t) : 0.f;
      store_one(out + t, op(load_one(x + t), g));
    }
  }
}

}  // namespace relu2
}  // namespace ligerd

// Launch bounds: LIGERD_LB_V, LIGERD_LB_S from the entries (relu_squared.toml).
#if LIGERD_RELU2_BWD == 0
extern "C" __global__ void LIGERD_LB_V relu_squared_fwd_v(const LigerdReluSquaredParams p) {
  ligerd::relu2::run<ligerd::relu2::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_S relu_squared_fwd_s(const LigerdReluSquaredParams p) {
  ligerd::relu2::run<1>(p);
}
#else
extern "C" __global__ void LIGERD_LB_V relu_squared_bwd_v(const LigerdReluSquaredParams p) {
  ligerd::relu2::run<ligerd::relu2::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_S relu_squared_bwd_s(const LigerdReluSquaredParams p) {
  ligerd::relu2::run<1>(p);
}
#endif
