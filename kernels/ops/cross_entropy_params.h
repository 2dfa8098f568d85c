// Kernel parameter blocks for kernels/ops/cross_entropy.cuh, read by the host compiler
// (kernels/ops/cross_entropy.cc fills them) and by NVRTC (the kernels take them by value):
// builtin fixed-size types only, no includes. Strides are in elements. Pointers are stored as
// given (no offsets folded in), so the executor's plan cache can patch them.
#ifndef LIGERD_KERNELS_OPS_CROSS_ENTROPY_PARAMS_H_
#define LIGERD_KERNELS_OPS_CROSS_ENTROPY_PARAMS_H_

// Slots of the [4] float32 tensor written by cross_entropy_count and read by cross_entropy_fwd.
#define LIGERD_CE_DENOM_COUNT 0     // number of non-ignored targets
#define LIGERD_CE_DENOM_WSUM 1      // sum of weight[target] over non-ignored targets (count if no weight)
#define LIGERD_CE_DENOM_WTOTAL 2    // sum of weight over all classes (0 if no weight)
#define LIGERD_CE_DENOM_INVALID 3   // targets outside [0, V) that are not ignore_index

// reduction
#define LIGERD_CE_REDUCE_NONE 0
#define LIGERD_CE_REDUCE_MEAN 1
#define LIGERD_CE_REDUCE_SUM 2

struct LigerdCeCountParams {
  const long long* target;  // [rows]
  const float* weight;      // [cols] or null
  float* denom;             // [4], see LIGERD_CE_DENOM_*
  long long rows;
  long long target_stride;
  long long cols;           // V
  long long ignore_index;
};

struct LigerdCeFwdParams {
  const void* x;            // [rows, cols] logits
  void* dx;                 // [rows, cols] gradient out (may be x itself: in place), or null
  const long long* target;  // [rows]
  const float* weight;      // [cols] class weights, or null
  const float* denom;       // [4] from cross_entropy_count
  const float* row_scale;   // [rows] per-row factor on the gradient (upstream dloss), or null
  float* loss;              // [rows] per-row loss (already divided for "mean"), z-loss included
  float* z_loss;            // [rows] or null
  long long* pred;          // [rows] argmax (-1 for ignored rows), or null
  long long rows;
  long long cols;
  long long x_stride;
  long long dx_stride;
  long long target_stride;
  long long ignore_index;
  float lse_square_scale;
  float label_smoothing;
  float softcap;            // > 0 only in the LIGERD_CE_SOFTCAP=1 variants
  int reduction;            // LIGERD_CE_REDUCE_*
  int token_scaling;        // 1: loss and gradient of a row times the detached p(target)
};

struct LigerdCeScaleParams {
  void* g;                  // [rows, cols], scaled in place
  const float* s;           // [1] (one factor) or [rows]
  long long rows;
  long long cols;
  long long g_stride;
  int per_row;              // 1: s has one factor per row
};

#endif  // LIGERD_KERNELS_OPS_CROSS_ENTROPY_PARAMS_H_
