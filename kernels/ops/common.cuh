// Device helpers shared by every NVRTC kernel source. Compiled by NVRTC only.
//
// Deliberately includes nothing from the toolkit (no cuda_bf16.h / cuda_fp16.h): conversions are
// single PTX instructions written out below, so a kernel compiles the same with any NVRTC and
// needs no include path. Requires sm_80+ (cvt to bf16 and the packed x2 forms are sm_80 PTX).
#pragma once

namespace ligerd {

// 16-bit float types as raw bits; all arithmetic happens in fp32 after conversion.
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

__device__ __forceinline__ float bits_to_float(float, unsigned b) { return __uint_as_float(b); }
__device__ __forceinline__ float bits_to_float(bf16, unsigned b) { return __uint_as_float(b << 16); }
__device__ __forceinline__ float bits_to_float(f16, unsigned b) {
  float f;
  unsigned short h = static_cast<unsigned short>(b);
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

// Round-to-nearest-even conversions, as torch's .to(dtype) does.
__device__ __forceinline__ unsigned float_to_bits(float, float v) { return __float_as_uint(v); }
__device__ __forceinline__ unsigned float_to_bits(bf16, float v) {
  unsigned short h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return h;
}
__device__ __forceinline__ unsigned float_to_bits(f16, float v) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return h;
}
// Two values into one 32-bit word, `lo` in the low half (lower address).
__device__ __forceinline__ unsigned pack2(bf16, float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ unsigned pack2(f16, float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// v rounded to T and back: models a framework op whose result is stored in dtype T.
template <class T>
__device__ __forceinline__ float round_to(float v) {
  return bits_to_float(T{}, float_to_bits(T{}, v));
}
template <>
__device__ __forceinline__ float round_to<float>(float v) { return v; }

// N consecutive elements of T held as raw 32-bit words, loaded and stored with the widest
// accesses the size allows (16-byte vectors where possible: that is what saturates HBM).
// Callers guarantee alignment to min(sizeof(T) * N, 16) bytes.
template <class T, int N>
struct Vec {
  static constexpr int kBytes = static_cast<int>(sizeof(T)) * N;
  static constexpr int kWords = kBytes >= 4 ? kBytes / 4 : 1;
  static constexpr bool kHalf = sizeof(T) == 2;
  unsigned w[kWords];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0u;
  }
  __device__ __forceinline__ void load(const T* p) {
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
      for (int c = 0; c < kBytes / 16; ++c) {
        const uint4 u = reinterpret_cast<const uint4*>(p)[c];
        w[4 * c] = u.x; w[4 * c + 1] = u.y; w[4 * c + 2] = u.z; w[4 * c + 3] = u.w;
      }
    } else if constexpr (kBytes == 8) {
      const uint2 u = *reinterpret_cast<const uint2*>(p);
      w[0] = u.x; w[1] = u.y;
    } else if constexpr (kBytes == 4) {
      w[0] = *reinterpret_cast<const unsigned*>(p);
    } else {
      static_assert(kBytes == 2, "unsupported vector size");
      w[0] = *reinterpret_cast<const unsigned short*>(p);
    }
  }
  __device__ __forceinline__ void store(T* p) const {
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
      for (int c = 0; c < kBytes / 16; ++c)
        reinterpret_cast<uint4*>(p)[c] = make_uint4(w[4 * c], w[4 * c + 1], w[4 * c + 2], w[4 * c + 3]);
    } else if constexpr (kBytes == 8) {
      *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
    } else if constexpr (kBytes == 4) {
      *reinterpret_cast<unsigned*>(p) = w[0];
    } else {
      *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(w[0]);
    }
  }
  __device__ __forceinline__ float get(int i) const {
    if constexpr (kHalf) {
      const unsigned word = w[i >> 1];
      return bits_to_float(T{}, (i & 1) ? (word >> 16) : (word & 0xffffu));
    } else {
      return bits_to_float(T{}, w[i]);
    }
  }
  __device__ __forceinline__ void set_all(const float (&v)[N]) {
    if constexpr (kHalf && N >= 2) {
#pragma unroll
      for (int i = 0; i < N / 2; ++i) w[i] = pack2(T{}, v[2 * i], v[2 * i + 1]);
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) w[i] = float_to_bits(T{}, v[i]);
    }
  }
};

// One element of T, as fp32.
template <class T>
__device__ __forceinline__ float load_one(const T* p) {
  Vec<T, 1> v;
  v.load(p);
  return v.get(0);
}

// One element, rounded to T.
template <class T>
__device__ __forceinline__ void store_one(T* p, float v) {
  const float a[1] = {v};
  Vec<T, 1> o;
  o.set_all(a);
  o.store(p);
}

// Sums of K values over the blockDim.x threads that share a row (threadIdx.y names the row),
// returned to all of them, bitwise identical in every lane (the xor butterfly only relies on
// a+b == b+a; cross-warp partials are summed in a fixed order). K > 1 reduces several values
// behind one barrier (LayerNorm's backward needs two sums per row). blockDim.x is a power of two
// <= 32 or a multiple of 32; blockDim.x * blockDim.y is a multiple of 32 (so full-mask shuffles
// are legal). Every thread of the block must call it (it may __syncthreads). `red` is >= 32 * K
// floats of shared memory; a caller reducing in a loop alternates two buffers so one barrier
// suffices.
template <int K>
__device__ __forceinline__ void row_sums(float (&v)[K], float* red) {
  const int tpr = blockDim.x;
  const int width = tpr < 32 ? tpr : 32;
  for (int off = width >> 1; off > 0; off >>= 1)
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] += __shfl_xor_sync(0xffffffffu, v[k], off);
  if (tpr <= 32) return;
  const int warps = tpr >> 5;
  if ((threadIdx.x & 31) == 0)
#pragma unroll
    for (int k = 0; k < K; ++k) red[(threadIdx.y * warps + (threadIdx.x >> 5)) * K + k] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float s = 0.f;
    for (int i = 0; i < warps; ++i) s += red[(threadIdx.y * warps + i) * K + k];
    v[k] = s;
  }
}

__device__ __forceinline__ float row_sum(float v, float* red) {
  float a[1] = {v};
  row_sums<1>(a, red);
  return a[0];
}

}  // namespace ligerd
