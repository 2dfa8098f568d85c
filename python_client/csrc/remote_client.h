// A protobuf-free face of ligerd::RemoteSession for the LibTorch extension.
//
// Why it exists: torch's wheel ships its own (older) google/protobuf headers in torch/include, which
// a torch extension sees before the system's, so any translation unit that includes torch headers
// cannot include gRPC/protobuf headers (remote_session.h does, through sessions.grpc.pb.h): protoc's
// generated code then fails its version check. This header names no protobuf or gRPC type; its
// .cc is compiled in a separate library without torch's include directories.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"

namespace ligerd {

class RemoteSession;

class RemoteClient {
 public:
  // requested_mode: "local", "remote" or "auto" (the daemon decides; see RemoteSession::Open).
  // Needs the device's CUDA context current on this thread.
  static absl::StatusOr<std::unique_ptr<RemoteClient>> Open(const std::string& socket_path, int device,
                                                            const std::string& requested_mode,
                                                            const std::string& client_name);
  ~RemoteClient();  // closes the session (best effort; may block up to an RPC deadline)

  bool remote() const;
  const std::string& reason() const;
  uint64_t session_id() const;
  absl::Status Submit(const std::string& op, std::span<const kernels::TensorView> tensors,
                      std::span<const double> scalars, CUstream stream);
  absl::Status Check() const;

 private:
  explicit RemoteClient(std::unique_ptr<RemoteSession> session);
  std::unique_ptr<RemoteSession> session_;
};

}  // namespace ligerd
