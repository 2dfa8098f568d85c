#include "kernels/cuda_driver.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace ligerd::kernels {
namespace {

// Set once the driver loaded, so error formatting never re-enters Driver()'s call_once.
std::atomic<const DriverApi*> g_loaded{nullptr};

absl::Status FormatCuError(const DriverApi* api, CUresult result, const char* call,
                           const char* file, int line);

// cuGetProcAddress as exported by every driver since CUDA 12.0 (cuda.h maps the name to _v2).
using GetProcAddressFn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult*);

absl::StatusOr<const DriverApi*> LoadDriver() {
  const char* override_path = std::getenv("LIGERD_CUDA_DRIVER");
  const char* path = (override_path && *override_path) ? override_path : "libcuda.so.1";
  // RTLD_NODELETE: function pointers must outlive any static destructor that might dlclose.
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (lib == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA driver: cannot load ", path, " (", why ? why : "unknown error",
                     "); GPU ops need the NVIDIA driver, precompile does not"));
  }
  auto get_proc = reinterpret_cast<GetProcAddressFn>(dlsym(lib, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA driver at ", path, " is too old: it lacks cuGetProcAddress_v2 (need CUDA 12+)"));
  }
  auto* api = new DriverApi();  // leaked on purpose: lives for the process
  CUdriverProcAddressQueryResult found;
// `symbol` is stringified by the outer macros before cuda.h's #defines (cuMemAlloc ->
// cuMemAlloc_v2) can rename it: cuGetProcAddress wants the un-suffixed name.
#define LIGERD_LOAD_DRIVER_FN(symbol, member, version)                                          \
  {                                                                                            \
    void* fn = nullptr;                                                                        \
    CUresult r = get_proc(symbol, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &found);          \
    if (r != CUDA_SUCCESS || fn == nullptr || found != CU_GET_PROC_ADDRESS_SUCCESS) {          \
      delete api;                                                                              \
      return absl::FailedPreconditionError(absl::StrCat(                                       \
          "CUDA driver at ", path, " has no usable ", symbol, " for CUDA ", version,           \
          " (query result ", static_cast<int>(found), "); update the NVIDIA driver"));         \
    }                                                                                          \
    api->member = reinterpret_cast<decltype(api->member)>(fn);                                 \
  }
#define LIGERD_DRIVER_FN(name) LIGERD_LOAD_DRIVER_FN(#name, name, CUDA_VERSION)
#define LIGERD_DRIVER_FN_V(name, version) LIGERD_LOAD_DRIVER_FN(#name, name, version)
#include "kernels/cuda_driver_functions.inc"
#undef LIGERD_DRIVER_FN
#undef LIGERD_DRIVER_FN_V
#undef LIGERD_LOAD_DRIVER_FN
  CUresult r = api->cuInit(0);
  if (r != CUDA_SUCCESS) {
    absl::Status s = FormatCuError(api, r, "cuInit(0)", __FILE__, __LINE__);
    delete api;
    // A driver without a usable GPU is, for us, the same situation as no driver.
    return absl::FailedPreconditionError(absl::StrCat("no usable CUDA device: ", s.message()));
  }
  if (api->cuDriverGetVersion(&api->driver_version) != CUDA_SUCCESS) api->driver_version = 0;
  g_loaded.store(api, std::memory_order_release);
  return api;
}

absl::Status FormatCuError(const DriverApi* api, CUresult result, const char* call,
                           const char* file, int line) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (api != nullptr) {
    api->cuGetErrorName(result, &name);
    api->cuGetErrorString(result, &text);
  }
  std::string msg = absl::StrCat(call, " failed: ", name ? name : "CUDA error ",
                                 name ? "" : absl::StrCat(static_cast<int>(result)), " (",
                                 text ? text : "no description", ") at ", file, ":", line);
  switch (result) {
    case CUDA_ERROR_OUT_OF_MEMORY: return absl::ResourceExhaustedError(msg);
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_INVALID_CONTEXT:
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION: return absl::FailedPreconditionError(msg);
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_INVALID_HANDLE: return absl::InvalidArgumentError(msg);
    default: return absl::InternalError(msg);
  }
}

}  // namespace

absl::StatusOr<const DriverApi*> Driver() {
  static std::once_flag once;
  static absl::StatusOr<const DriverApi*>* result = nullptr;
  std::call_once(once, [] { result = new absl::StatusOr<const DriverApi*>(LoadDriver()); });
  return *result;
}

absl::Status CuResultToStatus(CUresult result, const char* call, const char* file, int line) {
  return FormatCuError(g_loaded.load(std::memory_order_acquire), result, call, file, line);
}

}  // namespace ligerd::kernels
