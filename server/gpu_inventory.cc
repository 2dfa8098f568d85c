#include "server/gpu_inventory.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ligerd {

std::string CudaVersionString(int version) {
  return absl::StrCat(version / 1000, ".", (version % 1000) / 10);
}

namespace {
std::string FormatUuid(const cudaUUID_t& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  return absl::StrFormat("GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                         b[12], b[13], b[14], b[15]);
}
}  // namespace

GpuInventory DiscoverGpus(const std::vector<int>& devices) {
  GpuInventory inventory;
  cudaDriverGetVersion(&inventory.driver_version);  // leaves 0 when there is no driver
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    inventory.status = (err == cudaErrorInsufficientDriver && inventory.driver_version == 0)
                           ? "no CUDA driver on this machine"
                           : absl::StrCat("no usable GPU: ", cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return inventory;
  }
  std::vector<int> wanted = devices;
  if (wanted.empty()) {
    for (int i = 0; i < count; ++i) wanted.push_back(i);
  }
  std::vector<std::string> problems;
  for (int ordinal : wanted) {
    if (ordinal >= count) {
      problems.push_back(absl::StrCat("device ", ordinal, " does not exist (", count, " visible)"));
      continue;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) {
      problems.push_back(absl::StrCat("device ", ordinal, ": ", cudaGetErrorString(cudaGetLastError())));
      continue;
    }
    GpuDescription gpu;
    gpu.index = ordinal;
    gpu.name = prop.name;
    gpu.uuid = FormatUuid(prop.uuid);
    gpu.total_memory_bytes = prop.totalGlobalMem;
    gpu.multiprocessor_count = prop.multiProcessorCount;
    gpu.cc_major = prop.major;
    gpu.cc_minor = prop.minor;
    gpu.pci_bus_id = absl::StrFormat("%08x:%02x:%02x.0", prop.pciDomainID, prop.pciBusID, prop.pciDeviceID);
    int mps = 0;
    if (cudaDeviceGetAttribute(&mps, cudaDevAttrMpsEnabled, ordinal) == cudaSuccess) {
      gpu.mps_enabled = mps != 0;
    } else {
      cudaGetLastError();
    }
    inventory.gpus.push_back(std::move(gpu));
  }
  if (inventory.gpus.empty() && problems.empty()) problems.push_back("no CUDA device");
  inventory.status = absl::StrJoin(problems, "; ");
  return inventory;
}

}  // namespace ligerd
