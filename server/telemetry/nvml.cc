#include "server/telemetry/nvml.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace ligerd::telemetry {
namespace {

// The few NVML declarations we use, as nvml.h (the driver's stable C ABI) defines them; the
// header itself ships with the CUDA toolkit's nvml-dev part, which a build machine may lack.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr nvmlReturn_t NVML_ERROR_INSUFFICIENT_SIZE = 7;
constexpr unsigned NVML_CLOCK_MEM = 2;
constexpr unsigned long long NVML_VALUE_NOT_AVAILABLE = ~0ULL;
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
// nvmlProcessInfo_v2_t: the layout nvmlDeviceGetComputeRunningProcesses_v3 fills.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

template <typename F>
F Sym(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

}  // namespace

struct Nvml::Api {
  void* lib = nullptr;
  nvmlReturn_t (*Init)() = nullptr;
  nvmlReturn_t (*Shutdown)() = nullptr;
  const char* (*ErrorString)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*DeviceGetCount)(unsigned*) = nullptr;
  nvmlReturn_t (*DeviceGetHandleByIndex)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*DeviceGetMemoryInfo)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*DeviceGetUUID)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*DeviceGetName)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*DeviceGetMaxClockInfo)(nvmlDevice_t, unsigned, unsigned*) = nullptr;
  nvmlReturn_t (*DeviceGetMemoryBusWidth)(nvmlDevice_t, unsigned*) = nullptr;
  nvmlReturn_t (*DeviceGetComputeRunningProcesses)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*) = nullptr;

  std::string Error(nvmlReturn_t r) const {
    return ErrorString != nullptr ? ErrorString(r) : absl::StrCat("NVML error ", r);
  }
  ~Api() {
    if (lib != nullptr) {
      if (Shutdown != nullptr) Shutdown();
      dlclose(lib);
    }
  }
};

absl::StatusOr<std::unique_ptr<Nvml>> Nvml::Load() {
  auto api = std::make_unique<Api>();
  api->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (api->lib == nullptr) return absl::UnavailableError(absl::StrCat("NVML not loaded: ", dlerror()));
  api->Init = Sym<decltype(api->Init)>(api->lib, "nvmlInit_v2");
  api->Shutdown = Sym<decltype(api->Shutdown)>(api->lib, "nvmlShutdown");
  api->ErrorString = Sym<decltype(api->ErrorString)>(api->lib, "nvmlErrorString");
  api->DeviceGetCount = Sym<decltype(api->DeviceGetCount)>(api->lib, "nvmlDeviceGetCount_v2");
  api->DeviceGetHandleByIndex = Sym<decltype(api->DeviceGetHandleByIndex)>(api->lib, "nvmlDeviceGetHandleByIndex_v2");
  api->DeviceGetMemoryInfo = Sym<decltype(api->DeviceGetMemoryInfo)>(api->lib, "nvmlDeviceGetMemoryInfo");
  api->DeviceGetUUID = Sym<decltype(api->DeviceGetUUID)>(api->lib, "nvmlDeviceGetUUID");
  api->DeviceGetName = Sym<decltype(api->DeviceGetName)>(api->lib, "nvmlDeviceGetName");
  api->DeviceGetMaxClockInfo = Sym<decltype(api->DeviceGetMaxClockInfo)>(api->lib, "nvmlDeviceGetMaxClockInfo");
  api->DeviceGetMemoryBusWidth = Sym<decltype(api->DeviceGetMemoryBusWidth)>(api->lib, "nvmlDeviceGetMemoryBusWidth");
  api->DeviceGetComputeRunningProcesses = Sym<decltype(api->DeviceGetComputeRunningProcesses)>(
      api->lib, "nvmlDeviceGetComputeRunningProcesses_v3");
  if (api->Init == nullptr || api->DeviceGetCount == nullptr || api->DeviceGetHandleByIndex == nullptr ||
      api->DeviceGetMemoryInfo == nullptr || api->DeviceGetUUID == nullptr || api->DeviceGetName == nullptr) {
    return absl::UnavailableError("NVML is too old (a required function is missing)");
  }
  if (nvmlReturn_t r = api->Init(); r != NVML_SUCCESS) {
    api->Shutdown = nullptr;  // never initialised
    return absl::UnavailableError(absl::StrCat("nvmlInit: ", api->Error(r)));
  }
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}
Nvml::~Nvml() = default;

absl::StatusOr<std::vector<NvmlGpuSample>> Nvml::Sample() const {
  unsigned count = 0;
  if (nvmlReturn_t r = api_->DeviceGetCount(&count); r != NVML_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("nvmlDeviceGetCount: ", api_->Error(r)));
  }
  std::vector<NvmlGpuSample> out;
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    if (api_->DeviceGetHandleByIndex(i, &dev) != NVML_SUCCESS) continue;  // e.g. a GPU we may not see
    NvmlGpuSample s;
    s.index = i;
    char text[96] = {};
    if (api_->DeviceGetUUID(dev, text, sizeof(text)) == NVML_SUCCESS) s.uuid = text;
    text[0] = '\0';
    if (api_->DeviceGetName(dev, text, sizeof(text)) == NVML_SUCCESS) s.name = text;
    nvmlMemory_t mem{};
    if (api_->DeviceGetMemoryInfo(dev, &mem) == NVML_SUCCESS) {
      s.total_bytes = mem.total;
      s.used_bytes = mem.used;
    }
    unsigned mem_mhz = 0, bus_bits = 0;
    if (api_->DeviceGetMaxClockInfo != nullptr && api_->DeviceGetMemoryBusWidth != nullptr &&
        api_->DeviceGetMaxClockInfo(dev, NVML_CLOCK_MEM, &mem_mhz) == NVML_SUCCESS &&
        api_->DeviceGetMemoryBusWidth(dev, &bus_bits) == NVML_SUCCESS) {
      // Double data rate: two transfers per memory clock.
      s.peak_bandwidth_bytes_per_second = uint64_t{mem_mhz} * 1000000ULL * 2 * (bus_bits / 8);
    }
    if (api_->DeviceGetComputeRunningProcesses != nullptr) {
      std::vector<nvmlProcessInfo_t> procs(64);
      unsigned n = static_cast<unsigned>(procs.size());
      nvmlReturn_t r = api_->DeviceGetComputeRunningProcesses(dev, &n, procs.data());
      if (r == NVML_ERROR_INSUFFICIENT_SIZE) {
        procs.resize(n + 16);
        n = static_cast<unsigned>(procs.size());
        r = api_->DeviceGetComputeRunningProcesses(dev, &n, procs.data());
      }
      if (r == NVML_SUCCESS) {
        for (unsigned k = 0; k < n && k < procs.size(); ++k) {
          const unsigned long long used = procs[k].usedGpuMemory;
          s.processes.push_back({static_cast<pid_t>(procs[k].pid), used == NVML_VALUE_NOT_AVAILABLE ? 0 : used});
        }
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ligerd::telemetry
