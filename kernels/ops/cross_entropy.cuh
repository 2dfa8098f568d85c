// Cross-entropy (Liger's liger_cross_entropy_kernel semantics, torch's label smoothing), with the
// gradient computed in the forward pass and written over the logits. Compiled by NVRTC (see
// cross_entropy.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_CE_PART    0: cross_entropy_fwd (ce_fwd and ce_fwd_cluster), 1: cross_entropy_count (ce_count),
//                     2: cross_entropy_scale (ce_scale)
//   LIGERD_XT         logits / gradient element type: float | ligerd::bf16 | ligerd::f16
//   LIGERD_CE_SOFTCAP 0/1 (forward only): logits pass through z = c * tanh(x / c) first
//   LIGERD_CE_FEATURES 0/1 (forward only): 1 holds a row loop for each combination of argmax
//                     (pred), label smoothing and class weights, chosen per launch; 0 only the
//                     one without any, the common training call, which the planner picks when the
//                     call has none (cross_entropy.cc). The same code for that call; a module of
//                     one row loop per kernel instead of eight compiles ~17x faster in NVRTC.
//
// Per row r with target y (not ignore_index), z = logits (softcapped), eps = label_smoothing / V,
// lse = log sum_j exp(z_j), p_j = exp(z_j - lse), w = class weights (1 without), W = sum_j w_j:
//   loss_r = w_y (lse - z_y) (1 - ls) + eps (W lse - sum_j w_j z_j)    [ls > 0 term only]
//   z_r    = lse_square_scale * lse^2                                    (PaLM z-loss, unweighted)
//   "mean" divides the first by sum_{valid r} w_{y_r} and z_r by the count of valid rows (torch
//   and Liger); "sum" and "none" do not. loss_r += z_r (Liger returns the sum and z separately).
//   dz_j   = A p_j + B w_j + C [j == y], with (per row, fp32)
//            A = ((1 - ls) w_y + eps W) / Dw + 2 lss lse / Dn,  B = -eps / Dw,  C = -(1 - ls) w_y / Dw
//   dx_j   = dz_j (1 - t_j^2), t_j = tanh(x_j / c), with softcap; dx_j = dz_j without.
//   Ignored rows: loss 0, z 0, pred -1, gradient 0. A target outside [0, V) that is not
//   ignore_index is never dereferenced: that row's loss and gradient are NaN (defined, visible;
//   the Python client also refuses such targets before launching where it can sync).
// Optional per-row factors multiply A, B, C (and loss, z for token scaling): row_scale[r] (the
// upstream gradient of a "none" loss, for the fused linear loss's backward) and, with
// token_scaling, the detached p_y (Liger's use_token_scaling).
//
// Traffic of the forward with a gradient, M rows of V logits of b bytes; the floor is one read
// and one write of the logits, 2*M*V*b, at HBM bandwidth (~3.35 TB/s on an H100 SXM: 16384 x
// 128256 bf16 is 8.4 GB, ~2.5 ms). Pass 1 (online softmax: max, sum of exp, sum of z for label
// smoothing, argmax, in one read) must finish before pass 2 (the gradient) can start, so the
// row has to be read twice or kept on chip. A row does not fit one SM: 128256 bf16 logits are
// 251 KiB, beyond the 228 KiB of shared memory an H100 SM has (fp32 twice that).
//  - ce_fwd_cluster (sm_90+, the default when a row fits): the row is split over the CTAs of a
//    thread-block cluster (<= 8, the portable size); each CTA copies its contiguous slice into
//    its dynamic shared memory with cp.async (the whole slice in flight at once, no registers
//    held: the register-staged copy it replaced reached 80% of copy bandwidth, this 88%, at
//    16384 x 128256 bf16 on the H100), pass 1 reads the statistics from there, the CTAs exchange
//    their partial Stats through distributed shared memory (combined in rank order:
//    deterministic, the same on every CTA), and pass 2 reads the slice back from shared memory.
//    HBM traffic is exactly 2*M*V*b.
//    Shared memory per CTA: [stash: ceil(nvec / cluster) 16-byte vectors (dynamic)] + ~1 KiB
//    static (per-warp Stats, the exchanged Stats double-buffered, z_y). The planner sizes the
//    slices to <= 64 KiB so that three CTAs share an SM and one's loads overlap the others'
//    stores (cross_entropy.cc / .h: cluster size rule, threads, grid).
//  - ce_fwd (below sm_90, rows too long for 8 CTAs such as fp32 x 262144, or loss only): one
//    block per row reads it twice. Its grid is persistent and sized so that the rows in flight
//    (SMs x blocks per SM x row bytes) fit in about half of L2, so the second read mostly hits
//    L2: HBM floor 2*M*V*b, worst case 3*M*V*b (measured 71% of copy bandwidth at 16384 x 128256
//    bf16 by the 2*M*V*b model: the second read mostly misses). Without a gradient (loss only)
//    it is one read, M*V*b, and no stash is needed.
// ce_scale (backward): read and write the stored gradient once, 2*M*V*b, skipped entirely when
// the upstream gradient is exactly 1.0 (Liger skips it too; we decide on the device, no sync).
#include "kernels/ops/ce_online.cuh"
#include "kernels/ops/common.cuh"
#include "kernels/ops/cross_entropy_params.h"

namespace ligerd {
namespace ce {

using XT = LIGERD_XT;
// Elements per 16-byte access.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
// Vectors in flight per thread in the streaming loops: 16 elements (32 B of bf16, 64 B of fp32)
// per thread, i.e. 32-64 KiB outstanding per SM with 1024 threads, above the ~20 KiB per SM that
// HBM latency x bandwidth asks for; more would spill at 64 registers per thread.
constexpr int kUnroll = 16 / kVec;
using ce_online::ex2;
using ce_online::kLog2e;
using ce_online::kLowest;
using ce_online::kNoIndex;
using ce_online::RowSplit;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ RowSplit split_row(const void* row, long long cols) {
  return ce_online::split_row<XT>(row, cols);
}

}  // namespace ce
}  // namespace ligerd

#if LIGERD_CE_PART == 0
namespace ligerd {
namespace ce {
constexpr bool kSoftcap = LIGERD_CE_SOFTCAP != 0;

using ce_online::block_combine;
using ce_online::combine;
using ce_online::Stat;

__device__ __forceinline__ float softcapped(float x, float c, float inv_c) {
  if constexpr (kSoftcap) {
    return c * tanhf(x * inv_c);
  } else {
    return x;
  }
}

// Pass 1 over values z[0..n) at columns col0.. (increasing per thread, so "strictly greater"
// keeps each thread's first argmax).
// z holds U groups of K consecutive columns starting at col0[u].
template <bool kArgmax, bool kSmooth, bool kWeight, int U, int K>
__device__ __forceinline__ void accumulate(Stat& st, const float (&z)[U * K], const long long (&col0)[U],
                                           const float* __restrict__ w) {
  constexpr int N = U * K;
  float lm = z[0];
#pragma unroll
  for (int k = 1; k < N; ++k) lm = fmaxf(lm, z[k]);
  if (lm > st.m) {
    st.s *= ex2((st.m - lm) * kLog2e);
    st.m = lm;
    if constexpr (kArgmax) {
#pragma unroll
      for (int k = N - 1; k >= 0; --k)
        if (z[k] == lm) st.idx = col0[k / K] + k % K;
    }
  }
  const float mb = st.m * kLog2e;
#pragma unroll
  for (int k = 0; k < N; ++k) st.s += ex2(fmaf(z[k], kLog2e, -mb));
  if constexpr (kSmooth) {
#pragma unroll
    for (int k = 0; k < N; ++k) st.sz += kWeight ? __ldg(w + col0[k / K] + k % K) * z[k] : z[k];
  }
}

// Per-row gradient coefficients (see the header comment).
struct Coef {
  float A, B, C, mb, inv_d;
};

template <int N>
__device__ __forceinline__ void grad_values(float (&out)[N], const float (&x)[N], long long col0,
                                            long long y, const Coef& k, const float* __restrict__ w,
                                            float c, float inv_c) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float t = 0.f, z = x[i];
    if constexpr (kSoftcap) {
      t = tanhf(x[i] * inv_c);
      z = c * t;
    }
    const float p = ex2(fmaf(z, kLog2e, -k.mb)) * k.inv_d;
    float g = k.A * p;
    if (w != nullptr) {
      g = fmaf(k.B, __ldg(w + col0 + i), g);
    } else {
      g += k.B;
    }
    if (col0 + i == y) g += k.C;  // folded in fp32 before rounding: p_y - 1 keeps its bits
    if constexpr (kSoftcap) g *= (1.f - t * t);
    out[i] = g;
  }
}

using XVec = Vec<XT, kVec>;

// The part of a row one block works on: vectors [v0, v1) of the row's 16-byte-aligned middle,
// plus the unaligned head / tail elements when it owns them. ce_fwd: the whole row.
// ce_fwd_cluster: one CTA's slice (the head goes to rank 0, the tail to the last rank).
struct Slice {
  long long v0, v1;
  bool head, tail;
};

// Where row r lives and what it needs.
struct Row {
  long long y;
  const XT* x;
  XT* dx;
  RowSplit sp;
  bool dx_vec;  // dx rows share x's alignment: 16-byte stores too
};
__device__ __forceinline__ Row row_at(const LigerdCeFwdParams& p, long long r) {
  Row w;
  w.y = p.target[r * p.target_stride];
  w.x = static_cast<const XT*>(p.x) + r * p.x_stride;
  w.dx = p.dx == nullptr ? nullptr : static_cast<XT*>(p.dx) + r * p.dx_stride;
  w.sp = split_row(w.x, p.cols);
  w.dx_vec = w.dx != nullptr && split_row(w.dx, p.cols).head == w.sp.head;
  return w;
}

// An ignored row's gradient over the slice: zeros.
__device__ __forceinline__ void zero_slice(const Row& w, long long V, const Slice& sl) {
  const int tid = threadIdx.x, bs = blockDim.x;
  XVec zv;
  zv.zero();
  if (sl.head)
    for (long long i = tid; i < w.sp.head; i += bs) store_one(w.dx + i, 0.f);
  for (long long v = sl.v0 + tid; v < sl.v1; v += bs) {
    if (w.dx_vec) {
      zv.store(w.dx + w.sp.head + v * kVec);
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) store_one(w.dx + w.sp.head + v * kVec + k, 0.f);
    }
  }
  if (sl.tail)
    for (long long i = w.sp.tail_start + tid; i < V; i += bs) store_one(w.dx + i, 0.f);
}

// The statistics of U vectors of a row already loaded into `in`: vector u is the row's aligned
// vector v + u * bs (columns from head + (v + u * bs) * kVec).
template <bool kArgmax, bool kSmooth, bool kWeight, int U>
__device__ __forceinline__ void accumulate_vectors(Stat& st, const XVec (&in)[U], long long head, long long v, int bs,
                                                   const float* __restrict__ wt, float c, float inv_c) {
  float z[U * kVec];
  long long col0[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    col0[u] = head + (v + u * bs) * kVec;
#pragma unroll
    for (int k = 0; k < kVec; ++k) z[u * kVec + k] = softcapped(in[u].get(k), c, inv_c);
  }
  accumulate<kArgmax, kSmooth, kWeight, U, kVec>(st, z, col0, wt);
}

// The statistics of the row's single elements [i0, i1) (its unaligned head or tail), read from x.
template <bool kArgmax, bool kSmooth, bool kWeight>
__device__ __forceinline__ void accumulate_elements(Stat& st, const Row& w, long long i0, long long i1, int tid, int bs,
                                                    const float* __restrict__ wt, float c, float inv_c) {
  for (long long i = i0 + tid; i < i1; i += bs) {
    const float z[1] = {softcapped(load_one(w.x + i), c, inv_c)};
    const long long col0[1] = {i};
    accumulate<kArgmax, kSmooth, kWeight, 1, 1>(st, z, col0, wt);
  }
}

// Pass 1 of ce_fwd over a row: max, sum of exp, (weighted) sum of z, argmax, in one read of x
// (kUnroll vectors in flight per thread).
template <bool kArgmax, bool kSmooth, bool kWeight>
__device__ __forceinline__ void pass1(Stat& st, const Row& w, long long V, const Slice& sl,
                                      const float* __restrict__ wt, float c, float inv_c) {
  const int tid = threadIdx.x, bs = blockDim.x;
  const RowSplit& sp = w.sp;
  if (sl.head) accumulate_elements<kArgmax, kSmooth, kWeight>(st, w, 0, sp.head, tid, bs, wt, c, inv_c);
  const XT* xv = w.x + sp.head;
  long long v = sl.v0 + tid;
  for (; v + (kUnroll - 1) * bs < sl.v1; v += kUnroll * bs) {
    XVec in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) in[u].load(xv + (v + u * bs) * kVec);
    accumulate_vectors<kArgmax, kSmooth, kWeight, kUnroll>(st, in, sp.head, v, bs, wt, c, inv_c);
  }
  for (; v < sl.v1; v += bs) {
    XVec in[1];
    in[0].load(xv + v * kVec);
    accumulate_vectors<kArgmax, kSmooth, kWeight, 1>(st, in, sp.head, v, bs, wt, c, inv_c);
  }
  if (sl.tail) accumulate_elements<kArgmax, kSmooth, kWeight>(st, w, sp.tail_start, V, tid, bs, wt, c, inv_c);
}

// 16 bytes global -> shared without a register round trip (sm_80+), and the wait for all of
// this thread's copies: after it they are visible to this thread, which is the only one that
// reads them (the stash slot of vector v belongs to the thread that loads it in both passes).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
  asm volatile(
      "{\n\t.reg .u64 s, g;\n\tcvta.to.shared.u64 s, %0;\n\tcvta.to.global.u64 g, %1;\n\t"
      "cp.async.cg.shared.global [s], [g], 16;\n\t}" ::"l"(smem_dst), "l"(gmem_src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

// ce_fwd_cluster's stash: vector v of a CTA's slice lives in slot v - v0, which is
// tid + j * blockDim.x both when it is copied in and when passes 1 and 2 read it, so each slot
// is written and read by one thread only and needs no barrier of its own.
// Starts copying this thread's vectors of a slice into `stash`.
__device__ __forceinline__ void issue_slice(const Row& w, const Slice& sl, XVec* stash) {
  const XT* xv = w.x + w.sp.head;
  for (long long v = sl.v0 + threadIdx.x; v < sl.v1; v += blockDim.x) cp_async16(stash + (v - sl.v0), xv + v * kVec);
  cp_async_commit();
}

// Pass 1 of ce_fwd_cluster over a slice whose vectors issue_slice() has put in flight to
// `stash`: the head / tail elements from x while the copies land, then the statistics from
// shared memory.
template <bool kArgmax, bool kSmooth, bool kWeight>
__device__ __forceinline__ void pass1_stashed(Stat& st, const Row& w, long long V, const Slice& sl, const XVec* stash,
                                              const float* __restrict__ wt, float c, float inv_c) {
  const int tid = threadIdx.x, bs = blockDim.x;
  const RowSplit& sp = w.sp;
  if (sl.head) accumulate_elements<kArgmax, kSmooth, kWeight>(st, w, 0, sp.head, tid, bs, wt, c, inv_c);
  if (sl.tail) accumulate_elements<kArgmax, kSmooth, kWeight>(st, w, sp.tail_start, V, tid, bs, wt, c, inv_c);
  cp_async_wait_all();
  long long v = sl.v0 + tid;
  for (; v + (kUnroll - 1) * bs < sl.v1; v += kUnroll * bs) {
    XVec in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) in[u].load(reinterpret_cast<const XT*>(stash + (v - sl.v0 + u * bs)));
    accumulate_vectors<kArgmax, kSmooth, kWeight, kUnroll>(st, in, sp.head, v, bs, wt, c, inv_c);
  }
  for (; v < sl.v1; v += bs) {
    XVec in[1];
    in[0].load(reinterpret_cast<const XT*>(stash + (v - sl.v0)));
    accumulate_vectors<kArgmax, kSmooth, kWeight, 1>(st, in, sp.head, v, bs, wt, c, inv_c);
  }
}

// The gradient of kVec consecutive columns from col0, stored to dx.
__device__ __forceinline__ void grad_vector(const Row& w, const XVec& in, long long col0, const Coef& k,
                                            const float* __restrict__ wg, float c, float inv_c) {
  float xin[kVec], g[kVec];
#pragma unroll
  for (int e = 0; e < kVec; ++e) xin[e] = in.get(e);
  grad_values(g, xin, col0, w.y, k, wg, c, inv_c);
  if (w.dx_vec) {
    XVec o;
    o.set_all(g);
    o.store(w.dx + col0);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) store_one(w.dx + col0 + e, g[e]);
  }
}

// Pass 2 over a slice: dx = A p + B w + C [j == y] (times the softcap chain rule), in place.
// The slice's vectors come from `stash` with kStash (no second read of HBM / L2), else from x
// again; the head / tail elements (< 16 bytes each) are re-read from x either way.
template <bool kStash>
__device__ __forceinline__ void pass2(const Row& w, long long V, const Slice& sl, const XVec* stash,
                                      const Coef& k, const float* __restrict__ wg, float c, float inv_c) {
  const int tid = threadIdx.x, bs = blockDim.x;
  const RowSplit& sp = w.sp;
  if (sl.head)
    for (long long i = tid; i < sp.head; i += bs) {
      const float xin[1] = {load_one(w.x + i)};
      float g[1];
      grad_values(g, xin, i, w.y, k, wg, c, inv_c);
      store_one(w.dx + i, g[0]);
    }
  const XT* xv = w.x + sp.head;
  long long v = sl.v0 + tid;
  for (; v + (kUnroll - 1) * bs < sl.v1; v += kUnroll * bs) {
    XVec in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if constexpr (kStash) {
        in[u].load(reinterpret_cast<const XT*>(stash + (v - sl.v0 + u * bs)));
      } else {
        in[u].load(xv + (v + u * bs) * kVec);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) grad_vector(w, in[u], sp.head + (v + u * bs) * kVec, k, wg, c, inv_c);
  }
  for (; v < sl.v1; v += bs) {
    XVec in;
    if constexpr (kStash) {
      in.load(reinterpret_cast<const XT*>(stash + (v - sl.v0)));
    } else {
      in.load(xv + v * kVec);
    }
    grad_vector(w, in, sp.head + v * kVec, k, wg, c, inv_c);
  }
  if (sl.tail)
    for (long long i = sp.tail_start + tid; i < V; i += bs) {
      const float xin[1] = {load_one(w.x + i)};
      float g[1];
      grad_values(g, xin, i, w.y, k, wg, c, inv_c);
      store_one(w.dx + i, g[0]);
    }
}

// Per-row scalars from the row's combined Stat (every thread computes the same values); `writer`
// stores the row's loss, z-loss and argmax.
template <bool kWeight>
__device__ __forceinline__ Coef finish_row(const LigerdCeFwdParams& p, long long r, const Stat& row, float zy,
                                           long long y, bool valid, bool writer) {
  const long long V = p.cols;
  const float* __restrict__ w = p.weight;
  const float log_d = __log2f(row.s) * kLn2;  // s >= 1 unless every logit is -inf or NaN
  const float lse = row.m + log_d;
  const float ls = p.label_smoothing;
  const float eps = ls / static_cast<float>(V);
  const bool mean = p.reduction == LIGERD_CE_REDUCE_MEAN;
  const float inv_n = mean ? 1.f / p.denom[LIGERD_CE_DENOM_COUNT] : 1.f;
  const float inv_w = mean ? 1.f / p.denom[LIGERD_CE_DENOM_WSUM] : 1.f;
  const float wtot = kWeight ? p.denom[LIGERD_CE_DENOM_WTOTAL] : static_cast<float>(V);
  const float wy = kWeight ? (valid ? __ldg(w + y) : __int_as_float(0x7fc00000)) : 1.f;
  float loss = wy * (lse - zy);
  if (ls > 0.f) loss = loss * (1.f - ls) + eps * (wtot * lse - row.sz);
  float zl = p.lse_square_scale * lse * lse * inv_n;
  loss = loss * inv_w;
  Coef k;
  k.A = ((1.f - ls) * wy + eps * wtot) * inv_w + 2.f * p.lse_square_scale * lse * inv_n;
  k.B = -eps * inv_w;
  k.C = -(1.f - ls) * wy * inv_w;
  k.mb = row.m * kLog2e;
  k.inv_d = 1.f / row.s;
  float f = p.row_scale != nullptr ? p.row_scale[r] : 1.f;
  if (p.token_scaling) {
    const float py = ex2(fmaf(zy, kLog2e, -k.mb)) * k.inv_d;
    loss *= py;
    zl *= py;
    f *= py;
  }
  k.A *= f;
  k.B *= f;
  k.C *= f;
  if (!valid) k.A = __int_as_float(0x7fc00000);  // out-of-range target: the whole row NaN
  if (writer) {
    p.loss[r] = loss + zl;
    if (p.z_loss != nullptr) p.z_loss[r] = zl;
    if (p.pred != nullptr) p.pred[r] = row.idx == kNoIndex ? 0 : row.idx;
  }
  return k;
}

// ---- Thread-block clusters (sm_90+), in PTX: NVRTC compiles these sources with no include
// path, so cooperative_groups::this_cluster() is not available; these are the instructions its
// block_rank / num_blocks / sync / map_shared_rank compile to. Below sm_90 the module still has
// to compile (one source for every arch): there they trap, and the planner never launches
// ce_fwd_cluster on such a GPU.
#if __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_blocks() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_id() {
  unsigned r;
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_count() {
  unsigned r;
  asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(r));
  return r;
}
// Every thread of every CTA of the cluster arrives (release) and waits (acquire): shared-memory
// writes before it are visible to every CTA of the cluster after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive;\n\tbarrier.cluster.wait;" ::: "memory");
}
// The generic address of `p`'s twin in the shared memory of CTA `rank` of this cluster.
template <class T>
__device__ __forceinline__ const T* peer_shared(const T* p, unsigned rank) {
  unsigned long long out;
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(out) : "l"(reinterpret_cast<unsigned long long>(p)), "r"(rank));
  return reinterpret_cast<const T*>(out);
}
#else
__device__ __forceinline__ unsigned cluster_rank() { __trap(); return 0; }
__device__ __forceinline__ unsigned cluster_blocks() { __trap(); return 1; }
__device__ __forceinline__ unsigned cluster_id() { __trap(); return 0; }
__device__ __forceinline__ unsigned cluster_count() { __trap(); return 1; }
__device__ __forceinline__ void cluster_sync() { __trap(); }
template <class T>
__device__ __forceinline__ const T* peer_shared(const T* p, unsigned) { __trap(); return p; }
#endif

__device__ __forceinline__ unsigned dynamic_smem_bytes() {
  unsigned r;
  asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
  return r;
}

// The largest cluster the kernel is written for: the portable cluster size (every sm_90+ GPU
// can schedule 8 CTAs per cluster; more needs the non-portable opt-in).
constexpr unsigned kMaxCluster = 8;

// ce_fwd_cluster's slice of a row's stash, one XVec per 16 bytes (dynamic shared memory; the
// launch sizes it, see cross_entropy.cc).
extern __shared__ __align__(16) unsigned char ce_stash[];

// Per-row scratch of fwd_rows, at namespace scope so that the 8 instantiations of a kernel share
// one copy (function-scope statics would each get their own: 8x the shared memory).
__shared__ Stat red[32];               // block_combine: one Stat per warp
__shared__ Stat part[2];               // ce_fwd_cluster: this CTA's Stat, double-buffered
__shared__ Stat gathered[kMaxCluster]; // ce_fwd_cluster: every CTA's Stat, in rank order
__shared__ float zy_sh;                // z of the target column

// CTA `rank`'s slice of a row split over `csize` CTAs; traps if it exceeds the `cap` vectors of
// shared memory the launch gave it (a planning bug).
__device__ __forceinline__ Slice cluster_slice(const Row& rw, unsigned rank, unsigned csize, long long cap) {
  const long long per = (rw.sp.nvec + csize - 1) / csize;
  Slice sl{0, rw.sp.nvec, true, true};
  sl.v0 = rank * per < rw.sp.nvec ? rank * per : rw.sp.nvec;
  sl.v1 = sl.v0 + per < rw.sp.nvec ? sl.v0 + per : rw.sp.nvec;
  sl.head = rank == 0;
  sl.tail = rank == csize - 1;
  if (per > cap) __trap();
  return sl;
}

// One row per block (kCluster false: ce_fwd) or per thread-block cluster (kCluster true:
// ce_fwd_cluster), rows strided by the number of blocks / clusters (a persistent grid).
//
// ce_fwd_cluster: CTA `rank` of a cluster of C owns vectors [rank * S, (rank + 1) * S) of the
// row's aligned middle (S = ceil(nvec / C)), rank 0 the head, rank C - 1 the tail. Pass 1 copies
// its vectors into shared memory; the CTAs then exchange their block-combined Stats through
// distributed shared memory and every CTA combines them in rank order 0..C-1 (deterministic, the
// same bits on every CTA), and pass 2 reads the vectors back from shared memory: each logit
// crosses HBM once each way.
// Hazards, all covered by the one cluster barrier per non-ignored row:
//  - part[]: exchange n writes part[n & 1]; a peer reads it after barrier n. It is written again
//    at exchange n + 2, after barrier n + 1, which that peer only reaches after its read.
//    (Ignored rows make no exchange, identically in every CTA of the cluster: same target.)
//  - gathered[], red[], zy_sh: read before the next barrier, rewritten only after it.
//  - x[y] (in place): every CTA reads z_y itself in pass 1; pass-2 writes start after the barrier.
//  - exit: a CTA's shared memory must outlive its peers' reads: one last barrier.
template <bool kArgmax, bool kSmooth, bool kWeight, bool kCluster>
__device__ void fwd_rows(const LigerdCeFwdParams& p) {
  const long long V = p.cols;
  const float c = p.softcap;
  const float inv_c = kSoftcap ? 1.f / p.softcap : 0.f;
  const float* __restrict__ w = p.weight;
  const float* wg = kWeight ? w : nullptr;
  const int tid = threadIdx.x;
  const unsigned rank = kCluster ? cluster_rank() : 0u;
  const unsigned csize = kCluster ? cluster_blocks() : 1u;
  XVec* stash = kCluster ? reinterpret_cast<XVec*>(ce_stash) : nullptr;
  const long long stash_vectors = kCluster ? dynamic_smem_bytes() / sizeof(XVec) : 0;
  if (kCluster && csize > kMaxCluster) __trap();
  unsigned phase = 0;
  // (gridDim.x is re-read from its special register rather than held in registers.)
  for (long long r = kCluster ? cluster_id() : blockIdx.x; r < p.rows; r += kCluster ? cluster_count() : gridDim.x) {
    const Row rw = row_at(p, r);
    const Slice sl = kCluster ? cluster_slice(rw, rank, csize, stash_vectors) : Slice{0, rw.sp.nvec, true, true};
    const bool writer = tid == 0 && rank == 0;
    // Ignored rows copy nothing into the stash, so no copy is ever in flight here or at exit.
    if (rw.y == p.ignore_index) {
      if (rw.dx != nullptr) zero_slice(rw, V, sl);
      if (writer) {
        p.loss[r] = 0.f;
        if (p.z_loss != nullptr) p.z_loss[r] = 0.f;
        if (p.pred != nullptr) p.pred[r] = -1;
      }
      continue;
    }
    const bool valid = rw.y >= 0 && rw.y < V;
    // z_y before pass 2 can overwrite x[y] (in place); never read out of range.
    if (tid == 0) zy_sh = valid ? softcapped(load_one(rw.x + rw.y), c, inv_c) : __int_as_float(0x7fc00000);

    Stat st{kLowest, 0.f, 0.f, kNoIndex};
    if constexpr (kCluster) {
      // (The slots being refilled were last read by this same thread's pass 2 of its previous row.)
      issue_slice(rw, sl, stash);
      pass1_stashed<kArgmax, kSmooth, kWeight>(st, rw, V, sl, stash, w, c, inv_c);
    } else {
      pass1<kArgmax, kSmooth, kWeight>(st, rw, V, sl, w, c, inv_c);
    }
    Stat row = block_combine(st, red);  // (its __syncthreads also publishes zy_sh)
    const float zy = zy_sh;
    if constexpr (kCluster) {
      if (tid == 0) part[phase & 1] = row;
      cluster_sync();
      if (tid < static_cast<int>(csize)) gathered[tid] = *peer_shared(&part[phase & 1], static_cast<unsigned>(tid));
      __syncthreads();
      row = gathered[0];
      for (unsigned i = 1; i < csize; ++i) row = combine(row, gathered[i]);
      ++phase;
    }
    const Coef k = finish_row<kWeight>(p, r, row, zy, rw.y, valid, writer);
    if (rw.dx != nullptr) pass2<kCluster>(rw, V, sl, stash, k, wg, c, inv_c);
    // ce_fwd: the next row reuses red[] and zy_sh; wait until everyone has read them (the
    // cluster kernel's barrier above already orders that).
    if constexpr (!kCluster) __syncthreads();
  }
  if constexpr (kCluster) cluster_sync();
}

// Pass-1 features are template flags so the common case carries no argmax or smoothing work.
#if !defined(LIGERD_CE_FEATURES) || (LIGERD_CE_FEATURES != 0 && LIGERD_CE_FEATURES != 1)
#error "LIGERD_CE_FEATURES must be 0 or 1 (cross_entropy.cc's MakeVariant defines it)"
#endif
template <bool kCluster>
__device__ __forceinline__ void fwd_dispatch(const LigerdCeFwdParams& p) {
#if LIGERD_CE_FEATURES == 0
  fwd_rows<false, false, false, kCluster>(p);  // no pred, no smoothing, no weight (the planner's choice)
#else
  const bool am = p.pred != nullptr;
  const bool sm = p.label_smoothing > 0.f;
  const bool wt = p.weight != nullptr;
  if (am) {
    if (sm) {
      if (wt) fwd_rows<true, true, true, kCluster>(p); else fwd_rows<true, true, false, kCluster>(p);
    } else {
      if (wt) fwd_rows<true, false, true, kCluster>(p); else fwd_rows<true, false, false, kCluster>(p);
    }
  } else {
    if (sm) {
      if (wt) fwd_rows<false, true, true, kCluster>(p); else fwd_rows<false, true, false, kCluster>(p);
    } else {
      if (wt) fwd_rows<false, false, true, kCluster>(p); else fwd_rows<false, false, false, kCluster>(p);
    }
  }
#endif
}

}  // namespace ce
}  // namespace ligerd

// One block per row at a time (persistent grid, rows strided by gridDim.x); 1-D blocks of a
// multiple of 32 threads <= 1024. Reads a row twice (see the header comment).
// Launch bounds LIGERD_LB_<KERNEL> from the entries (cross_entropy.toml; cross_entropy.cc plans with them).
extern "C" __global__ void LIGERD_LB_FWD ce_fwd(const LigerdCeFwdParams p) {
  ligerd::ce::fwd_dispatch<false>(p);
}

// One thread-block cluster per row at a time (1-D clusters of <= 8 CTAs along x, gridDim.x a
// multiple of the cluster size, clusters strided over the rows), each CTA's slice of the row in
// its dynamic shared memory (>= ceil(nvec / cluster) * 16 bytes); sm_90+. Reads a row once.
extern "C" __global__ void LIGERD_LB_FWD_CLUSTER ce_fwd_cluster(const LigerdCeFwdParams p) {
  ligerd::ce::fwd_dispatch<true>(p);
}

#elif LIGERD_CE_PART == 1
// Denominators for "mean" (torch: count and sum of w[target] over non-ignored rows), the sum of
// the class weights (label smoothing), and the number of out-of-range targets, on the device so
// that no host sync is needed. One block; fixed-order double-precision sums (deterministic).
// Reads M targets + V weights: microseconds.
extern "C" __global__ void LIGERD_LB_COUNT ce_count(const LigerdCeCountParams p) {
  __shared__ double red[3][32];
  double n = 0.0, sw = 0.0, bad = 0.0, wt = 0.0;
  for (long long r = threadIdx.x; r < p.rows; r += blockDim.x) {
    const long long y = p.target[r * p.target_stride];
    if (y == p.ignore_index) continue;
    if (y < 0 || y >= p.cols) {
      bad += 1.0;
      continue;
    }
    n += 1.0;
    sw += p.weight != nullptr ? static_cast<double>(p.weight[y]) : 1.0;
  }
  if (p.weight != nullptr)
    for (long long j = threadIdx.x; j < p.cols; j += blockDim.x) wt += p.weight[j];
  double v[4] = {n, sw, wt, bad};
  __shared__ double out[4];
  for (int q = 0; q < 4; ++q) {
    double s = v[q];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if ((threadIdx.x & 31) == 0) red[0][threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      double t = 0.0;
      for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) t += red[0][i];
      out[q] = t;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    p.denom[LIGERD_CE_DENOM_COUNT] = static_cast<float>(out[0]);
    p.denom[LIGERD_CE_DENOM_WSUM] = static_cast<float>(out[1]);
    p.denom[LIGERD_CE_DENOM_WTOTAL] = static_cast<float>(out[2]);
    p.denom[LIGERD_CE_DENOM_INVALID] = static_cast<float>(out[3]);
  }
}

#elif LIGERD_CE_PART == 2
// Backward: g[r, :] *= s (one factor, or one per row), in place. A factor of exactly 1.0 skips
// the row, so the usual backward of a final loss (grad_output == 1) moves no bytes at all;
// otherwise 2*M*V*b (read + write), HBM-bound.
extern "C" __global__ void LIGERD_LB_SCALE ce_scale(const LigerdCeScaleParams p) {
  using namespace ligerd;
  using namespace ligerd::ce;
  const int tid = threadIdx.x, bs = blockDim.x;
  if (!p.per_row && p.s[0] == 1.f) return;
  for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const float f = p.s[p.per_row ? r : 0];
    if (f == 1.f) continue;
    XT* g = static_cast<XT*>(p.g) + r * p.g_stride;
    const RowSplit sp = split_row(g, p.cols);
    for (long long i = tid; i < sp.head; i += bs)
      store_one(g + i, load_one(g + i) * f);
    for (long long v = tid; v < sp.nvec; v += bs) {
      Vec<XT, kVec> a;
      a.load(g + sp.head + v * kVec);
      float o[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) o[k] = a.get(k) * f;
      a.set_all(o);
      a.store(g + sp.head + v * kVec);
    }
    for (long long i = sp.tail_start + tid; i < p.cols; i += bs)
      store_one(g + i, load_one(g + i) * f);
  }
}
#endif  // LIGERD_CE_PART
