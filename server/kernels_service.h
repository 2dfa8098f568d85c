// ligerd.v1.Kernels: Tune (the node-wide autotuner, kernels/tuning/), and for clients that cannot
// read the node's cache dir themselves: GetModule (a compiled kernel from the JIT cache),
// GetLaunchConfig (a tuned config from the tuning DB) and Precompile (fill the JIT cache for some
// archs; kernels_lookup.cc).
#pragma once

#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/tuning/tuner.h"
#include "ligerd/v1/kernels.grpc.pb.h"
#include "server/executor_pool.h"
#include "server/gpu_inventory.h"
#include "server/peer_table.h"
#include "server/telemetry/store.h"

namespace ligerd {

using KernelsRawService = ligerd::v1::Kernels::WithRawCallbackMethod_Tune<
    ligerd::v1::Kernels::WithRawCallbackMethod_GetModule<ligerd::v1::Kernels::WithRawCallbackMethod_GetLaunchConfig<
        ligerd::v1::Kernels::WithRawCallbackMethod_Precompile<ligerd::v1::Kernels::CallbackService>>>>;

// A TuneRequest checked without touching the GPU: INVALID_ARGUMENT ("Kernels/Tune: shape #2
// (swiglu_fwd:bf16:0x14336): ...") for anything malformed. Exposed for tests.
absl::StatusOr<std::vector<kernels::TuneRequest>> ValidateTuneRpc(const ligerd::v1::TuneRequest& request);

class KernelsService final : public KernelsRawService {
 public:
  // `inventory`: the GPUs the daemon saw at start (none -> Tune is FAILED_PRECONDITION).
  // `telemetry` (may be null) counts tuning runs and their gains.
  // `cache_dir`: the JIT cache and tuning DB GetModule, GetLaunchConfig and Precompile use;
  // `peers` (may be null in tests of Tune alone) checks their callers as every RPC does.
  KernelsService(ExecutorPool* executors, GpuInventory inventory, telemetry::Store* telemetry = nullptr,
                 std::string cache_dir = "", const PeerTable* peers = nullptr)
      : executors_(executors), inventory_(std::move(inventory)), telemetry_(telemetry),
        cache_dir_(std::move(cache_dir)), peers_(peers) {}
  ~KernelsService() override;  // waits for a Precompile in progress

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Tune(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;

  grpc::ServerUnaryReactor* GetModule(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetLaunchConfig(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Precompile(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

  // Everything Tune checks before it starts: the request, then the GPU. Exposed for tests.
  absl::StatusOr<std::vector<kernels::TuneRequest>> Admit(const ligerd::v1::TuneRequest& request) const;

 private:
  friend class TuneReactor;
  ExecutorPool* executors_;
  const GpuInventory inventory_;
  telemetry::Store* telemetry_;
  const std::string cache_dir_;
  const PeerTable* peers_;
  absl::Mutex precompile_mu_;
  bool precompiling_ ABSL_GUARDED_BY(precompile_mu_) = false;  // one at a time: it uses every core
  std::thread precompile_thread_ ABSL_GUARDED_BY(precompile_mu_);
  absl::Mutex tune_mu_;  // one tune at a time: concurrent ones would disturb each other's timings
};

}  // namespace ligerd
