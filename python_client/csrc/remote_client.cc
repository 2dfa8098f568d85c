#include "python_client/csrc/remote_client.h"

#include "absl/strings/str_cat.h"
#include "client/remote_session.h"

namespace ligerd {

RemoteClient::RemoteClient(std::unique_ptr<RemoteSession> session) : session_(std::move(session)) {}
RemoteClient::~RemoteClient() = default;

absl::StatusOr<std::unique_ptr<RemoteClient>> RemoteClient::Open(const std::string& socket_path, int device,
                                                                  const std::string& requested_mode,
                                                                  const std::string& client_name) {
  using R = ligerd::v1::OpenSessionRequest;
  RemoteSessionOptions options;
  if (requested_mode == "remote") {
    options.requested = R::DISPATCH_REMOTE;
  } else if (requested_mode == "local") {
    options.requested = R::DISPATCH_LOCAL;
  } else if (requested_mode == "auto") {
    options.requested = R::DISPATCH_AUTO;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("requested mode must be local, remote or auto; got '", requested_mode, "'"));
  }
  options.socket_path = socket_path;
  options.device = device;
  options.client_name = client_name;
  absl::StatusOr<std::unique_ptr<RemoteSession>> session = RemoteSession::Open(options);
  if (!session.ok()) return session.status();
  return std::unique_ptr<RemoteClient>(new RemoteClient(std::move(*session)));
}

bool RemoteClient::remote() const { return session_->remote(); }
const std::string& RemoteClient::reason() const { return session_->dispatch_reason(); }
uint64_t RemoteClient::session_id() const { return session_->session_id(); }
absl::Status RemoteClient::Check() const { return session_->Check(); }
absl::Status RemoteClient::Submit(const std::string& op, std::span<const kernels::TensorView> tensors,
                                  std::span<const double> scalars, CUstream stream) {
  return session_->Submit(op, tensors, scalars, stream);
}

}  // namespace ligerd
