// Kernel parameter block for kernels/ops/relu_squared.cuh (squared ReLU), read by the host
// compiler (kernels/ops/relu_squared.cc fills it) and by NVRTC (the kernels take it by value):
// builtin fixed-size types only, no includes; both compilers are LP64 and lay it out identically.
// Strides are in elements.
#ifndef LIGERD_KERNELS_OPS_RELU_SQUARED_PARAMS_H_
#define LIGERD_KERNELS_OPS_RELU_SQUARED_PARAMS_H_

// 16-byte vector positions each thread of the vector kernels handles, every load in flight before
// any math: glu.cuh's choice for the same kind of stream (glu_params.h has its measurement).
#define LIGERD_RELU2_POSITIONS_PER_THREAD 2

struct LigerdReluSquaredParams {
  const void* x;   // [rows, cols], row stride x_stride
  const void* dy;  // backward: [rows, cols], row stride dy_stride; forward: null
  void* out;       // forward: y; backward: dx (may be dy itself); row stride out_stride
  long long rows;  // a dense call is passed as 1 row of rows * cols elements
  long long cols;
  long long x_stride;
  long long dy_stride;
  long long out_stride;
};

#endif  // LIGERD_KERNELS_OPS_RELU_SQUARED_PARAMS_H_
