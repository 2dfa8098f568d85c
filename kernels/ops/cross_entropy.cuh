// Cross-entropy (Liger's liger_cross_entropy_kernel semantics, torch's label smoothing), with the
// gradient computed in the forward pass and written over the logits. Compiled by NVRTC (see
// cross_entropy.cc).
//
// Specialisation (-D defines, one module per combination):
//   LIGERD_CE_PART    0: cross_entropy_fwd (ce_fwd), 1: cross_entropy_count (ce_count),
//                     2: cross_entropy_scale (ce_scale)
//   LIGERD_XT         logits / gradient element type: float | ligerd::bf16 | ligerd::f16
//   LIGERD_CE_SOFTCAP 0/1 (forward only): logits pass through z = c * tanh(x / c) first
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
// Traffic (ce_fwd with a gradient): pass 1 reads the row (online softmax: max, sum of exp, sum of
// z for label smoothing, argmax, all in one read), pass 2 reads it again and writes dx:
// 3*M*V*b bytes when the second read misses L2, 2*M*V*b when it hits. A row does not fit on one
// SM: 128256 bf16 logits are 251 KiB, beyond the 228 KiB of shared memory (and 256 KiB of
// registers) an H100 SM has, and fp32 rows are twice that; a row split across a thread-block
// cluster's distributed shared memory would (QuACK's design) but is not done here. Instead the
// grid is persistent and sized so that the rows in flight (SMs x blocks per SM x row bytes) fit
// in about half of L2, so the second read mostly hits L2: the HBM floor is 2*M*V*b, the worst
// case 3*M*V*b. Without a gradient (loss only) it is one read, M*V*b.
// ce_scale (backward): read and write the stored gradient once, 2*M*V*b, skipped entirely when
// the upstream gradient is exactly 1.0 (Liger skips it too; we decide on the device, no sync).
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
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Running maximum starts finite so that 2^(z - m) of a -inf logit is 0, never NaN.
constexpr float kLowest = -3.402823466e+38f;
constexpr long long kNoIndex = 0x7fffffffffffffffLL;

// 2^x in one MUFU instruction (relative error < 2^-22; ex2(-inf) = 0). Liger uses the same.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Where a row's 16-byte-aligned middle starts: `head` leading elements are handled one by one,
// then `nvec` vectors, then the tail. Rows of an odd vocabulary (50257) start at any alignment.
struct RowSplit {
  long long head, nvec, tail_start;
};
__device__ __forceinline__ RowSplit split_row(const void* row, long long cols) {
  const unsigned mis = static_cast<unsigned>(reinterpret_cast<unsigned long long>(row) & 15u) /
                       static_cast<unsigned>(sizeof(XT));
  long long head = mis ? kVec - mis : 0;
  if (head > cols) head = cols;
  const long long nvec = (cols - head) / kVec;
  return {head, nvec, head + nvec * kVec};
}

}  // namespace ce
}  // namespace ligerd

#if LIGERD_CE_PART == 0
namespace ligerd {
namespace ce {
constexpr bool kSoftcap = LIGERD_CE_SOFTCAP != 0;

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

// Block-wide combination in a fixed order (deterministic), returned to every thread.
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

template <bool kArgmax, bool kSmooth, bool kWeight>
__device__ void fwd_rows(const LigerdCeFwdParams& p) {
  __shared__ Stat red[32];
  __shared__ float zy_sh;
  const long long V = p.cols;
  const float c = p.softcap;
  const float inv_c = kSoftcap ? 1.f / p.softcap : 0.f;
  const float* __restrict__ w = p.weight;
  const int tid = threadIdx.x, bs = blockDim.x;
  for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const long long y = p.target[r * p.target_stride];
    const XT* x = static_cast<const XT*>(p.x) + r * p.x_stride;
    XT* dx = p.dx == nullptr ? nullptr : static_cast<XT*>(p.dx) + r * p.dx_stride;
    const RowSplit sp = split_row(x, V);
    const bool dx_vec = dx != nullptr && split_row(dx, V).head == sp.head;

    if (y == p.ignore_index) {
      if (dx != nullptr) {
        Vec<XT, kVec> zv;
        zv.zero();
        for (long long i = tid; i < sp.head; i += bs) store_one(dx + i, 0.f);
        for (long long v = tid; v < sp.nvec; v += bs) {
          if (dx_vec) {
            zv.store(dx + sp.head + v * kVec);
          } else {
#pragma unroll
            for (int k = 0; k < kVec; ++k) store_one(dx + sp.head + v * kVec + k, 0.f);
          }
        }
        for (long long i = sp.tail_start + tid; i < V; i += bs) store_one(dx + i, 0.f);
      }
      if (tid == 0) {
        p.loss[r] = 0.f;
        if (p.z_loss != nullptr) p.z_loss[r] = 0.f;
        if (p.pred != nullptr) p.pred[r] = -1;
      }
      continue;
    }
    const bool valid = y >= 0 && y < V;
    // z_y before pass 2 can overwrite x[y] (in place); never read out of range.
    if (tid == 0) zy_sh = valid ? softcapped(load_one(x + y), c, inv_c) : __int_as_float(0x7fc00000);

    // ---- pass 1: max, sum of exp, (weighted) sum of z, argmax, in one read of the row.
    Stat st{kLowest, 0.f, 0.f, kNoIndex};
    for (long long i = tid; i < sp.head; i += bs) {
      const float z[1] = {softcapped(load_one(x + i), c, inv_c)};
      const long long col0[1] = {i};
      accumulate<kArgmax, kSmooth, kWeight, 1, 1>(st, z, col0, w);
    }
    const XT* xv = x + sp.head;
    long long v = tid;
    for (; v + (kUnroll - 1) * bs < sp.nvec; v += kUnroll * bs) {
      Vec<XT, kVec> in[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) in[u].load(xv + (v + u * bs) * kVec);
      float z[kUnroll * kVec];
      long long col0[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        col0[u] = sp.head + (v + u * bs) * kVec;
#pragma unroll
        for (int k = 0; k < kVec; ++k) z[u * kVec + k] = softcapped(in[u].get(k), c, inv_c);
      }
      accumulate<kArgmax, kSmooth, kWeight, kUnroll, kVec>(st, z, col0, w);
    }
    for (; v < sp.nvec; v += bs) {
      Vec<XT, kVec> in;
      in.load(xv + v * kVec);
      float z[kVec];
      const long long col0[1] = {sp.head + v * kVec};
#pragma unroll
      for (int k = 0; k < kVec; ++k) z[k] = softcapped(in.get(k), c, inv_c);
      accumulate<kArgmax, kSmooth, kWeight, 1, kVec>(st, z, col0, w);
    }
    for (long long i = sp.tail_start + tid; i < V; i += bs) {
      const float z[1] = {softcapped(load_one(x + i), c, inv_c)};
      const long long col0[1] = {i};
      accumulate<kArgmax, kSmooth, kWeight, 1, 1>(st, z, col0, w);
    }
    const Stat row = block_combine(st, red);  // (its __syncthreads also publishes zy_sh)
    const float zy = zy_sh;

    // ---- per-row scalars (every thread computes the same values).
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
    if (tid == 0) {
      p.loss[r] = loss + zl;
      if (p.z_loss != nullptr) p.z_loss[r] = zl;
      if (p.pred != nullptr) p.pred[r] = row.idx == kNoIndex ? 0 : row.idx;
    }

    // ---- pass 2: dx = A p + B w + C [j == y] (times the softcap chain rule), in place.
    if (dx != nullptr) {
      const float* wg = kWeight ? w : nullptr;
      for (long long i = tid; i < sp.head; i += bs) {
        const float xin[1] = {load_one(x + i)};
        float g[1];
        grad_values(g, xin, i, y, k, wg, c, inv_c);
        store_one(dx + i, g[0]);
      }
      long long v2 = tid;
      for (; v2 + (kUnroll - 1) * bs < sp.nvec; v2 += kUnroll * bs) {
        Vec<XT, kVec> in[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) in[u].load(xv + (v2 + u * bs) * kVec);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          float xin[kVec], g[kVec];
#pragma unroll
          for (int e = 0; e < kVec; ++e) xin[e] = in[u].get(e);
          const long long col0 = sp.head + (v2 + u * bs) * kVec;
          grad_values(g, xin, col0, y, k, wg, c, inv_c);
          if (dx_vec) {
            Vec<XT, kVec> o;
            o.set_all(g);
            o.store(dx + col0);
          } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) store_one(dx + col0 + e, g[e]);
          }
        }
      }
      for (; v2 < sp.nvec; v2 += bs) {
        Vec<XT, kVec> in;
        in.load(xv + v2 * kVec);
        float xin[kVec], g[kVec];
#pragma unroll
        for (int e = 0; e < kVec; ++e) xin[e] = in.get(e);
        const long long col0 = sp.head + v2 * kVec;
        grad_values(g, xin, col0, y, k, wg, c, inv_c);
        if (dx_vec) {
          Vec<XT, kVec> o;
          o.set_all(g);
          o.store(dx + col0);
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e) store_one(dx + col0 + e, g[e]);
        }
      }
      for (long long i = sp.tail_start + tid; i < V; i += bs) {
        const float xin[1] = {load_one(x + i)};
        float g[1];
        grad_values(g, xin, i, y, k, wg, c, inv_c);
        store_one(dx + i, g[0]);
      }
    }
    // The next row reuses red[] and zy_sh: wait until everyone has read them.
    __syncthreads();
  }
}

}  // namespace ce
}  // namespace ligerd

// One block per row at a time (persistent grid, rows strided by gridDim.x); 1-D blocks of a
// multiple of 32 threads <= 1024. Pass-1 features are template flags so the common case carries
// no argmax or smoothing work.
extern "C" __global__ void __launch_bounds__(1024) ce_fwd(const LigerdCeFwdParams p) {
  using namespace ligerd::ce;
  const bool am = p.pred != nullptr;
  const bool sm = p.label_smoothing > 0.f;
  const bool wt = p.weight != nullptr;
  if (am) {
    if (sm) {
      if (wt) fwd_rows<true, true, true>(p); else fwd_rows<true, true, false>(p);
    } else {
      if (wt) fwd_rows<true, false, true>(p); else fwd_rows<true, false, false>(p);
    }
  } else {
    if (sm) {
      if (wt) fwd_rows<false, true, true>(p); else fwd_rows<false, true, false>(p);
    } else {
      if (wt) fwd_rows<false, false, true>(p); else fwd_rows<false, false, false>(p);
    }
  }
}

#elif LIGERD_CE_PART == 1
// Denominators for "mean" (torch: count and sum of w[target] over non-ignored rows), the sum of
// the class weights (label smoothing), and the number of out-of-range targets, on the device so
// that no host sync is needed. One block; fixed-order double-precision sums (deterministic).
// Reads M targets + V weights: microseconds.
extern "C" __global__ void __launch_bounds__(1024) ce_count(const LigerdCeCountParams p) {
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
extern "C" __global__ void __launch_bounds__(1024) ce_scale(const LigerdCeScaleParams p) {
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
