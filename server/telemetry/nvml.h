// Per-GPU memory from NVML (libnvidia-ml.so.1, loaded at run time: a machine without the NVIDIA
// driver runs ligerd and simply reports no NVML). NVML numbers GPUs in PCI order; that index is
// what DCGM exporter calls `gpu`, and the UUID is the key that joins our series with DCGM's.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ligerd::telemetry {

struct GpuProcessMemory {
  pid_t pid = 0;
  uint64_t used_bytes = 0;  // 0 when NVML cannot say (e.g. some MPS setups)
};

struct NvmlGpuSample {
  unsigned index = 0;  // NVML index (DCGM's `gpu`)
  std::string uuid;    // "GPU-..."
  std::string name;    // model name
  uint64_t total_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t peak_bandwidth_bytes_per_second = 0;  // max memory clock x bus width (0 when unknown)
  std::vector<GpuProcessMemory> processes;       // compute processes on this GPU
};

class Nvml {
 public:
  // Loads and initialises NVML. UNAVAILABLE (with the reason) when the library or a GPU is absent.
  static absl::StatusOr<std::unique_ptr<Nvml>> Load();
  ~Nvml();

  // One sample of every GPU NVML sees.
  absl::StatusOr<std::vector<NvmlGpuSample>> Sample() const;

  struct Api;

 private:
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

}  // namespace ligerd::telemetry
