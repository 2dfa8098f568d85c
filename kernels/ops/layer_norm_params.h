// Kernel parameter blocks for kernels/ops/layer_norm.cuh (host: layer_norm.cc; same rules as
// rms_norm_params.h: builtin types only, no includes). Strides are in elements. The dW/dB
// reduction takes LigerdRowReduceParams (rowwise_params.h).
#ifndef LIGERD_KERNELS_OPS_LAYER_NORM_PARAMS_H_
#define LIGERD_KERNELS_OPS_LAYER_NORM_PARAMS_H_

struct LigerdLayerNormFwdParams {
  const void* x;   // [rows, n], row stride x_stride
  const void* w;   // [n] contiguous, or null (no scale)
  const void* b;   // [n] contiguous, or null (no shift)
  void* y;         // [rows, n], row stride y_stride
  float* mean;     // [rows] contiguous
  float* rstd;     // [rows] contiguous
  long long rows;
  long long x_stride;
  long long y_stride;
  int n;
  float eps;
};

struct LigerdLayerNormBwdParams {
  const void* dy;     // [rows, n]
  const void* x;      // [rows, n]
  const void* w;      // [n] or null
  const float* mean;  // [rows]
  const float* rstd;  // [rows]
  void* dx;           // [rows, n]; may be dy itself
  float* dw_partial;  // [gridDim.x, n] fp32 workspace, or null (no dW wanted)
  float* db_partial;  // [gridDim.x, n] fp32 workspace, or null (no dB wanted)
  long long rows;
  long long dy_stride;
  long long x_stride;
  long long dx_stride;
  int n;
};

#endif  // LIGERD_KERNELS_OPS_LAYER_NORM_PARAMS_H_
