// C++ client of ligerd's control plane (used by ligerctl, tests and C++ trainers): one channel to
// the daemon's Unix socket, every call with a deadline so a dead daemon is an error, not a hang.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ligerd/v1/info.grpc.pb.h"
#include "ligerd/v1/kernels.grpc.pb.h"

namespace ligerd {

class ControlClient {
 public:
  // `socket_path` is a file path (no "unix:" prefix). Connecting is lazy; calls fail with
  // UNAVAILABLE naming the socket when nobody serves it.
  explicit ControlClient(std::string socket_path,
                         std::chrono::milliseconds deadline = std::chrono::milliseconds(2000));

  // grpc.health.v1 status of the whole server ("" service).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health();
  absl::StatusOr<ligerd::v1::GetInfoResponse> GetInfo(const ligerd::v1::GetInfoRequest& request = {});
  // Kernels/Tune: calls `on_progress` for every streamed message. No deadline beyond
  // `timeout` (tuning many shapes takes minutes); the daemon stops if the client goes away.
  absl::Status Tune(const ligerd::v1::TuneRequest& request,
                    const std::function<void(const ligerd::v1::TuneProgress&)>& on_progress,
                    std::chrono::seconds timeout = std::chrono::seconds(3600));

  const std::string& socket_path() const { return socket_path_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  absl::Status FromGrpc(const grpc::Status& status, absl::string_view method) const;
  void SetDeadline(grpc::ClientContext* context) const;

  std::string socket_path_;
  std::chrono::milliseconds deadline_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<ligerd::v1::Info::Stub> info_;
  std::unique_ptr<ligerd::v1::Kernels::Stub> kernels_;
};

}  // namespace ligerd
