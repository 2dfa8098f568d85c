// The node's telemetry in one place: the accumulated numbers (Store) plus what is read live when
// asked (sessions, the daemon's JIT cache, NVML). Snapshot() is the one answer that the Telemetry
// RPC, /metrics (telemetry/exposition.h), the dashboard's JSON and `ligerctl` all serve, so they
// cannot disagree.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/jit/jit_cache.h"
#include "ligerd/v1/telemetry.pb.h"
#include "server/gpu_inventory.h"
#include "server/telemetry/nvml.h"
#include "server/telemetry/store.h"

namespace ligerd::telemetry {

using NvmlSampler = std::function<absl::StatusOr<std::vector<NvmlGpuSample>>()>;

struct LiveSources {
  std::function<std::vector<ligerd::v1::SessionStats>()> sessions;  // open sessions
  std::function<std::optional<kernels::JitCacheStats>()> daemon_jit;  // nullopt: no cache opened
  std::function<bool()> draining;
  GpuInventory inventory;  // the GPUs this ligerd serves (CUDA ordinals)
  NvmlSampler nvml;        // null: NVML is not used (UnavailableNvml() says so)
  std::string hostname;    // "" = gethostname()
  std::string version;
};

// Loads NVML for real; without it, a sampler that answers why not.
NvmlSampler SystemNvml();

class NodeTelemetry {
 public:
  explicit NodeTelemetry(LiveSources sources);

  Store& store() { return store_; }
  // Everything, now. Also forgets processes that have exited.
  ligerd::v1::SnapshotResponse Snapshot();
  const std::string& hostname() const { return hostname_; }

 private:
  LiveSources sources_;
  std::string hostname_;
  Store store_;
  absl::Mutex nvml_mu_;  // NVML calls are serialised (scrapes and RPCs may overlap)
};

}  // namespace ligerd::telemetry
