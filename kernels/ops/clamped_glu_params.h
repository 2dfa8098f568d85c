// Kernel parameter block for kernels/ops/clamped_glu.cuh (the clamped gated activation of
// GPT-OSS's and DeepSeek-V4's MoE experts), read by the host compiler (kernels/ops/clamped_glu.cc
// fills it) and by NVRTC (the kernels take it by value): builtin fixed-size types only, no
// includes; both compilers are LP64 and lay it out identically. Strides are in elements.
#ifndef LIGERD_KERNELS_OPS_CLAMPED_GLU_PARAMS_H_
#define LIGERD_KERNELS_OPS_CLAMPED_GLU_PARAMS_H_

// 16-byte vector positions each thread handles, every load in flight before any math: glu.cuh's
// choice for the same kind of stream (glu_params.h has its measurement).
#define LIGERD_CGLU_POSITIONS_PER_THREAD 2

struct LigerdClampedGluParams {
  const void* x;    // [rows, 2 * cols] gate and up (halves: gate first; pairs: gate, up, ...)
  const void* dy;   // backward: [rows, cols] upstream gradient; forward: null
  void* out;        // forward: y [rows, cols]; backward: dx [rows, 2 * cols], x's layout
  long long rows;
  long long cols;   // the activation's width I (the output's last dim)
  long long x_stride;
  long long dy_stride;
  long long out_stride;
  float alpha;      // y = g * sigmoid(alpha * g) * (u + up_offset)
  float limit;      // g = min(gate, limit), u = clamp(up, -limit, limit); >= 0, may be inf
  float up_offset;
  int pad_;
};

#endif  // LIGERD_KERNELS_OPS_CLAMPED_GLU_PARAMS_H_
