#include "client/health_proxy.h"

#include "absl/strings/str_cat.h"
#include "client/control_client.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace ligerd {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

class HealthProxy::Service final : public grpc::health::v1::Health::Service {
 public:
  Service(std::string socket, std::chrono::milliseconds deadline) : socket_(std::move(socket)), deadline_(deadline) {}

  grpc::Status Check(grpc::ServerContext*, const HealthCheckRequest* request, HealthCheckResponse* response) override {
    if (!request->service().empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
    // A fresh client per check: a channel that once failed waits out gRPC's reconnect backoff,
    // which would make a restarted daemon look dead for seconds.
    ControlClient daemon(socket_, deadline_);
    absl::StatusOr<HealthCheckResponse::ServingStatus> status = daemon.Health();
    response->set_status(status.ok() && *status == HealthCheckResponse::SERVING ? HealthCheckResponse::SERVING
                                                                                 : HealthCheckResponse::NOT_SERVING);
    return grpc::Status::OK;
  }

 private:
  const std::string socket_;
  const std::chrono::milliseconds deadline_;
};

absl::StatusOr<std::unique_ptr<HealthProxy>> HealthProxy::Start(const std::string& listen_address,
                                                               const std::string& daemon_socket,
                                                               std::chrono::milliseconds deadline) {
  std::unique_ptr<HealthProxy> proxy(new HealthProxy());
  proxy->service_ = std::make_unique<Service>(daemon_socket, deadline);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &proxy->port_);
  builder.RegisterService(proxy->service_.get());
  builder.SetMaxReceiveMessageSize(4096);  // a HealthCheckRequest is a service name
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  proxy->server_ = builder.BuildAndStart();
  if (proxy->server_ == nullptr || proxy->port_ == 0)
    return absl::InvalidArgumentError(absl::StrCat("health proxy: cannot listen on ", listen_address));
  return proxy;
}

void HealthProxy::Shutdown() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
}

HealthProxy::~HealthProxy() { Shutdown(); }

}  // namespace ligerd
