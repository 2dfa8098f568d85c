// Kernel parameter block for kernels/ops/glu.cuh, read by the host compiler (kernels/ops/glu.cc
// fills it) and by NVRTC (the kernels take it by value): builtin fixed-size types only, no
// includes. Strides are in elements.
#ifndef LIGERD_KERNELS_OPS_GLU_PARAMS_H_
#define LIGERD_KERNELS_OPS_GLU_PARAMS_H_

struct LigerdGluParams {
  const void* dc;   // backward: [rows, f] upstream gradient; forward: null
  const void* a;    // [rows, f] gate (activation input)
  const void* b;    // [rows, f] up
  void* out0;       // forward: c; backward: da (may be a itself)
  void* out1;       // backward: db (may be b itself); forward: null
  long long rows;
  long long cols;   // f, in elements (a dense call is passed as 1 row of rows * f)
  long long dc_stride;
  long long a_stride;
  long long b_stride;
  long long out0_stride;
  long long out1_stride;
};

#endif  // LIGERD_KERNELS_OPS_GLU_PARAMS_H_
