// Kernel parameter blocks for kernels/ops/rms_norm.cuh (RMSNorm and fused add + RMSNorm). This
// header is compiled twice, by the host compiler (kernels/ops/rms_norm.cc fills the structs) and
// by NVRTC (the kernels take them by value), so it uses only builtin fixed-size types and no
// includes: both compilers are LP64 and lay the structs out identically. Strides are in
// elements. The dW reduction takes LigerdRowReduceParams (rowwise_params.h).
#ifndef LIGERD_KERNELS_OPS_RMS_NORM_PARAMS_H_
#define LIGERD_KERNELS_OPS_RMS_NORM_PARAMS_H_

struct LigerdRmsNormFwdParams {
  const void* x;      // [rows, n], row stride x_stride
  const void* w;      // [n] contiguous, or null without weight
  void* y;            // [rows, n], row stride y_stride
  float* rstd;        // [rows] contiguous
  const void* r;      // fused add only: the residual [rows, n]
  void* s;            // fused add only: S = X + R, the new residual [rows, n]
  long long rows;
  long long x_stride;
  long long y_stride;
  long long r_stride;
  long long s_stride;
  int n;
  float eps;
  float offset;
};

struct LigerdRmsNormBwdParams {
  const void* dy;     // [rows, n]
  const void* x;      // [rows, n] (fused add: the saved S)
  const void* w;      // [n] or null
  const float* rstd;  // [rows]
  void* dx;           // [rows, n]; may be dy itself (in place)
  float* dw_partial;  // [gridDim.x, n] fp32 workspace, or null without weight
  const void* ds;     // fused add only: gradient of S [rows, n], or null (none flows back)
  long long rows;
  long long dy_stride;
  long long x_stride;
  long long dx_stride;
  long long ds_stride;
  int n;
  float offset;
};

#endif  // LIGERD_KERNELS_OPS_RMS_NORM_PARAMS_H_
