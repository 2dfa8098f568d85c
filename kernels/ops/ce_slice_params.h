// Kernel parameter blocks for kernels/ops/ce_slice.cuh (the vocabulary-sliced cross-entropy
// steps). Compiled by the host compiler (kernels/ops/ce_slice.cc fills the structs) and by NVRTC
// (the kernels take them by value): builtin fixed-size types only, no includes. Strides are in
// elements.
#ifndef LIGERD_KERNELS_OPS_CE_SLICE_PARAMS_H_
#define LIGERD_KERNELS_OPS_CE_SLICE_PARAMS_H_

struct LigerdCeSliceStatsParams {
  const void* x;             // [rows, n] logits of classes [v0, v0 + n), row stride x_stride
  const long long* target;   // [rows]
  const float* weight;       // [V] class weights, or null
  float* stats;              // [rows, 4] (m, s, sz, zy), read unless first
  long long* idx;            // [rows] first argmax, or null
  long long rows;
  long long x_stride;
  long long n;
  long long v0;
  float softcap;             // 0: none
  int first;                 // 1: initialise stats / idx instead of updating them
};

struct LigerdCeSliceGradParams {
  const void* x;             // [rows, n] logits of classes [v0, v0 + n)
  void* dx;                  // [rows, n], may be x itself (in place)
  const long long* target;   // [rows]
  const float* weight;       // [V] class weights, or null
  const float* coef;         // [rows, 4] (lse, A, B, C)
  long long rows;
  long long x_stride;
  long long dx_stride;
  long long n;
  long long v0;
  long long ignore_index;
  float softcap;             // 0: none
};

#endif  // LIGERD_KERNELS_OPS_CE_SLICE_PARAMS_H_
