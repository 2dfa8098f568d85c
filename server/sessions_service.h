// ligerd.v1.Sessions: open/heartbeat/close sessions and register buffers. Every call is tied to
// the process that made it through PeerTable, so a session can only be used by its own process.
#pragma once

#include "ligerd/v1/sessions.grpc.pb.h"
#include "server/executor_pool.h"
#include "server/peer_table.h"
#include "server/session_registry.h"
#include "server/telemetry/store.h"

namespace ligerd {

using SessionsRawService = ligerd::v1::Sessions::WithRawCallbackMethod_AttachStreamFlags<
    ligerd::v1::Sessions::WithRawCallbackMethod_OpenSession<
    ligerd::v1::Sessions::WithRawCallbackMethod_Heartbeat<
        ligerd::v1::Sessions::WithRawCallbackMethod_CloseSession<
            ligerd::v1::Sessions::WithRawCallbackMethod_RegisterBuffer<
                ligerd::v1::Sessions::WithRawCallbackMethod_UnregisterBuffer<ligerd::v1::Sessions::Service>>>>>>;

class SessionsService final : public SessionsRawService {
 public:
  // `telemetry` (may be null) receives remote sessions' op counts, GPU-time samples and errors;
  // one launch in `sample_every` is timed.
  SessionsService(SessionRegistry* registry, const PeerTable* peers, ExecutorPool* executors,
                  telemetry::Store* telemetry = nullptr, uint32_t sample_every = 64)
      : registry_(registry), peers_(peers), executors_(executors), telemetry_(telemetry),
        sample_every_(sample_every) {}

  grpc::ServerUnaryReactor* OpenSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RegisterBuffer(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnregisterBuffer(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AttachStreamFlags(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                              grpc::ByteBuffer* response) override;

 private:
  // The session `session_id`, if the calling process owns it and `token` is right.
  absl::StatusOr<std::shared_ptr<Session>> Authenticated(grpc::CallbackServerContext* context, uint64_t session_id,
                                                         const std::string& token);

  SessionRegistry* registry_;
  const PeerTable* peers_;
  ExecutorPool* executors_;
  telemetry::Store* telemetry_;
  uint32_t sample_every_;
};

}  // namespace ligerd
