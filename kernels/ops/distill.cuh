// The row-wise distillation losses of Liger-Kernel (0.8.5): KL divergence (LigerKLDIVLoss, forward
// and backward), the generalised Jensen-Shannon divergence (LigerJSD: loss and gradient in one
// forward) and the total variation distance (LigerTVDLoss: loss and gradient in one forward).
// Compiled by NVRTC (see distill.cc). One family, one file: the four kernels share one shape, two
// [rows, n] tensors streamed once, elementwise math in fp32, an optional row sum, and differ only
// in the formula of an element.
//
// Bytes moved and the bandwidth limit (b = sizeof(XT), M rows of n; every element is read and
// written exactly once, so this is also the minimum any implementation moves):
//   kl_div_fwd  read x and t, write the loss:   2*M*n*b + 4*M   (reduction "none": + 4*M*n)
//   kl_div_bwd  read t, write dx:               2*M*n*b         ("none": + 4*M*n reading g)
//   jsd_fwd     read x and y, write dx:         3*M*n*b         (loss only: 2*M*n*b)
//   tvd_fwd     read p and q, write the grad:   3*M*n*b + 4*M   ("none": + 4*M*n for the loss)
// All of it is HBM traffic (nothing is read twice), so the limit is bytes / copy bandwidth. The
// one kernel with real arithmetic is jsd_fwd for 0 < beta < 1: two expf and one logf per element
// (plus ~30 FMA-pipe instructions). On an H100 (132 SMs, 16 MUFU results per clock per SM, 128
// fp32 lanes) that is ~1e12 elements/s from the MUFU and ~0.8e12 from the FMA pipe, against
// 3.35e12 / 6 = 0.56e12 elements/s of bf16 traffic: memory-bound with little margin in bf16,
// comfortably in fp32 (12 bytes an element). Liger's kernel spends four exps and a log.
//
// Specialisation (compile-time -D defines, one module per combination):
//   LIGERD_DISTILL_OP  which op's kernels (distill_params.h: LIGERD_DISTILL_KL_FWD ...)
//   LIGERD_XT          element type of the [rows, n] tensors: float | ligerd::bf16 | ligerd::f16
// Each module holds its op's two kernels, <op>_v (16-byte vectors: needs n % VEC == 0 and every
// [rows, n] tensor's rows 16-byte aligned) and <op>_s (one element per access: any n, any
// alignment), bounded by LIGERD_LB_<OP> from the op's entry (distill.toml).
// Layout (rowwise.cuh's; that header is not included: its kernel-table macros name launch bounds
// these modules do not have): blockDim.x threads a row (a power of two <= 32 or a multiple of 32),
// blockDim.y rows a block, one row group per block; each thread streams vectors lane,
// lane + blockDim.x, ... of its row, kUnroll of each tensor in flight per step.
//
// Numerics: inputs converted to fp32 on load, everything in fp32, each output rounded once. Row
// sums are per-thread sequential then a fixed tree (common.cuh's row_sum): bitwise reproducible
// for a launch config. The formulas are Liger's (the comments of each element function say which);
// expf / logf, not the __ intrinsics (fp32 results are tested to ~1e-6 relative).
#include "kernels/ops/common.cuh"
#include "kernels/ops/distill_params.h"

namespace ligerd {
namespace distill {

using XT = LIGERD_XT;
// Elements per 16-byte access of XT: the widest single load/store an SM issues.
constexpr int kVec = 16 / static_cast<int>(sizeof(XT));
// Vectors of each input a thread keeps in flight per step: two inputs x 4 x 16 bytes = 128 bytes
// per thread outstanding, enough to cover DRAM latency at 512 threads a block.
constexpr int kUnroll = 4;

// U vectors of a row: vectors j0, j0 + blockDim.x, ... (a thread's next U, so U independent
// 16-byte loads are in flight), zero past the row's end.
template <class T, int U, int VEC>
__device__ __forceinline__ void load_chunk(Vec<T, VEC> (&v)[U], const T* row, int j0, int nvec) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int j = j0 + u * blockDim.x;
    if (j < nvec) v[u].load(row + static_cast<long long>(j) * VEC);
    else v[u].zero();
  }
}

// Vector j of a row (VEC elements of T) from fp32 values, rounded once.
template <class T, int VEC>
__device__ __forceinline__ void store_vec(T* row, int j, const float (&v)[VEC]) {
  Vec<T, VEC> out;
  out.set_all(v);
  out.store(row + static_cast<long long>(j) * VEC);
}

__device__ __forceinline__ long long row_index() {
  return static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
}

// Whether `row` is skipped: its label (labels may be null: no row is) equals ignore_index.
__device__ __forceinline__ bool ignored_row(const long long* labels, long long stride, long long row,
                                            long long ignore_index) {
  return labels != nullptr && labels[row * stride] == ignore_index;
}

// The count of non-ignored rows: n_valid[0] with labels, else every row.
__device__ __forceinline__ long long valid_rows(const long long* labels, const long long* n_valid, long long rows) {
  return labels != nullptr ? *n_valid : rows;
}

// Zeros over vectors lane, lane + blockDim.x, ... of a row of VEC-element vectors of T.
template <class T, int VEC>
__device__ __forceinline__ void zero_row(T* row, int nvec) {
  float z[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) z[i] = 0.f;
  for (int j = threadIdx.x; j < nvec; j += blockDim.x) store_vec<T, VEC>(row, j, z);
}

}  // namespace distill
}  // namespace ligerd

// The JSD element, shared by jsd_fwd and jsd_logits_fwd.
#if LIGERD_DISTILL_OP == LIGERD_DISTILL_JSD || LIGERD_DISTILL_OP == LIGERD_DISTILL_JSD_LOGITS
namespace ligerd {
namespace distill {

// Liger's beta cases (ops/jsd.py, _jsd_kernel), chosen once per launch.
constexpr int kForwardKl = 0;  // beta == 0: KL(P || Q)
constexpr int kReverseKl = 1;  // beta == 1: KL(Q || P)
constexpr int kGeneral = 2;    // 0 < beta < 1

// One element of the loss (before the division by the count) and of dX, X = log q (student),
// Y = log p (teacher), Q = exp(X), P = exp(Y), M = beta P + (1 - beta) Q:
//   beta == 0:  loss = P (Y - X),                               dX = -P
//   beta == 1:  loss = Q (X - Y),                               dX = loss + Q
//   otherwise:  loss = beta P (Y - log M) + (1 - beta) Q (X - log M),  dX = (1 - beta) Q (X - log M)
// log M is formed as m + log(beta e^(Y-m) + (1-beta) e^(X-m)), m = max(X, Y): one of the two
// exponentials is 1, the other e = exp(-|X - Y|), so the sum is in [min(beta, 1-beta), 1] and
// never underflows (M itself does for rows of tiny probabilities, as Liger's comment says). The
// larger of P, Q is exp(m), the smaller exp(m) * e: two expf and one logf per element.
template <int MODE>
__device__ __forceinline__ void jsd_elem(float x, float y, float beta, float& loss, float& dx) {
  if (MODE == kForwardKl) {
    const float P = expf(y);
    loss = P * (y - x);
    dx = -P;
  } else if (MODE == kReverseKl) {
    const float Q = expf(x);
    loss = Q * (x - y);
    dx = loss + Q;
  } else {
    const float m = fmaxf(x, y);
    const float e = expf(fminf(x, y) - m);
    const float big = expf(m), small = big * e;
    const bool x_big = x >= y;
    const float Q = x_big ? big : small, P = x_big ? small : big;
    const float s = x_big ? fmaf(beta, e, 1.f - beta) : fmaf(1.f - beta, e, beta);
    const float log_m = m + logf(s);
    dx = (1.f - beta) * Q * (x - log_m);
    loss = fmaf(beta * P, y - log_m, dx);
  }
}

}  // namespace distill
}  // namespace ligerd
#endif

#if LIGERD_DISTILL_OP == LIGERD_DISTILL_KL_FWD
namespace ligerd {
namespace distill {

// One element of KL(target || input), input x in log space (Liger's _kldiv_kernel_forward):
//   t * (log(max(t, eps)) - x)      or, log_target:  exp(t) * (t - x)
template <bool LOG_TARGET>
__device__ __forceinline__ float kl_elem(float x, float t, float eps) {
  if (LOG_TARGET) return expf(t) * (t - x);
  return t * (logf(fmaxf(t, eps)) - x);
}

// Streams x and t once; writes the element losses (elementwise) or the row's sum.
template <bool LOG_TARGET, int VEC>
__device__ __forceinline__ void kl_fwd(const LigerdKlDivFwdParams& p) {
  __shared__ float red[32];
  const long long row = row_index();
  const bool valid = row < p.rows;
  const long long r0 = valid ? row : 0;
  const int nvec = p.n / VEC;
  const XT* x = static_cast<const XT*>(p.x) + r0 * p.x_stride;
  const XT* t = static_cast<const XT*>(p.t) + r0 * p.t_stride;
  float* l = p.loss + r0 * p.loss_stride;
  const int step = kUnroll * blockDim.x;
  float acc = 0.f;
  for (int j0 = threadIdx.x; valid && j0 < nvec; j0 += step) {
    Vec<XT, VEC> xv[kUnroll], tv[kUnroll];
    load_chunk(xv, x, j0, nvec);
    load_chunk(tv, t, j0, nvec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * blockDim.x;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          o[i] = kl_elem<LOG_TARGET>(xv[u].get(i), tv[u].get(i), p.eps);
          acc += o[i];
        }
        if (p.elementwise) store_vec<float, VEC>(l, j, o);
      }
    }
  }
  if (p.elementwise) return;  // uniform over the block: no barrier skipped by some threads only
  acc = row_sum(acc, red);
  if (valid && threadIdx.x == 0) p.loss[row] = acc;
}

template <int VEC>
__device__ __forceinline__ void kl_fwd_any(const LigerdKlDivFwdParams& p) {
  if (p.log_target) kl_fwd<true, VEC>(p);
  else kl_fwd<false, VEC>(p);
}

}  // namespace distill
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_KL_DIV_FWD kl_div_fwd_v(const LigerdKlDivFwdParams p) {
  ligerd::distill::kl_fwd_any<ligerd::distill::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_KL_DIV_FWD kl_div_fwd_s(const LigerdKlDivFwdParams p) {
  ligerd::distill::kl_fwd_any<1>(p);
}

#elif LIGERD_DISTILL_OP == LIGERD_DISTILL_KL_BWD
namespace ligerd {
namespace distill {

// dx = -t * g * scale, or -exp(t) * g * scale with log_target (Liger's _kldiv_kernel_backward and
// the reduction's division that follows it, in one rounding). ELEMENTWISE (reduction "none"): g is
// a [rows, n] fp32 tensor streamed beside t, so fewer vectors of each are in flight (two fp32
// vectors of 8 take the registers four 16-bit ones do; four spilled at 64 registers).
template <bool LOG_TARGET, bool ELEMENTWISE, int VEC>
__device__ __forceinline__ void kl_bwd(const LigerdKlDivBwdParams& p) {
  constexpr int U = ELEMENTWISE ? 2 : kUnroll;
  const long long row = row_index();
  if (row >= p.rows) return;  // no barriers in this kernel
  const int nvec = p.n / VEC;
  const XT* t = static_cast<const XT*>(p.t) + row * p.t_stride;
  const float* g = p.g + (ELEMENTWISE ? row * p.g_stride : 0);
  XT* dx = static_cast<XT*>(p.dx) + row * p.dx_stride;
  const float f = ELEMENTWISE ? -p.scale : -p.g[0] * p.scale;  // the whole factor when uniform
  const int step = U * blockDim.x;
  for (int j0 = threadIdx.x; j0 < nvec; j0 += step) {
    Vec<XT, VEC> tv[U];
    load_chunk(tv, t, j0, nvec);
    Vec<float, VEC> gv[ELEMENTWISE ? U : 1];
    if constexpr (ELEMENTWISE) load_chunk(gv, g, j0, nvec);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = j0 + u * blockDim.x;
      if (j < nvec) {
        float o[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float tt = tv[u].get(i);
          const float d = LOG_TARGET ? expf(tt) : tt;
          o[i] = ELEMENTWISE ? d * gv[ELEMENTWISE ? u : 0].get(i) * f : d * f;
        }
        store_vec<XT, VEC>(dx, j, o);
      }
    }
  }
}

template <int VEC>
__device__ __forceinline__ void kl_bwd_any(const LigerdKlDivBwdParams& p) {
  if (p.elementwise) {
    if (p.log_target) kl_bwd<true, true, VEC>(p);
    else kl_bwd<false, true, VEC>(p);
  } else {
    if (p.log_target) kl_bwd<true, false, VEC>(p);
    else kl_bwd<false, false, VEC>(p);
  }
}

}  // namespace distill
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_KL_DIV_BWD kl_div_bwd_v(const LigerdKlDivBwdParams p) {
  ligerd::distill::kl_bwd_any<ligerd::distill::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_KL_DIV_BWD kl_div_bwd_s(const LigerdKlDivBwdParams p) {
  ligerd::distill::kl_bwd_any<1>(p);
}

#elif LIGERD_DISTILL_OP == LIGERD_DISTILL_JSD
namespace ligerd {
namespace distill {

// Streams x and y once: the row's loss sum and dX (times 1/count, as Liger scales both); an
// ignored row gets loss 0 and dX 0 without reading its inputs.
template <int MODE, int VEC>
__device__ __forceinline__ void jsd(const LigerdJsdParams& p) {
  __shared__ float red[32];
  const long long row = row_index();
  const bool valid = row < p.rows;
  const long long r0 = valid ? row : 0;
  const int nvec = p.n / VEC;
  const bool skip = valid && ignored_row(p.labels, p.labels_stride, row, p.ignore_index);
  const long long count = valid_rows(p.labels, p.n_valid, p.rows);
  const float scale = count > 0 ? 1.f / static_cast<float>(count) : 0.f;
  XT* dx = p.dx != nullptr ? static_cast<XT*>(p.dx) + r0 * p.dx_stride : nullptr;
  float acc = 0.f;
  if (skip) {
    if (dx != nullptr) zero_row<XT, VEC>(dx, nvec);
  } else if (valid) {
    const XT* x = static_cast<const XT*>(p.x) + r0 * p.x_stride;
    const XT* y = static_cast<const XT*>(p.y) + r0 * p.y_stride;
    const int step = kUnroll * blockDim.x;
    for (int j0 = threadIdx.x; j0 < nvec; j0 += step) {
      Vec<XT, VEC> xv[kUnroll], yv[kUnroll];
      load_chunk(xv, x, j0, nvec);
      load_chunk(yv, y, j0, nvec);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * blockDim.x;
        if (j < nvec) {
          float o[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            float l, d;
            jsd_elem<MODE>(xv[u].get(i), yv[u].get(i), p.beta, l, d);
            acc += l;
            o[i] = d * scale;
          }
          if (dx != nullptr) store_vec<XT, VEC>(dx, j, o);
        }
      }
    }
  }
  acc = row_sum(acc, red);
  if (valid && threadIdx.x == 0) p.loss[row] = acc * scale;
}

template <int VEC>
__device__ __forceinline__ void jsd_any(const LigerdJsdParams& p) {
  if (p.beta == 0.f) jsd<kForwardKl, VEC>(p);
  else if (p.beta == 1.f) jsd<kReverseKl, VEC>(p);
  else jsd<kGeneral, VEC>(p);
}

}  // namespace distill
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_JSD_FWD jsd_fwd_v(const LigerdJsdParams p) {
  ligerd::distill::jsd_any<ligerd::distill::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_JSD_FWD jsd_fwd_s(const LigerdJsdParams p) {
  ligerd::distill::jsd_any<1>(p);
}

#elif LIGERD_DISTILL_OP == LIGERD_DISTILL_TVD
namespace ligerd {
namespace distill {

// Liger's _tv_distance_kernel: loss 0.5 |p - q| per element; gradient (of p) 0.5 * scale * sign,
// 0 where p == q (NaN compares unequal and not greater: -0.5 * scale, as Liger's where()s give);
// scale is the reduction's: 1/count (batchmean), 1/(count * n) (mean), else 1. The reduced row
// loss is the row's sum times scale. An ignored row gets zeros (gradient, and element losses for
// "none") without reading its inputs. ELEMENTWISE (reduction "none") stores an fp32 loss vector
// beside each gradient vector: two vectors of each input in flight, not four (four spilled on
// sm_80 at 64 registers in 16-bit types).
template <bool ELEMENTWISE, int VEC>
__device__ __forceinline__ void tvd(const LigerdTvdParams& p) {
  constexpr int U = ELEMENTWISE ? 2 : kUnroll;
  __shared__ float red[32];
  const long long row = row_index();
  const bool valid = row < p.rows;
  const long long r0 = valid ? row : 0;
  const int nvec = p.n / VEC;
  const bool skip = valid && ignored_row(p.labels, p.labels_stride, row, p.ignore_index);
  const long long count = valid_rows(p.labels, p.n_valid, p.rows);
  float scale = 1.f;
  if (p.reduction == LIGERD_DISTILL_REDUCE_BATCHMEAN)
    scale = count > 0 ? static_cast<float>(1.0 / static_cast<double>(count)) : 0.f;
  else if (p.reduction == LIGERD_DISTILL_REDUCE_MEAN)
    scale = count > 0 ? static_cast<float>(1.0 / (static_cast<double>(count) * p.n)) : 0.f;
  const float g_pos = 0.5f * scale, g_neg = -0.5f * scale;
  XT* grad = p.grad != nullptr ? static_cast<XT*>(p.grad) + r0 * p.grad_stride : nullptr;
  float* l = p.loss + r0 * p.loss_stride;
  float acc = 0.f;
  if (skip) {
    if (grad != nullptr) zero_row<XT, VEC>(grad, nvec);
    if (ELEMENTWISE) zero_row<float, VEC>(l, nvec);
  } else if (valid) {
    const XT* pp = static_cast<const XT*>(p.p) + r0 * p.p_stride;
    const XT* qq = static_cast<const XT*>(p.q) + r0 * p.q_stride;
    const int step = U * blockDim.x;
    for (int j0 = threadIdx.x; j0 < nvec; j0 += step) {
      Vec<XT, VEC> pv[U], qv[U];
      load_chunk(pv, pp, j0, nvec);
      load_chunk(qv, qq, j0, nvec);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = j0 + u * blockDim.x;
        if (j < nvec) {
          float lo[VEC], go[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float a = pv[u].get(i), b = qv[u].get(i);
            lo[i] = 0.5f * fabsf(a - b);
            go[i] = a == b ? 0.f : (a > b ? g_pos : g_neg);
            acc += lo[i];
          }
          if (grad != nullptr) store_vec<XT, VEC>(grad, j, go);
          if (ELEMENTWISE) store_vec<float, VEC>(l, j, lo);
        }
      }
    }
  }
  if (ELEMENTWISE) return;  // uniform over the block
  acc = row_sum(acc, red);
  if (valid && threadIdx.x == 0) p.loss[row] = acc * scale;
}

template <int VEC>
__device__ __forceinline__ void tvd_any(const LigerdTvdParams& p) {
  if (p.reduction == LIGERD_DISTILL_REDUCE_NONE) tvd<true, VEC>(p);
  else tvd<false, VEC>(p);
}

}  // namespace distill
}  // namespace ligerd

extern "C" __global__ void LIGERD_LB_TVD_FWD tvd_fwd_v(const LigerdTvdParams p) {
  ligerd::distill::tvd_any<ligerd::distill::kVec>(p);
}
extern "C" __global__ void LIGERD_LB_TVD_FWD tvd_fwd_s(const LigerdTvdParams p) {
  ligerd::distill::tvd_any<1>(p);
}

#elif LIGERD_DISTILL_OP == LIGERD_DISTILL_JSD_LOGITS
#include "kernels/ops/distill_jsd_logits.cuh"

#else
#error "LIGERD_DISTILL_OP must be one of distill_params.h's LIGERD_DISTILL_* ops"
#endif
