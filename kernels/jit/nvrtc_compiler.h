// NVRTC: kernel source string -> CUBIN for a real arch ("sm_90") or PTX for a virtual one
// ("compute_90"). Kernel sources include nothing from the toolkit (see kernels/ops/common.cuh),
// so no include paths are needed and the result does not depend on where CUDA is installed.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/jit/compile_request.h"

namespace ligerd::kernels {

// "nvrtc-<major>.<minor>"
std::string NvrtcVersionTag();

// SM numbers this NVRTC can target, ascending (e.g. 75, 80, 86, 89, 90, 100, 120).
std::vector<int> NvrtcSupportedArchs();

struct ParsedArch {
  int sm = 0;             // 90 for "sm_90", "sm_90a", "compute_90"
  bool real = true;       // sm_ (CUBIN) vs compute_ (PTX)
  std::string suffix;     // "a"/"f" feature-set suffix, usually empty
};
// Accepts sm_XY[a|f] and compute_XY[a|f] that this NVRTC supports; INVALID_ARGUMENT otherwise.
absl::StatusOr<ParsedArch> ParseArch(std::string_view arch);

// The NVRTC-backed compiler. Stateless and thread-safe (NVRTC programs are per call).
std::shared_ptr<const Compiler> NvrtcCompiler();

}  // namespace ligerd::kernels
