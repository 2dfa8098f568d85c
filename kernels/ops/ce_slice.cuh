// Vocabulary-sliced cross-entropy: the per-slice steps of the fused linear cross-entropy's sliced
// path, where a block of tokens' logits is computed one slice of classes at a time (a GEMM per
// slice) and never exists whole. Compiled by NVRTC (see ce_slice.cc). Semantics and the float64
// reference: python_client/ligerd/testing/reference/ce_slice.py.
//
//   ce_slice_stats  per row, the online-softmax statistics of this slice merged into the running
//                   ones: m (max z), s (sum of exp(z - m)), sz (sum of w_j z_j), the target's z
//                   and the first argmax. One read of the slice: rows * n * b bytes.
//   ce_slice_grad   per row, dX_j = (A p_j + B w_j + C [j == y]) (* softcap'), p_j = exp(z_j - lse),
//                   from the caller's per-row coef = (lse, A, B, C): one read and one write of the
//                   slice, 2 * rows * n * b bytes, written over the logits.
// Both are bound by HBM bandwidth (~3.35 TB/s on an H100 SXM; a 2048 x 4096 bf16 slice is 16 MiB,
// ~5 us to read); the GEMM that produced the slice (2 * rows * n * H flops) takes ~15x longer at
// H = 4096, so these kernels aim at streaming, not at the last few percent.
//
// Specialisation (-D defines): LIGERD_XT = float | ligerd::bf16 | ligerd::f16 (the logits);
// LIGERD_CE_SLICE_PART = 0 (stats) | 1 (grad). One block per row (a persistent loop over rows
// when the grid is smaller), 16-byte accesses over the row's aligned middle, the unaligned head
// and tail element by element.
#include "kernels/ops/ce_online.cuh"
#include "kernels/ops/ce_slice_params.h"
#include "kernels/ops/common.cuh"

namespace ligerd {
namespace ce_slice {

using XT = LIGERD_XT;
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));  // elements per 16-byte access
using XVec = Vec<XT, kVec>;
// 16-byte vectors a thread loads before using them: two loads in flight per thread (a 4096-class
// bf16 row is 512 vectors, 2 per thread of a 256-thread block, loaded together).
constexpr int kUnroll = 2;
using ce_online::ex2;
using ce_online::kLog2e;
using ce_online::kLowest;
using ce_online::kNoIndex;
using ce_online::RowSplit;

__device__ __forceinline__ float capped(float x, float c) { return c > 0.f ? c * tanhf(x / c) : x; }

__device__ __forceinline__ RowSplit split_row(const void* row, long long cols) {
  return ce_online::split_row<XT>(row, cols);
}

// f(vector, its first column) over this thread's vectors of a row's aligned middle (vectors tid,
// tid + bs, ...: increasing columns), kUnroll of them loaded before any is used, so that their
// loads are in flight together.
template <class F>
__device__ __forceinline__ void for_each_vector(const XT* row, const RowSplit& sp, int tid, int bs, F&& f) {
  for (long long v0 = tid; v0 < sp.nvec; v0 += kUnroll * bs) {
    XVec in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (v0 + u * bs < sp.nvec) in[u].load(row + sp.head + (v0 + u * bs) * kVec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (v0 + u * bs >= sp.nvec) break;
      f(in[u], sp.head + (v0 + u * bs) * kVec);
    }
  }
}

}  // namespace ce_slice
}  // namespace ligerd

#if LIGERD_CE_SLICE_PART == 0
namespace ligerd {
namespace ce_slice {

using ce_online::block_combine;
using ce_online::combine;
using ce_online::Stat;
constexpr int kMaxWarps = 32;  // block_combine's per-warp slots for blocks of up to 1024 threads

// One value z at slice column j (columns increase per thread, so "strictly greater" keeps the
// thread's first argmax).
__device__ __forceinline__ void add(Stat& st, float z, long long j, float w) {
  if (z > st.m) {
    st.s *= ex2((st.m - z) * kLog2e);
    st.m = z;
    st.idx = j;
  }
  st.s += ex2((z - st.m) * kLog2e);
  st.sz = fmaf(w, z, st.sz);
}

extern "C" __global__ void LIGERD_LB_STATS ce_slice_stats(LigerdCeSliceStatsParams p) {
  __shared__ Stat red[kMaxWarps];
  const int tid = threadIdx.x, bs = blockDim.x;
  const float c = p.softcap;
  for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const XT* x = static_cast<const XT*>(p.x) + r * p.x_stride;
    const RowSplit sp = split_row(x, p.n);
    Stat st{kLowest, 0.f, 0.f, kNoIndex};
    for (long long j = tid; j < sp.head; j += bs)
      add(st, capped(load_one(x + j), c), j, p.weight ? __ldg(p.weight + p.v0 + j) : 1.f);
    for_each_vector(x, sp, tid, bs, [&](const XVec& in, long long j0) {
#pragma unroll
      for (int k = 0; k < kVec; ++k)
        add(st, capped(in.get(k), c), j0 + k, p.weight ? __ldg(p.weight + p.v0 + j0 + k) : 1.f);
    });
    for (long long j = sp.tail_start + tid; j < p.n; j += bs)
      add(st, capped(load_one(x + j), c), j, p.weight ? __ldg(p.weight + p.v0 + j) : 1.f);
    const Stat b = block_combine(st, red);
    __syncthreads();  // every thread has read red[]: the next row may refill it
    if (tid != 0) continue;
    float* out = p.stats + r * 4;
    const long long y = p.target[r] - p.v0;
    const bool here = y >= 0 && y < p.n;
    const float zy = here ? capped(load_one(x + y), c) : (p.first ? 0.f : out[3]);
    const long long idx = b.idx == kNoIndex ? kNoIndex : p.v0 + b.idx;
    Stat m = {b.m, b.s, b.sz, idx};
    if (!p.first) {
      const Stat prev{out[0], out[1], out[2], p.idx ? p.idx[r] : kNoIndex};
      m = combine(prev, m);
      // The earlier slices' classes come first: a tie keeps their argmax.
      m.idx = b.m > prev.m ? idx : prev.idx;
    }
    out[0] = m.m;
    out[1] = m.s;
    out[2] = m.sz;
    out[3] = zy;
    if (p.idx) p.idx[r] = m.idx;
  }
}

}  // namespace ce_slice
}  // namespace ligerd
#endif  // LIGERD_CE_SLICE_PART == 0

#if LIGERD_CE_SLICE_PART == 1
namespace ligerd {
namespace ce_slice {

struct RowCoef {
  float mb, A, B, C, c;  // mb = lse * log2(e)
  long long y;           // the target's column in this slice (may lie outside it)
};

__device__ __forceinline__ float grad_at(float x, long long j, const RowCoef& k, const float* w, long long v0) {
  float t = 0.f, z = x;
  if (k.c > 0.f) {
    t = tanhf(x / k.c);
    z = k.c * t;
  }
  float g = k.A * ex2(fmaf(z, kLog2e, -k.mb));
  g = fmaf(k.B, w ? __ldg(w + v0 + j) : 1.f, g);
  if (j == k.y) g += k.C;  // in fp32 before rounding: p_y - 1 keeps its bits
  return k.c > 0.f ? g * (1.f - t * t) : g;
}

extern "C" __global__ void LIGERD_LB_GRAD ce_slice_grad(LigerdCeSliceGradParams p) {
  const int tid = threadIdx.x, bs = blockDim.x;
  for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const XT* x = static_cast<const XT*>(p.x) + r * p.x_stride;
    XT* dx = static_cast<XT*>(p.dx) + r * p.dx_stride;
    const RowSplit sp = split_row(x, p.n);
    const bool dx_vec = split_row(dx, p.n).head == sp.head;
    const long long target = p.target[r];
    const bool ignored = target == p.ignore_index;
    const float* cf = p.coef + r * 4;
    const RowCoef k{cf[0] * kLog2e, cf[1], cf[2], cf[3], p.softcap, target - p.v0};
    for (long long j = tid; j < sp.head; j += bs)
      store_one(dx + j, ignored ? 0.f : grad_at(load_one(x + j), j, k, p.weight, p.v0));
    for_each_vector(x, sp, tid, bs, [&](const XVec& in, long long j0) {
      float g[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) g[i] = ignored ? 0.f : grad_at(in.get(i), j0 + i, k, p.weight, p.v0);
      if (dx_vec) {
        XVec out;
        out.set_all(g);
        out.store(dx + j0);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) store_one(dx + j0 + i, g[i]);
      }
    });
    for (long long j = sp.tail_start + tid; j < p.n; j += bs)
      store_one(dx + j, ignored ? 0.f : grad_at(load_one(x + j), j, k, p.weight, p.v0));
  }
}

}  // namespace ce_slice
}  // namespace ligerd
#endif  // LIGERD_CE_SLICE_PART == 1
