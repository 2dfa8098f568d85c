// ligerd.v1.Info: version, build, GPUs and MPS state, the op catalogue, and live counters.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "ligerd/v1/info.grpc.pb.h"
#include "server/gpu_inventory.h"

namespace ligerd {

struct OpSummary {
  std::string name;
  std::string description;
  uint32_t variant_count = 0;
};

// What Info reports that does not change while the daemon runs.
struct DaemonFacts {
  std::string socket_path;
  std::string cache_dir;
  GpuInventory inventory;
  std::vector<OpSummary> ops;
};

class InfoService final
    : public ligerd::v1::Info::WithRawCallbackMethod_GetInfo<ligerd::v1::Info::Service> {
 public:
  InfoService(DaemonFacts facts, std::function<uint32_t()> active_sessions);

  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;

  // The answer itself, separate from transport so it can be tested and reused by ligerctl output.
  void Fill(const ligerd::v1::GetInfoRequest& request, ligerd::v1::GetInfoResponse* response) const;

 private:
  DaemonFacts facts_;
  std::function<uint32_t()> active_sessions_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace ligerd
