// jsd_logits_fwd: the chunked JSD distillation loss's per-row math in one kernel, from the raw
// logits the LM-head GEMMs wrote (python_client/ligerd/chunked_loss/_distill_math.py's fused
// path). Included by distill.cuh for LIGERD_DISTILL_OP == LIGERD_DISTILL_JSD_LOGITS only (it uses
// that file's helpers and its jsd_elem); not a module of its own.
//
// Per row (student s, ns columns, padded with zero logits to the teacher's nt; teacher t):
//   X = s * s_scale - lse(s * s_scale),  Y = t * t_scale - lse(t * t_scale)     (log-softmaxes)
//   loss = sum_j jsd(X_j, Y_j)                        (jsd_elem: Liger's generalised JSD, beta)
//   g_j = d jsd / d X_j,  G = sum_j g_j,  q_j = exp(X_j)
//   ds_j = scale * (soft_coef * (g_j - q_j G) + hard_coef * (q_j - [j == label])),  j < ns
//   hard_loss = lse(s) - s[label]   (with hard_loss: s_scale == 1 and ns == nt, so q is the
//   untempered softmax that the cross-entropy gradient needs too)
// soft_coef carries the chain rule's s_scale (the caller passes w_soft / T): ds is the gradient
// w.r.t. the raw logits. A row whose label is ignore_index gets loss 0, hard_loss 0, ds 0, and
// its inputs are not read.
//
// Three passes over the row (it does not fit on chip: 128256 bf16 columns of two tensors are
// 513 KB, an SM has 228 KB of shared memory):
//   1. read s and t: each thread's online (max, sum exp) of both, merged over the row -> lse_s, lse_t
//   2. read s and t again: the row's loss and G (one two-value reduction)
//   3. read s and t[:ns] a third time, recompute g_j and q_j, write ds over s (in place is safe:
//      a column is read and written by the same thread in every pass; the one cross-thread read,
//      s[label] for the hard loss, happens before the reduction that ends pass 2)
// Bytes moved per row (b = sizeof(XT)): 2 (ns + nt) b (passes 1, 2) + 2 ns b (pass 3's reads) +
// ns b (ds) = 7 ns b for ns == nt (without ds: 4 ns b). At 8192 rows x 128256 bf16 that is
// 14.7 GB: 4.4 ms at the H100's 3.35 TB/s if every pass came from HBM. The re-reads partly hit L2
// (a row of both tensors is 0.5 MB; the rows resident at once, one or two a block, a few per SM,
// are tens of MB against the 50 MB L2), so the HBM floor is nearer 2 (ns + nt) b + ns b (2.6 ms).
// Arithmetic: pass 1 one expf per element of each tensor, pass 2 jsd_elem (two expf and a logf
// for 0 < beta < 1), pass 3 that plus the expf of q: ~9 MUFU results an element, 3.7e12 a second
// on an H100 (132 SMs x 16 a clock) -> ~2.4 ms for 1e9 elements: near the memory limit, so beta
// strictly between 0 and 1 in bf16 may be MUFU-bound rather than memory-bound.
//
// Layout as the family's (distill.cuh): blockDim.x threads a row, blockDim.y rows a block.
// Numerics: fp32 throughout, ds rounded once to XT; the online (max, sum) merge rescales with
// expf (softmax.cuh's scheme).

namespace ligerd {
namespace distill {

// -inf (NVRTC compiles without headers, so no INFINITY macro).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }
// NaN, for a hard-loss label outside [0, ns) (the caller's checks raise for those).
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fffffff); }

// exp(m - mm) for a partial maximum m <= mm: exactly 1 when they are equal (also -inf == -inf).
__device__ __forceinline__ float rescale(float m, float mm) { return m == mm ? 1.f : expf(m - mm); }

// (m, s) <- the merge of two (max, sum of exp(x - max)) pairs; symmetric bit for bit (products
// kept out of FMA contraction), so both lanes of a shuffle pair agree.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = __fadd_rn(__fmul_rn(s, rescale(m, mm)), __fmul_rn(s2, rescale(m2, mm)));
  m = mm;
}

// Merges two (max, sum) pairs per thread over the blockDim.x threads of a row and returns the
// row's pairs to all of them. Every thread of the block calls it; `red` >= 4 * 32 floats.
__device__ __forceinline__ void row_max_sum2(float (&m)[2], float (&s)[2], float* red) {
  const int tpr = blockDim.x;
  const int width = tpr < 32 ? tpr : 32;
  for (int off = width >> 1; off > 0; off >>= 1)
#pragma unroll
    for (int k = 0; k < 2; ++k)
      merge(m[k], s[k], __shfl_xor_sync(0xffffffffu, m[k], off), __shfl_xor_sync(0xffffffffu, s[k], off));
  if (tpr <= 32) return;
  const int warps = tpr >> 5, lane = threadIdx.x & 31;
  float* row_red = red + 4 * threadIdx.y * warps;
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      row_red[4 * (threadIdx.x >> 5) + 2 * k] = m[k];
      row_red[4 * (threadIdx.x >> 5) + 2 * k + 1] = s[k];
    }
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    m[k] = lane < warps ? row_red[4 * lane + 2 * k] : neg_inf();
    s[k] = lane < warps ? row_red[4 * lane + 2 * k + 1] : 0.f;
  }
  for (int off = 16; off > 0; off >>= 1)
#pragma unroll
    for (int k = 0; k < 2; ++k)
      merge(m[k], s[k], __shfl_xor_sync(0xffffffffu, m[k], off), __shfl_xor_sync(0xffffffffu, s[k], off));
}

// Folds VEC values a (times f) into the online pair (m, s): the chunk's max first, one rescale.
template <int VEC>
__device__ __forceinline__ void online(float& m, float& s, const float (&a)[VEC]) {
  float cm = m;
#pragma unroll
  for (int i = 0; i < VEC; ++i) cm = fmaxf(cm, a[i]);
  if (cm == neg_inf()) return;  // nothing but -inf so far
  s *= rescale(m, cm);
#pragma unroll
  for (int i = 0; i < VEC; ++i) s += expf(a[i] - cm);
  m = cm;
}

// Vectors of each tensor a thread keeps in flight per step: passes 1 and 2 (two inputs x 4 x 16
// bytes outstanding), pass 3 (fewer: its per-element math holds more registers).
constexpr int kLogitsUnroll = 4;
constexpr int kGradUnroll = 2;

template <int MODE, int VEC>
__device__ __forceinline__ void jsd_logits(const LigerdJsdLogitsParams& p) {
  __shared__ float red_pairs[4 * 32];
  __shared__ float red_sums[2 * 32];
  const long long row = row_index();
  const bool in_range = row < p.rows;
  const long long r0 = in_range ? row : 0;
  const long long label = p.labels != nullptr && in_range ? p.labels[r0 * p.labels_stride] : 0;
  const bool skip = p.labels != nullptr && label == p.ignore_index;
  const bool live = in_range && !skip;  // rows whose inputs are read
  const int nvs = p.ns / VEC, nvt = p.nt / VEC;
  const XT* s = static_cast<const XT*>(p.s) + r0 * p.s_stride;
  const XT* t = static_cast<const XT*>(p.t) + r0 * p.t_stride;
  const float ss = p.s_scale, ts = p.t_scale;

  // Pass 1: online (max, sum exp) of s * ss (zeros past ns) and t * ts.
  float m[2] = {neg_inf(), neg_inf()}, z[2] = {0.f, 0.f};
  for (int j0 = threadIdx.x; live && j0 < nvt; j0 += kLogitsUnroll * blockDim.x) {
    Vec<XT, VEC> sv[kLogitsUnroll], tv[kLogitsUnroll];
    load_chunk(sv, s, j0, nvs);  // vectors past ns load as zeros: the student's padding
    load_chunk(tv, t, j0, nvt);
#pragma unroll
    for (int u = 0; u < kLogitsUnroll; ++u) {
      if (j0 + u * static_cast<int>(blockDim.x) >= nvt) continue;
      float a[VEC], b[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        a[i] = sv[u].get(i) * ss;
        b[i] = tv[u].get(i) * ts;
      }
      online<VEC>(m[0], z[0], a);
      online<VEC>(m[1], z[1], b);
    }
  }
  row_max_sum2(m, z, red_pairs);
  const float lse_s = m[0] + logf(z[0]), lse_t = m[1] + logf(z[1]);

  // Pass 2: the row's loss and G = sum of d loss / d X.
  float acc[2] = {0.f, 0.f};
  for (int j0 = threadIdx.x; live && j0 < nvt; j0 += kLogitsUnroll * blockDim.x) {
    Vec<XT, VEC> sv[kLogitsUnroll], tv[kLogitsUnroll];
    load_chunk(sv, s, j0, nvs);
    load_chunk(tv, t, j0, nvt);
#pragma unroll
    for (int u = 0; u < kLogitsUnroll; ++u) {
      if (j0 + u * static_cast<int>(blockDim.x) >= nvt) continue;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        float l, d;
        jsd_elem<MODE>(fmaf(sv[u].get(i), ss, -lse_s), fmaf(tv[u].get(i), ts, -lse_t), p.beta, l, d);
        acc[0] += l;
        acc[1] += d;
      }
    }
  }
  // s[label] is read before the reduction's barrier: pass 3 of the thread owning that column may
  // overwrite it (d_student in place) as soon as the reduction returns.
  const bool hard = p.hard_loss != nullptr;
  const bool label_ok = label >= 0 && label < p.ns;
  const float s_label = hard && live && label_ok && threadIdx.x == 0 ? load_one(s + label) : 0.f;
  __syncwarp();  // orders that read before the stores of the row's other lanes (rows of <= 32 threads)
  row_sums<2>(acc, red_sums);
  if (in_range && threadIdx.x == 0) {
    p.loss[row] = live ? acc[0] : 0.f;
    if (hard) p.hard_loss[row] = !live ? 0.f : (label_ok ? lse_s - s_label : quiet_nan());
  }
  if (p.ds == nullptr || !in_range) return;  // no barriers below
  XT* ds = static_cast<XT*>(p.ds) + r0 * p.ds_stride;
  if (skip) {
    zero_row<XT, VEC>(ds, nvs);
    return;
  }

  // Pass 3: ds over the student's ns columns.
  const float G = acc[1];
  const float gs = p.soft_coef * p.scale[0];
  const float hs = hard ? p.hard_coef * p.scale[0] : 0.f;
  const long long onehot = hard && label_ok ? label : -1;
  for (int j0 = threadIdx.x; j0 < nvs; j0 += kGradUnroll * blockDim.x) {
    Vec<XT, VEC> sv[kGradUnroll], tv[kGradUnroll];
    load_chunk(sv, s, j0, nvs);
    load_chunk(tv, t, j0, nvs);
#pragma unroll
    for (int u = 0; u < kGradUnroll; ++u) {
      const int j = j0 + u * blockDim.x;
      if (j >= nvs) continue;
      float o[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float x = fmaf(sv[u].get(i), ss, -lse_s);
        float l, d;
        jsd_elem<MODE>(x, fmaf(tv[u].get(i), ts, -lse_t), p.beta, l, d);
        const float q = expf(x);
        const float one = static_cast<long long>(j) * VEC + i == onehot ? 1.f : 0.f;
        o[i] = fmaf(gs, fmaf(-q, G, d), hs * (q - one));
      }
      store_vec<XT, VEC>(ds, j, o);
    }
  }
}

template <int VEC>
__device__ __forceinline__ void jsd_logits_any(const LigerdJsdLogitsParams& p) {
  if (p.beta == 0.f) jsd_logits<kForwardKl, VEC>(p);
  else if (p.beta == 1.f) jsd_logits<kReverseKl, VEC>(p);
  else jsd_logits<kGeneral, VEC>(p);
}

}  // namespace distill
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_JSD_LOGITS_FWD jsd_logits_fwd_v(const LigerdJsdLogitsParams p) {
  ligerd::distill::jsd_logits_any<ligerd::distill::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_JSD_LOGITS_FWD jsd_logits_fwd_s(const LigerdJsdLogitsParams p) {
  ligerd::distill::jsd_logits_any<1>(p);
}
