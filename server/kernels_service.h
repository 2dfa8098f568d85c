// ligerd.v1.Kernels: Tune (the node-wide autotuner, kernels/tuning/). The other methods answer
// UNIMPLEMENTED: local clients read the JIT cache and the tuning DB from the shared cache dir.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/tuning/tuner.h"
#include "ligerd/v1/kernels.grpc.pb.h"
#include "server/executor_pool.h"
#include "server/gpu_inventory.h"
#include "server/telemetry/store.h"

namespace ligerd {

using KernelsRawService = ligerd::v1::Kernels::WithRawCallbackMethod_Tune<ligerd::v1::Kernels::CallbackService>;

// A TuneRequest checked without touching the GPU: INVALID_ARGUMENT ("Kernels/Tune: shape #2
// (swiglu_fwd:bf16:0x14336): ...") for anything malformed. Exposed for tests.
absl::StatusOr<std::vector<kernels::TuneRequest>> ValidateTuneRpc(const ligerd::v1::TuneRequest& request);

class KernelsService final : public KernelsRawService {
 public:
  // `inventory`: the GPUs the daemon saw at start (none -> Tune is FAILED_PRECONDITION).
  // `telemetry` (may be null) counts tuning runs and their gains.
  KernelsService(ExecutorPool* executors, GpuInventory inventory, telemetry::Store* telemetry = nullptr)
      : executors_(executors), inventory_(std::move(inventory)), telemetry_(telemetry) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Tune(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;

  // Everything Tune checks before it starts: the request, then the GPU. Exposed for tests.
  absl::StatusOr<std::vector<kernels::TuneRequest>> Admit(const ligerd::v1::TuneRequest& request) const;

 private:
  friend class TuneReactor;
  ExecutorPool* executors_;
  const GpuInventory inventory_;
  telemetry::Store* telemetry_;
  absl::Mutex tune_mu_;  // one tune at a time: concurrent ones would disturb each other's timings
};

}  // namespace ligerd
