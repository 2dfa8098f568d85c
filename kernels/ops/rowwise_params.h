// Parameter block shared by the row-wise norm families (kernels/ops/rowwise.cuh): the column
// reduction of fp32 per-block partial rows into weight gradients. Compiled by the host compiler
// and by NVRTC (see rms_norm_params.h for the rules: builtin types only, no includes).
#ifndef LIGERD_KERNELS_OPS_ROWWISE_PARAMS_H_
#define LIGERD_KERNELS_OPS_ROWWISE_PARAMS_H_

struct LigerdRowReduceParams {
  // gridDim.y outputs: output k sums the num_partials rows at partial + k * num_partials * n.
  const float* partial;  // [gridDim.y][num_partials][n] fp32 workspace
  void* out[2];          // [n] each, in the weight dtype
  int n;
  int num_partials;
};

#endif  // LIGERD_KERNELS_OPS_ROWWISE_PARAMS_H_
