// How an op's variant names a dtype: in its NVRTC defines (the device type the kernels use) and
// in its tag (cache file names, messages). Shared by every op's catalogue entry.
#pragma once

#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// The C++ type for a dtype inside kernels/ops/common.cuh ("void" for dtypes ops do not take).
inline const char* DeviceTypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "float";
    case DType::kBFloat16: return "ligerd::bf16";
    case DType::kFloat16: return "ligerd::f16";
    default: return "void";
  }
}

// Short tag for variant names: "f32", "bf16", "f16".
inline const char* ShortName(DType t) {
  switch (t) {
    case DType::kFloat32: return "f32";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat16: return "f16";
    default: return "bad";
  }
}

}  // namespace ligerd::kernels
