#include "server/dataplane/cuda_ipc_opener.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ligerd::dataplane {
namespace {

absl::Status CudaError(cudaError_t err, const char* call, const char* file, int line) {
  return absl::Status(err == cudaErrorInvalidValue || err == cudaErrorInvalidResourceHandle
                          ? absl::StatusCode::kInvalidArgument
                          : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(call, " failed at ", file, ":", line, ": ", cudaGetErrorName(err), " (",
                                   cudaGetErrorString(err), ")"));
}
#define LIGERD_CUDART_CHECK(call)                                               \
  do {                                                                          \
    cudaError_t ligerd_err_ = (call);                                           \
    if (ligerd_err_ != cudaSuccess) {                                           \
      cudaGetLastError();                                                       \
      return CudaError(ligerd_err_, #call, __FILE__, __LINE__);                 \
    }                                                                           \
  } while (0)

class CudaIpcMapping final : public IpcMapping {
 public:
  CudaIpcMapping(void* base, uint64_t size, int device) : base_(base), size_(size), device_(device) {}
  ~CudaIpcMapping() override {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    cudaIpcCloseMemHandle(base_);  // nothing useful to do on failure during teardown
    cudaSetDevice(previous);
  }
  void* base() const override { return base_; }
  uint64_t size_bytes() const override { return size_; }

 private:
  void* base_;
  uint64_t size_;
  int device_;
};

using MemGetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

}  // namespace

absl::StatusOr<std::unique_ptr<IpcMapping>> CudaIpcOpener::Open(const std::string& handle, int device) {
  if (handle.size() != sizeof(cudaIpcMemHandle_t)) return absl::InvalidArgumentError("IPC handle has the wrong size");
  cudaIpcMemHandle_t ipc;
  std::memcpy(&ipc, handle.data(), sizeof(ipc));
  LIGERD_CUDART_CHECK(cudaSetDevice(device));
  void* base = nullptr;
  LIGERD_CUDART_CHECK(cudaIpcOpenMemHandle(&base, ipc, cudaIpcMemLazyEnablePeerAccess));
  // Measure the allocation ourselves: the size a client claims is never trusted.
  static MemGetAddressRange get_range = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &found);
    return found == cudaDriverEntryPointSuccess ? reinterpret_cast<MemGetAddressRange>(fn) : nullptr;
  }();
  CUdeviceptr range_base = 0;
  size_t range_size = 0;
  if (get_range == nullptr ||
      get_range(&range_base, &range_size, reinterpret_cast<CUdeviceptr>(base)) != CUDA_SUCCESS ||
      range_base != reinterpret_cast<CUdeviceptr>(base)) {
    cudaIpcCloseMemHandle(base);
    return absl::InternalError("cannot measure the IPC-mapped allocation (cuMemGetAddressRange)");
  }
  return std::unique_ptr<IpcMapping>(new CudaIpcMapping(base, range_size, device));
}

}  // namespace ligerd::dataplane
