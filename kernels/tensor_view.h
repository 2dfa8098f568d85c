// A non-owning description of a tensor on a GPU: the one shape of tensor that every op in the
// catalogue takes, whether it came from a local torch tensor or from a ring record that named an
// IPC-mapped buffer. Sizes and strides are in elements, not bytes (as torch reports them).
#pragma once

#include <cstdint>

namespace ligerd::kernels {

// Values match proto/ligerd/ring_layout.h (RingDType) so a ring record converts without a table.
enum class DType : uint8_t {
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kInt32 = 4,
  kInt64 = 5,
};

// Up to 4-D, like the ops we serve (Liger's are 2-D to 4-D; callers flatten leading dims).
inline constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;  // nullptr = optional tensor not given (e.g. RMSNorm without weight)
  DType dtype = DType::kFloat32;
  int32_t ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements
  int32_t device = 0;              // CUDA ordinal in the process that launches

  bool present() const { return data != nullptr; }
};

inline constexpr int DTypeBytes(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
  }
  return 0;
}

inline constexpr const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "unknown";
}

}  // namespace ligerd::kernels
