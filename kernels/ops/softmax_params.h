// Kernel parameter blocks for kernels/ops/softmax.cuh (softmax over the last dimension). This
// header is compiled twice, by the host compiler (kernels/ops/softmax.cc fills the structs) and by
// NVRTC (the kernels take them by value), so it uses only builtin fixed-size types and no
// includes: both compilers are LP64 and lay the structs out identically. Strides are in elements.
#ifndef LIGERD_KERNELS_OPS_SOFTMAX_PARAMS_H_
#define LIGERD_KERNELS_OPS_SOFTMAX_PARAMS_H_

struct LigerdSoftmaxFwdParams {
  const void* x;  // [rows, n], row stride x_stride
  void* y;        // [rows, n], row stride y_stride
  long long rows;
  long long x_stride;
  long long y_stride;
  int n;
};

struct LigerdSoftmaxBwdParams {
  const void* dy;  // [rows, n], row stride dy_stride
  const void* y;   // [rows, n]: the forward's output
  void* dx;        // [rows, n]; may be dy itself (in place)
  long long rows;
  long long dy_stride;
  long long y_stride;
  long long dx_stride;
  int n;
};

#endif  // LIGERD_KERNELS_OPS_SOFTMAX_PARAMS_H_
