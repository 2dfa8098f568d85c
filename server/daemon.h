// The running daemon: the instance lock, the socket, the acceptor that checks peer credentials,
// and the gRPC server that admitted connections are handed to.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "server/admin_service.h"
#include "server/config.h"
#include "server/dataplane/stale_rings.h"
#include "server/info_service.h"
#include "server/instance_lock.h"
#include "server/kernels_service.h"
#include "server/peer_credentials.h"
#include "server/peer_table.h"
#include "server/session_registry.h"
#include "server/sessions_service.h"
#include "server/telemetry/history.h"
#include "server/telemetry/http_server.h"
#include "server/telemetry/node_telemetry.h"
#include "server/telemetry_service.h"
#include "server/unix_socket.h"

namespace ligerd {

class Daemon {
 public:
  // Takes the instance lock, prepares the directory, binds the socket, starts serving. Fails
  // (ALREADY_EXISTS) when another instance serves the same socket.
  // `opener` maps clients' CUDA IPC handles (not owned; outlives the daemon). `nvml` samples GPU
  // memory for telemetry (null: the system's NVML, if any). INVALID_ARGUMENT when
  // config.metrics_address cannot be served (an explicit address; the default falls back).
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonConfig& config, DaemonFacts facts,
                                                       dataplane::IpcOpener* opener,
                                                       SessionLimits limits = SessionLimits{},
                                                       telemetry::NvmlSampler nvml = nullptr);

  // Stops accepting, reports NOT_SERVING, gives in-flight RPCs `shutdown_grace_ms`, removes the
  // socket file. Idempotent; the destructor calls it.
  void Shutdown();
  ~Daemon();

  uint64_t refused_connections() const { return refused_.load(); }
  uint64_t accepted_connections() const { return accepted_.load(); }
  uint32_t active_sessions() const { return sessions_->active(); }
  // Connections admitted and not yet closed by gRPC (forgets closed ones first).
  size_t open_connections() { return peers_.Sweep(); }
  telemetry::NodeTelemetry& telemetry() { return *telemetry_; }
  // "http://127.0.0.1:9464" where /metrics and the dashboard are served; "" when off.
  std::string metrics_url() const { return http_ ? http_->url() : ""; }
  // Takes a history point now (the sampler does so every kHistoryIntervalMs).
  void SampleHistory();

  static constexpr int kHistoryIntervalMs = 2000;

 private:
  Daemon(const DaemonConfig& config, InstanceLock lock, ListeningSocket socket);
  void AcceptLoop();
  absl::Status StartTelemetry(const DaemonFacts& facts, telemetry::NvmlSampler nvml);

  DaemonConfig config_;
  InstanceLock lock_;
  std::shared_ptr<dataplane::LivenessMarker> liveness_;  // tells later daemons our rings are live
  ListeningSocket socket_;
  PeerPolicy policy_;
  PeerTable peers_;
  std::unique_ptr<ExecutorPool> executors_;
  std::unique_ptr<SessionRegistry> sessions_;
  std::unique_ptr<InfoService> info_;
  std::unique_ptr<SessionsService> sessions_service_;
  std::unique_ptr<KernelsService> kernels_service_;
  std::unique_ptr<telemetry::NodeTelemetry> telemetry_;
  telemetry::History history_;
  std::unique_ptr<TelemetryService> telemetry_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  UniqueFd wake_fd_;  // eventfd that tells the acceptor to stop
  std::thread acceptor_;
  std::thread history_sampler_;  // wakes on wake_fd_ too
  std::unique_ptr<telemetry::HttpServer> http_;  // stopped first in Shutdown
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> accepted_{0};
};

}  // namespace ligerd
