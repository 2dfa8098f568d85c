// A trainer's session with ligerd for remote dispatch: ops are written to the session's ring and
// executed by the daemon on this process's tensors, mapped by CUDA IPC, ordered against this
// process's streams by flags on the GPU, so the CPU never waits (ARCHITECTURE.md, data plane).
//
// Used by the Python extension (ligerd._C) and by C++ trainers and tests. Thread-compatible: one
// thread submits at a time (the Python client holds the GIL).
#pragma once

#include <cuda.h>

#include <atomic>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "client/control_client.h"
#include "client/ring_writer.h"
#include "kernels/tensor_view.h"
#include "ligerd/v1/sessions.grpc.pb.h"

namespace ligerd {

struct RemoteSessionOptions {
  std::string socket_path;
  int device = 0;  // the daemon's ordinal for this process's current device
  ligerd::v1::OpenSessionRequest::Dispatch requested = ligerd::v1::OpenSessionRequest::DISPATCH_AUTO;
  std::string client_name;
  uint32_t stream_slots = 8;  // distinct client streams that may submit
  std::chrono::milliseconds rpc_deadline{2000};
};

class RemoteSession {
 public:
  // Opens a session, and when the daemon chose remote dispatch, sets up the flag page. A current
  // CUDA context for the device is required (torch's primary context).
  static absl::StatusOr<std::unique_ptr<RemoteSession>> Open(const RemoteSessionOptions& options);
  ~RemoteSession();  // closes the session (best effort) and frees the flag page

  bool remote() const { return dispatch_ == ligerd::v1::OpenSessionRequest::DISPATCH_REMOTE; }
  const std::string& dispatch_reason() const { return dispatch_reason_; }
  uint64_t session_id() const { return session_id_; }

  // Enqueues `op` (a catalogue name) on `stream`. Registers any allocation not seen before.
  // Returns the daemon's first asynchronous error if one was recorded, UNAVAILABLE once the
  // daemon is gone (within about a heartbeat interval), INVALID_ARGUMENT for tensors that cannot
  // be shared (host memory, VMM/expandable-segment allocations), FAILED_PRECONDITION while
  // `stream` is being captured into a CUDA graph (a replay would not reach the daemon).
  absl::Status Submit(std::string_view op, std::span<const kernels::TensorView> tensors,
                      std::span<const double> scalars, CUstream stream);

  // The first error the daemon recorded, or UNAVAILABLE when the daemon is gone; OK otherwise.
  absl::Status Check() const;

 private:
  RemoteSession() = default;
  absl::Status SetUpRemote(uint32_t slots);
  absl::StatusOr<uint64_t> BufferFor(const kernels::TensorView& t, uint64_t* byte_offset);
  absl::StatusOr<uint32_t> SlotFor(CUstream stream);
  void HeartbeatLoop();
  void ReleaseAllWaits();

  RemoteSessionOptions options_;
  std::unique_ptr<ControlClient> control_;
  std::unique_ptr<ligerd::v1::Sessions::Stub> sessions_;
  uint64_t session_id_ = 0;
  std::string token_;
  ligerd::v1::OpenSessionRequest::Dispatch dispatch_ = ligerd::v1::OpenSessionRequest::DISPATCH_LOCAL;
  std::string dispatch_reason_;
  uint32_t heartbeat_ms_ = 1000;
  std::unique_ptr<RingWriter> ring_;
  absl::flat_hash_map<std::string, uint32_t> op_ids_;
  CUcontext context_ = nullptr;
  CUdeviceptr flags_ = 0;
  CUstream control_stream_ = nullptr;  // non-blocking: for releasing waits
  uint32_t slots_ = 0;
  std::vector<CUstream> slot_streams_;
  struct Registered {
    CUdeviceptr base;
    size_t size;
  };
  absl::flat_hash_map<uint64_t, Registered> buffers_;  // by CU_POINTER_ATTRIBUTE_BUFFER_ID
  std::atomic<bool> daemon_gone_{false};
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

}  // namespace ligerd
