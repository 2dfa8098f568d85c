#include "client/control_client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ligerd {

ControlClient::ControlClient(std::string socket_path, std::chrono::milliseconds deadline)
    : socket_path_(std::move(socket_path)), deadline_(deadline) {
  grpc::ChannelArguments args;
  // Fail fast instead of retrying quietly: the caller wants to know the daemon is not there.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  channel_ = grpc::CreateCustomChannel(absl::StrCat("unix:", socket_path_),
                                       grpc::InsecureChannelCredentials(), args);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  info_ = ligerd::v1::Info::NewStub(channel_);
  kernels_ = ligerd::v1::Kernels::NewStub(channel_);
}

void ControlClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + deadline_);
}

absl::Status ControlClient::FromGrpc(const grpc::Status& status, absl::string_view method) const {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = absl::StrCat("no ligerd answered on ", socket_path_, " (", message,
                           "); start one with `ligerd --socket=", socket_path_, "`");
  }
  // Servers that already name the method (Kernels/Tune does) are not prefixed twice.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StartsWith(message, method) ? message : absl::StrCat(method, ": ", message));
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> ControlClient::Health() {
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (absl::Status s = FromGrpc(status, "Health/Check"); !s.ok()) return s;
  return response.status();
}

absl::StatusOr<ligerd::v1::GetInfoResponse> ControlClient::GetInfo(const ligerd::v1::GetInfoRequest& request) {
  grpc::ClientContext context;
  SetDeadline(&context);
  ligerd::v1::GetInfoResponse response;
  grpc::Status status = info_->GetInfo(&context, request, &response);
  if (absl::Status s = FromGrpc(status, "Info/GetInfo"); !s.ok()) return s;
  return response;
}

absl::Status ControlClient::Tune(const ligerd::v1::TuneRequest& request,
                                 const std::function<void(const ligerd::v1::TuneProgress&)>& on_progress,
                                 std::chrono::seconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  std::unique_ptr<grpc::ClientReader<ligerd::v1::TuneProgress>> reader = kernels_->Tune(&context, request);
  ligerd::v1::TuneProgress progress;
  while (reader->Read(&progress)) {
    if (on_progress) on_progress(progress);
  }
  return FromGrpc(reader->Finish(), "Kernels/Tune");
}

}  // namespace ligerd
