// The online softmax of a row of logits, shared by the cross-entropy kernels (cross_entropy.cuh:
// whole rows) and the vocabulary-sliced ones (ce_slice.cuh: a slice of classes at a time): the
// running statistics, their combination, fast 2^x, and a row's split into its unaligned head,
// 16-byte vectors and tail. Compiled by NVRTC only (included by those sources).
#pragma once

namespace ligerd {
namespace ce_online {

constexpr float kLog2e = 1.4426950408889634f;
// Running maximum starts finite so that 2^(z - m) of a -inf logit is 0, never NaN.
constexpr float kLowest = -3.402823466e+38f;
constexpr long long kNoIndex = 0x7fffffffffffffffLL;

// 2^x in one MUFU instruction (relative error < 2^-22; ex2(-inf) = 0). Liger uses the same.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Where a row of T starts its 16-byte-aligned middle: `head` leading elements are handled one by
// one, then `nvec` vectors, then the tail. Rows of an odd vocabulary (50257) start at any alignment.
struct RowSplit {
  long long head, nvec, tail_start;
};
template <class T>
__device__ __forceinline__ RowSplit split_row(const void* row, long long cols) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const unsigned mis = static_cast<unsigned>(reinterpret_cast<unsigned long long>(row) & 15u) /
                       static_cast<unsigned>(sizeof(T));
  long long head = mis ? kVec - mis : 0;
  if (head > cols) head = cols;
  const long long nvec = (cols - head) / kVec;
  return {head, nvec, head + nvec * kVec};
}

// Online-softmax state of one thread (then of a warp, then of the block): running max m (of z),
// s = sum 2^((z - m) log2 e), sz = sum of (w_j) z_j for label smoothing, idx = first argmax.
struct Stat {
  float m, s, sz;
  long long idx;
};

__device__ __forceinline__ Stat combine(const Stat& a, const Stat& b) {
  Stat r;
  r.m = fmaxf(a.m, b.m);
  r.s = a.s * ex2((a.m - r.m) * kLog2e) + b.s * ex2((b.m - r.m) * kLog2e);
  r.sz = a.sz + b.sz;
  r.idx = a.m > b.m ? a.idx : (b.m > a.m ? b.idx : (a.idx < b.idx ? a.idx : b.idx));
  return r;
}

// Block-wide combination in a fixed order (deterministic), returned to every thread. `red` holds
// one Stat per warp; a caller that reuses it (the next row) must __syncthreads() first.
__device__ __forceinline__ Stat block_combine(Stat st, Stat* red) {
  for (int off = 16; off > 0; off >>= 1) {
    Stat o;
    o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
    o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
    o.sz = __shfl_xor_sync(0xffffffffu, st.sz, off);
    o.idx = __shfl_xor_sync(0xffffffffu, st.idx, off);
    st = combine(st, o);
  }
  const int warps = blockDim.x >> 5;
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = st;
  __syncthreads();
  Stat r = red[0];
  for (int i = 1; i < warps; ++i) r = combine(r, red[i]);
  return r;
}

}  // namespace ce_online
}  // namespace ligerd
