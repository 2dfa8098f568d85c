// ligerd.v1.Telemetry: Snapshot (the node's telemetry now), Watch (a snapshot every interval),
// Report (local-dispatch clients' op statistics and their jobs' training numbers, in batches).
// Every call comes from an admitted connection (PeerTable); a report is attributed to the
// connection's SO_PEERCRED process, never to a pid the client claims.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "ligerd/v1/telemetry.grpc.pb.h"
#include "server/peer_table.h"
#include "server/session_registry.h"
#include "server/telemetry/node_telemetry.h"

namespace ligerd {

using TelemetryRawService = ligerd::v1::Telemetry::WithRawCallbackMethod_Snapshot<
    ligerd::v1::Telemetry::WithRawCallbackMethod_Watch<
        ligerd::v1::Telemetry::WithRawCallbackMethod_Report<ligerd::v1::Telemetry::Service>>>;

// Limits on one report (a client batches a few seconds of ops; anything bigger is a bug or abuse).
inline constexpr int kMaxReportOps = 1024;
inline constexpr int kMaxReportSamples = 4096;
inline constexpr int kMaxWatchers = 16;

// Checks a report and merges it into `telemetry` as coming from `peer` (exposed for tests).
// INVALID_ARGUMENT naming what is wrong; nothing is recorded then.
absl::Status ApplyReport(const ligerd::v1::ReportRequest& report, const PeerCredentials& peer,
                         telemetry::NodeTelemetry* telemetry);

class TelemetryService final : public TelemetryRawService {
 public:
  TelemetryService(telemetry::NodeTelemetry* telemetry, SessionRegistry* registry, const PeerTable* peers)
      : telemetry_(telemetry), registry_(registry), peers_(peers) {}

  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;

 private:
  friend class WatchReactor;
  telemetry::NodeTelemetry* telemetry_;
  SessionRegistry* registry_;
  const PeerTable* peers_;
  std::atomic<int> watchers_{0};
};

}  // namespace ligerd
