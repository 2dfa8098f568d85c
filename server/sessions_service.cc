#include "server/sessions_service.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kernels/catalogue.h"
#include "server/build_info.h"
#include "server/raw_unary.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

absl::StatusOr<std::shared_ptr<Session>> SessionsService::Authenticated(grpc::CallbackServerContext* context,
                                                                        uint64_t session_id,
                                                                        const std::string& token) {
  absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
  if (!peer.ok()) return peer.status();
  return registry_->Authenticate(session_id, token, *peer);
}

grpc::ServerUnaryReactor* SessionsService::OpenSession(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::OpenSessionRequest, v1::OpenSessionResponse>(
      context, request, response, "Sessions/OpenSession",
      [&](const v1::OpenSessionRequest& req, v1::OpenSessionResponse* resp) -> absl::Status {
        absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
        if (!peer.ok()) return peer.status();
        absl::StatusOr<std::shared_ptr<Session>> session =
            registry_->Open(req, *peer, kMinProtocolVersion, kProtocolVersion);
        if (!session.ok()) {
          if (telemetry_ != nullptr) {
            telemetry_->AddError(absl::AsciiStrToLower(
                absl::StrCat("open_session_", absl::StatusCodeToString(session.status().code()))));
          }
          return session.status();
        }
        const Session& s = **session;
        resp->set_session_id(s.id());
        resp->set_token(s.token());
        resp->set_ring_name(s.ring().name());
        resp->set_ring_records(s.ring().capacity());
        resp->set_ring_record_bytes(sizeof(ring::OpRecord));
        resp->set_dispatch(s.dispatch().mode);
        resp->set_dispatch_reason(s.dispatch().reason);
        resp->set_heartbeat_interval_ms(registry_->limits().heartbeat_interval_ms);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SessionsService::Heartbeat(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::HeartbeatRequest, v1::HeartbeatResponse>(
      context, request, response, "Sessions/Heartbeat",
      [&](const v1::HeartbeatRequest& req, v1::HeartbeatResponse*) -> absl::Status {
        return Authenticated(context, req.session_id(), req.token()).status();
      });
}

grpc::ServerUnaryReactor* SessionsService::CloseSession(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::CloseSessionRequest, v1::CloseSessionResponse>(
      context, request, response, "Sessions/CloseSession",
      [&](const v1::CloseSessionRequest& req, v1::CloseSessionResponse*) -> absl::Status {
        absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
        if (!peer.ok()) return peer.status();
        return registry_->Close(req.session_id(), req.token(), *peer);
      });
}

grpc::ServerUnaryReactor* SessionsService::RegisterBuffer(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::RegisterBufferRequest, v1::RegisterBufferResponse>(
      context, request, response, "Sessions/RegisterBuffer",
      [&](const v1::RegisterBufferRequest& req, v1::RegisterBufferResponse*) -> absl::Status {
        auto session = Authenticated(context, req.session_id(), req.token());
        if (!session.ok()) return session.status();
        return (*session)->buffers().Register(req.buffer_id(), req.ipc_handle(), req.size_bytes(),
                                              static_cast<int>(req.device()), req.client_base());
      });
}

grpc::ServerUnaryReactor* SessionsService::UnregisterBuffer(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::UnregisterBufferRequest, v1::UnregisterBufferResponse>(
      context, request, response, "Sessions/UnregisterBuffer",
      [&](const v1::UnregisterBufferRequest& req, v1::UnregisterBufferResponse*) -> absl::Status {
        auto session = Authenticated(context, req.session_id(), req.token());
        if (!session.ok()) return session.status();
        return (*session)->buffers().Unregister(req.buffer_id());
      });
}

grpc::ServerUnaryReactor* SessionsService::AttachStreamFlags(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request,
                                                             grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::AttachStreamFlagsRequest, v1::AttachStreamFlagsResponse>(
      context, request, response, "Sessions/AttachStreamFlags",
      [&](const v1::AttachStreamFlagsRequest& req, v1::AttachStreamFlagsResponse*) -> absl::Status {
        auto session = Authenticated(context, req.session_id(), req.token());
        if (!session.ok()) return session.status();
        // The request's own mistakes first, then whether this machine can run it at all.
        if (absl::Status s = (*session)->buffers().Find(req.buffer_id()).status(); !s.ok()) return s;
        absl::StatusOr<kernels::Executor*> executor = executors_->ForDevice((*session)->device());
        if (!executor.ok()) return executor.status();
        std::vector<std::string> op_names;
        for (const kernels::OpSpec* op : kernels::AllOps()) op_names.push_back(op->name);
        dataplane::RunnerTelemetry telemetry{telemetry_, (*session)->job(), sample_every_};
        return (*session)->StartRemote(*executor, req.buffer_id(), req.slots(), std::move(op_names),
                                       std::move(telemetry));
      });
}

}  // namespace ligerd
