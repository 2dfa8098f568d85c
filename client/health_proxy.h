// A TCP face for the daemon's health, for Kubernetes' gRPC probes (`livenessProbe.grpc.port`):
// the kubelet dials a TCP port of the pod, and ligerd listens on a Unix socket only (its peer
// checks need SO_PEERCRED; a TCP listener would let anyone on the network in). This serves just
// grpc.health.v1.Health/Check on a TCP address and answers every Check with a Check of the daemon
// over its Unix socket, under a deadline: SERVING when the daemon says so, NOT_SERVING when it
// says anything else, does not answer in time, or is gone. Nothing else is reachable through it.
// Run as `ligerctl health-proxy --listen=0.0.0.0:8081` in a sidecar container
// (deploy/k8s/base/node-daemon/daemonset.yaml): probes defined on the daemon's container reach it
// through the pod's shared network namespace, so the kubelet restarts the daemon when it is
// unhealthy.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ligerd {

class HealthProxy {
 public:
  // Listens on `listen_address` ("host:port"; port 0 picks one, see port()).
  static absl::StatusOr<std::unique_ptr<HealthProxy>> Start(
      const std::string& listen_address, const std::string& daemon_socket,
      std::chrono::milliseconds deadline = std::chrono::milliseconds(1000));
  ~HealthProxy();

  int port() const { return port_; }
  void Wait() { server_->Wait(); }
  void Shutdown();

 private:
  class Service;
  HealthProxy() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace ligerd
