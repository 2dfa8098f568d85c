// The CUDA driver API, loaded lazily at run time.
//
// ligerd must start and serve its control plane (and `--precompile_arch`, which only needs
// NVRTC) on machines without a GPU driver, e.g. CI. So nothing here links against libcuda:
// libcuda.so.1 is dlopen'ed on first use and every entry point is resolved through the driver's
// own cuGetProcAddress, which returns the ABI version matching the cuda.h we were built with.
// When the library is missing, Driver() returns FAILED_PRECONDITION "no CUDA driver ...".
#pragma once

#include <cuda.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ligerd::kernels {

// One pointer per driver function we use; typed from cuda.h's own declarations.
struct DriverApi {
#define LIGERD_DRIVER_FN(name) decltype(&::name) name = nullptr;
#define LIGERD_DRIVER_FN_V(name, version) LIGERD_DRIVER_FN(name)
#include "kernels/cuda_driver_functions.inc"
#undef LIGERD_DRIVER_FN_V
#undef LIGERD_DRIVER_FN
  int driver_version = 0;  // cuDriverGetVersion, e.g. 13000
};

// Loads libcuda once per process (thread-safe) and runs cuInit(0). The pointer stays valid for
// the life of the process. Environment: LIGERD_CUDA_DRIVER overrides the library path (tests use
// it to force the no-driver path on a GPU machine).
absl::StatusOr<const DriverApi*> Driver();

// Turns a failed driver call into a status naming the call and where it was made. Codes follow
// the CUDA error: out of memory -> RESOURCE_EXHAUSTED, no device / bad driver -> FAILED_PRECONDITION,
// invalid value/handle -> INVALID_ARGUMENT, anything else -> INTERNAL.
absl::Status CuResultToStatus(CUresult result, const char* call, const char* file, int line);

}  // namespace ligerd::kernels

// Checks a driver call that returns CUresult; on failure returns an absl::Status from the
// enclosing function with the call text and file:line (like NCCL's CUCHECK, but as a value).
#define LIGERD_CU_CHECK(call)                                                            \
  do {                                                                                   \
    CUresult ligerd_cu_result_ = (call);                                                 \
    if (ligerd_cu_result_ != CUDA_SUCCESS)                                               \
      return ::ligerd::kernels::CuResultToStatus(ligerd_cu_result_, #call, __FILE__, __LINE__); \
  } while (0)
