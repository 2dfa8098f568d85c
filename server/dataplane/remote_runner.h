// Executes a remote session's ops in the daemon: reads its ring, validates each record, orders it
// after the client's work with stream memory flags, launches the kernels through the same
// executor local dispatch uses, and releases the client. No CPU waits on the GPU; errors are
// asynchronous like CUDA's: the first one is recorded in the session's status area and the done
// flag is still written, so a client stream never waits forever.
#pragma once

#include <cuda.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/executor.h"
#include "server/dataplane/buffer_registry.h"
#include "server/dataplane/gpu_time_sampler.h"
#include "server/dataplane/ring_reader.h"
#include "server/dataplane/shm_ring.h"
#include "server/telemetry/op_tally.h"

namespace ligerd::dataplane {

struct RunnerStats {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> failed_ops{0};
};

// Where the runner's op counts, sampled GPU times and errors go (telemetry/store.h).
struct RunnerTelemetry {
  telemetry::Store* store = nullptr;  // null: not counted
  std::string job;                    // the session's job name
  uint32_t sample_every = 64;         // time one launch in this many (0: never)
};

class RemoteRunner {
 public:
  // `flags` holds the mapped flag page; `op_names` is the catalogue in op-id order.
  static absl::StatusOr<std::unique_ptr<RemoteRunner>> Start(int device, kernels::Executor* executor,
                                                             const ShmRing* ring, const BufferRegistry* buffers,
                                                             BufferRef flags, uint32_t slots,
                                                             std::vector<std::string> op_names,
                                                             RunnerTelemetry telemetry = {});
  ~RemoteRunner();  // stops the thread, waits for the session's stream, frees its scratch

  const RunnerStats& stats() const { return stats_; }
  // Scratch memory this runner holds on the GPU (read from any thread).
  size_t scratch_bytes() const { return scratch_bytes_.load(std::memory_order_relaxed); }

 private:
  RemoteRunner() = default;
  void Loop();
  absl::Status RunOne(const ring::OpRecord& record);
  void Fail(const ring::OpRecord& record, const absl::Status& status);
  absl::Status EnsureWorkspace(size_t bytes);

  int device_ = 0;
  kernels::Executor* executor_ = nullptr;
  const ShmRing* ring_ = nullptr;
  const BufferRegistry* buffers_ = nullptr;
  BufferRef flags_;
  uint32_t slots_ = 0;
  std::vector<std::string> op_names_;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
  CUdeviceptr workspace_ = 0;
  size_t workspace_bytes_ = 0;
  std::unique_ptr<RingReader> reader_;
  RunnerStats stats_;
  std::atomic<size_t> scratch_bytes_{0};
  RunnerTelemetry telemetry_;
  std::unique_ptr<telemetry::OpTally> tally_;      // runner thread only
  std::unique_ptr<GpuTimeSampler> sampler_;       // runner thread only (and the destructor)
  bool error_recorded_ = false;  // touched only by the runner thread
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ligerd::dataplane
