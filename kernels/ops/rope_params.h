// Kernel parameter block for kernels/ops/rope.cuh, read by the host compiler (kernels/ops/rope.cc
// fills it) and by NVRTC (the kernels take it by value): builtin fixed-size types only, no
// includes. Strides are in elements. Index [0] is q (or dq), [1] is k (or dk).
#ifndef LIGERD_KERNELS_OPS_ROPE_PARAMS_H_
#define LIGERD_KERNELS_OPS_ROPE_PARAMS_H_

struct LigerdRopeParams {
  const void* x[2];        // inputs: q, k  [batch, heads, seq, hd]
  void* y[2];              // outputs (may be exactly x[i]: rotation in place)
  const void* cos;         // [cos_batch, seq, hd]
  const void* sin;         // [cos_batch, seq, hd] (sin's own strides)
  long long x_stride[2][3];  // batch, head, seq strides of x[i] (the last dim is contiguous)
  long long y_stride[2][3];
  long long cos_stride[2];   // batch (0 when cos_batch is 1), seq
  long long sin_stride[2];
  long long heads[2];        // n_q_head, n_kv_head (either may be 0)
  long long batch;
  long long seq;
  long long half;            // hd / 2
  long long lanes;           // vectors per half row: half / VEC
  long long heads_per_thread;
  long long groups;          // ceil((heads[0] + heads[1]) / heads_per_thread)
  long long items;           // batch * seq * groups * lanes: one thread each
};

#endif  // LIGERD_KERNELS_OPS_ROPE_PARAMS_H_
