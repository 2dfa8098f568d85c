// The GPUs this daemon can see, read once at start through the CUDA runtime (linked statically,
// so a machine with no driver still runs ligerd and reports "no CUDA driver").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ligerd {

struct GpuDescription {
  int index = 0;
  std::string name;
  std::string uuid;  // "GPU-..." as nvidia-smi prints it
  uint64_t total_memory_bytes = 0;
  int multiprocessor_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  std::string pci_bus_id;
  bool mps_enabled = false;  // contexts on this GPU are shared through an MPS server
};

struct GpuInventory {
  std::vector<GpuDescription> gpus;
  std::string status;  // why `gpus` is empty ("no CUDA driver", ...), "" when GPUs were found
  int driver_version = 0;  // e.g. 13000; 0 without a driver
};

// `devices` selects ordinals (empty = all); ordinals the runtime does not know are reported in
// `status` and skipped.
GpuInventory DiscoverGpus(const std::vector<int>& devices);

// "13.0" from 13000.
std::string CudaVersionString(int version);

}  // namespace ligerd
