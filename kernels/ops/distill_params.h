// Kernel parameter blocks for kernels/ops/distill.cuh (the row-wise distillation losses: KL
// divergence, generalised JSD, total variation distance). Read by the host compiler
// (kernels/ops/distill.cc fills them) and by NVRTC (the kernels take them by value): builtin
// fixed-size types only, no includes. Strides are in elements. Pointers are stored as given (no
// offsets folded in), so the executor's plan cache can patch them.
#ifndef LIGERD_KERNELS_OPS_DISTILL_PARAMS_H_
#define LIGERD_KERNELS_OPS_DISTILL_PARAMS_H_

// Which op a module holds (-DLIGERD_DISTILL_OP=...): one module per op and dtype, so each op's
// module sees only its own launch bound.
#define LIGERD_DISTILL_KL_FWD 0
#define LIGERD_DISTILL_KL_BWD 1
#define LIGERD_DISTILL_JSD 2
#define LIGERD_DISTILL_TVD 3
#define LIGERD_DISTILL_JSD_LOGITS 4

// The `reduction` scalar, Liger-Kernel's codes (ops/kl_div.py, ops/tvd.py: _REDUCTION_MODE_*).
#define LIGERD_DISTILL_REDUCE_NONE 0
#define LIGERD_DISTILL_REDUCE_SUM 1
#define LIGERD_DISTILL_REDUCE_MEAN 2
#define LIGERD_DISTILL_REDUCE_BATCHMEAN 3

// kl_div_fwd: loss of KL(target || input) with the input in log space.
struct LigerdKlDivFwdParams {
  const void* x;      // [rows, n] input (log-probabilities)
  const void* t;      // [rows, n] target (probabilities, or log-probabilities with log_target)
  float* loss;        // elementwise: [rows, n] (row stride loss_stride); else [rows] row sums
  long long rows;
  long long x_stride;
  long long t_stride;
  long long loss_stride;
  int n;
  int log_target;     // 1: t is log-probabilities
  int elementwise;    // 1: reduction "none" (one loss per element)
  float eps;          // t is clamped to >= eps inside the log (not log_target)
};

// kl_div_bwd: dX = -(t or exp(t)) * g * scale.
struct LigerdKlDivBwdParams {
  const void* t;      // [rows, n] target, as in the forward
  const float* g;     // elementwise: [rows, n] (row stride g_stride); else [1]: the upstream gradient
  void* dx;           // [rows, n] in t's dtype
  long long rows;
  long long t_stride;
  long long g_stride;
  long long dx_stride;
  int n;
  int log_target;
  int elementwise;
  float scale;        // the reduction's factor: 1/rows (batchmean), 1/(rows*n) (mean), else 1
};

// jsd_fwd: generalised JSD of student log q (x) and teacher log p (y), loss and dX in one pass.
struct LigerdJsdParams {
  const void* x;            // [rows, n] student log-probabilities
  const void* y;            // [rows, n] teacher log-probabilities
  const long long* labels;  // [rows] (any stride) or null: rows whose label is ignore_index are skipped
  const long long* n_valid; // [1]: count of labels != ignore_index (with labels; else rows is used)
  float* loss;              // [rows]: the row's loss, already divided by the count
  void* dx;                 // [rows, n] in x's dtype, or null (loss only)
  long long rows;
  long long x_stride;
  long long y_stride;
  long long dx_stride;
  long long labels_stride;
  long long ignore_index;
  int n;
  float beta;               // 0: forward KL, 1: reverse KL (Liger's special cases), else JSD(beta)
};

// tvd_fwd: total variation distance 0.5 |p - q| and its gradient in one pass.
struct LigerdTvdParams {
  const void* p;            // [rows, n]
  const void* q;            // [rows, n]
  const long long* labels;  // [rows] (any stride) or null
  const long long* n_valid; // [1] with labels (else rows is used)
  float* loss;              // reduction none: [rows, n] (row stride loss_stride); else [rows], scaled
  void* grad;               // [rows, n] in p's dtype, or null (loss only)
  long long rows;
  long long p_stride;
  long long q_stride;
  long long loss_stride;
  long long grad_stride;
  long long labels_stride;
  long long ignore_index;
  int n;
  int reduction;            // LIGERD_DISTILL_REDUCE_*
};

// jsd_logits_fwd: the generalised JSD of softmax(s * s_scale) (zero-padded to nt) and
// softmax(t * t_scale) from raw logits, its gradient w.r.t. s, and optionally the folded hard loss.
struct LigerdJsdLogitsParams {
  const void* s;            // [rows, ns] student logits
  const void* t;            // [rows, nt] teacher logits, nt >= ns, s's dtype
  const long long* labels;  // [rows] (any stride) or null (no row ignored, no hard loss)
  const float* scale;       // [1]: the gradient's factor
  float* loss;              // [rows]: the row's JSD sum
  float* hard_loss;         // [rows] or null: lse(s) - s[label] (its gradient then joins ds)
  void* ds;                 // [rows, ns] in s's dtype (may be s), or null (losses only)
  long long rows;
  long long s_stride;
  long long t_stride;
  long long ds_stride;
  long long labels_stride;
  long long ignore_index;
  int ns;
  int nt;
  float beta;               // 0: forward KL, 1: reverse KL (Liger's special cases), else JSD(beta)
  float s_scale;            // the student's logits are multiplied by this (1 / T for raw logits)
  float t_scale;            // the teacher's
  float soft_coef;          // ds = scale * (soft_coef * (g - q sum g) + hard_coef * (q - onehot))
  float hard_coef;
};

#endif  // LIGERD_KERNELS_OPS_DISTILL_PARAMS_H_
