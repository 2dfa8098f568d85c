#include "client/remote_session.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_driver.h"
#include "kernels/status_macros.h"
#include "proto/ligerd/ring_layout.h"

namespace ligerd {
namespace {

namespace v1 = ::ligerd::v1;
using ring::kReleaseAhead;
using ring::kStreamFlagBytes;

// The protocol this source tree speaks (LIGERD_PROTOCOL_VERSION in the top-level CMakeLists.txt,
// defined for every target that links ligerd_proto; the daemon accepts a range around its own).
constexpr uint32_t kClientProtocolVersion = LIGERD_PROTOCOL_VERSION;
// A full ring means the daemon is more than a ring of ops behind; give it this long before
// calling it stuck. Still well under the 2 s a dead daemon may take to be reported.
constexpr std::chrono::milliseconds kRingFullTimeout{1500};

absl::Status FromGrpc(const grpc::Status& s, absl::string_view call) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(call, ": ", s.error_message()));
}

ring::RingDType RingDTypeOf(kernels::DType t) { return static_cast<ring::RingDType>(t); }

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteSession>> RemoteSession::Open(const RemoteSessionOptions& options) {
  std::unique_ptr<RemoteSession> s(new RemoteSession());
  s->options_ = options;
  s->control_ = std::make_unique<ControlClient>(options.socket_path, options.rpc_deadline);
  s->sessions_ = v1::Sessions::NewStub(s->control_->channel());

  // The catalogue order is the op id space of this daemon's ring.
  absl::StatusOr<v1::GetInfoResponse> info = s->control_->GetInfo();
  if (!info.ok()) return info.status();
  for (int i = 0; i < info->ops_size(); ++i) s->op_ids_[info->ops(i).name()] = static_cast<uint32_t>(i);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options.rpc_deadline);
  v1::OpenSessionRequest request;
  request.set_protocol_version(kClientProtocolVersion);
  request.set_client_pid(static_cast<uint32_t>(getpid()));
  request.set_device(static_cast<uint32_t>(options.device));
  request.set_client_name(options.client_name);
  request.set_requested_dispatch(options.requested);
  v1::OpenSessionResponse response;
  LIGERD_RETURN_IF_ERROR(FromGrpc(s->sessions_->OpenSession(&context, request, &response), "OpenSession"));
  s->session_id_ = response.session_id();
  s->token_ = response.token();
  s->dispatch_ = response.dispatch();
  s->dispatch_reason_ = response.dispatch_reason();
  s->heartbeat_ms_ = response.heartbeat_interval_ms() > 0 ? response.heartbeat_interval_ms() : 1000;
  if (s->remote()) {
    absl::StatusOr<RingWriter> ring = RingWriter::Open(response.ring_name(), s->session_id_, response.ring_records());
    if (!ring.ok()) return ring.status();
    s->ring_ = std::make_unique<RingWriter>(std::move(*ring));
    LIGERD_RETURN_IF_ERROR(s->SetUpRemote(options.stream_slots));
  }
  s->heartbeat_ = std::thread([p = s.get()] { p->HeartbeatLoop(); });
  return s;
}

absl::Status RemoteSession::SetUpRemote(uint32_t slots) {
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  LIGERD_CU_CHECK(drv->cuCtxGetCurrent(&context_));
  if (context_ == nullptr) return absl::FailedPreconditionError("remote session: no current CUDA context");
  if (slots == 0 || slots > ring::kMaxStreamSlots) {
    return absl::InvalidArgumentError(absl::StrCat("remote session: stream_slots must be 1..", ring::kMaxStreamSlots));
  }
  slots_ = slots;
  // Releasing waits must not queue behind the streams that wait (the legacy default stream would).
  LIGERD_CU_CHECK(drv->cuStreamCreate(&control_stream_, CU_STREAM_NON_BLOCKING));
  // A whole allocation of its own, so that it is registered (and exported) by itself.
  LIGERD_CU_CHECK(drv->cuMemAlloc(&flags_, slots * kStreamFlagBytes));
  LIGERD_CU_CHECK(drv->cuMemsetD8(flags_, 0, slots * kStreamFlagBytes));
  kernels::TensorView view;
  view.data = reinterpret_cast<void*>(flags_);
  uint64_t offset = 0;
  LIGERD_ASSIGN_OR_RETURN(uint64_t buffer_id, BufferFor(view, &offset));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.rpc_deadline);
  v1::AttachStreamFlagsRequest request;
  request.set_session_id(session_id_);
  request.set_token(token_);
  request.set_buffer_id(buffer_id);
  request.set_slots(slots);
  v1::AttachStreamFlagsResponse response;
  return FromGrpc(sessions_->AttachStreamFlags(&context, request, &response), "AttachStreamFlags");
}

RemoteSession::~RemoteSession() {
  stop_.store(true);
  if (heartbeat_.joinable()) heartbeat_.join();
  if (session_id_ != 0 && !daemon_gone_.load()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.rpc_deadline);
    v1::CloseSessionRequest request;
    request.set_session_id(session_id_);
    request.set_token(token_);
    v1::CloseSessionResponse response;
    sessions_->CloseSession(&context, request, &response);  // the daemon's runner drains first
  }
  if (flags_ != 0) {
    if (absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver(); drv.ok()) {
      (*drv)->cuCtxSetCurrent(context_);
      // Our streams may still wait on these flags: let them pass before the page goes away.
      ReleaseAllWaits();
      for (CUstream stream : slot_streams_) (*drv)->cuStreamSynchronize(stream);
      (*drv)->cuMemFree(flags_);
      (*drv)->cuStreamDestroy(control_stream_);
    }
  }
}

absl::StatusOr<uint64_t> RemoteSession::BufferFor(const kernels::TensorView& t, uint64_t* byte_offset) {
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  const auto ptr = reinterpret_cast<CUdeviceptr>(t.data);
  unsigned long long buffer_id = 0;
  if (drv->cuPointerGetAttribute(&buffer_id, CU_POINTER_ATTRIBUTE_BUFFER_ID, ptr) != CUDA_SUCCESS) {
    return absl::InvalidArgumentError("tensor is not in CUDA device memory of this process");
  }
  if (auto it = buffers_.find(buffer_id); it != buffers_.end()) {
    *byte_offset = ptr - it->second.base;
    return buffer_id;
  }
  CUdeviceptr base = 0;
  size_t size = 0;
  LIGERD_CU_CHECK(drv->cuMemGetAddressRange(&base, &size, ptr));
  CUipcMemHandle handle;
  if (drv->cuIpcGetMemHandle(&handle, base) != CUDA_SUCCESS) {
    return absl::InvalidArgumentError(
        "tensor memory cannot be shared by CUDA IPC (expandable segments / VMM allocations are not "
        "supported for remote dispatch; unset PYTORCH_CUDA_ALLOC_CONF=expandable_segments or use local dispatch)");
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.rpc_deadline);
  v1::RegisterBufferRequest request;
  request.set_session_id(session_id_);
  request.set_token(token_);
  request.set_buffer_id(buffer_id);
  request.set_ipc_handle(std::string(reinterpret_cast<const char*>(&handle), sizeof(handle)));
  request.set_size_bytes(size);
  request.set_device(static_cast<uint32_t>(options_.device));
  request.set_client_base(base);
  v1::RegisterBufferResponse response;
  LIGERD_RETURN_IF_ERROR(FromGrpc(sessions_->RegisterBuffer(&context, request, &response), "RegisterBuffer"));
  // Entries overlapping this range belong to freed allocations (the daemon drops them too).
  absl::erase_if(buffers_, [&](const auto& e) { return e.second.base < base + size && base < e.second.base + e.second.size; });
  buffers_[buffer_id] = {base, size};
  *byte_offset = ptr - base;
  return buffer_id;
}

absl::StatusOr<uint32_t> RemoteSession::SlotFor(CUstream stream) {
  for (uint32_t i = 0; i < slot_streams_.size(); ++i) {
    if (slot_streams_[i] == stream) return i;
  }
  if (slot_streams_.size() >= slots_) {
    return absl::ResourceExhaustedError(absl::StrCat("remote session: more than ", slots_,
                                                     " CUDA streams submitted ops; raise stream_slots"));
  }
  slot_streams_.push_back(stream);
  return static_cast<uint32_t>(slot_streams_.size() - 1);
}

absl::Status RemoteSession::Check() const {
  if (daemon_gone_.load()) {
    return absl::UnavailableError(absl::StrCat("ligerd on ", options_.socket_path,
                                               " stopped answering; session ", session_id_, " is gone"));
  }
  return ring_ ? ring_->SessionError() : absl::OkStatus();
}

absl::Status RemoteSession::Submit(std::string_view op, std::span<const kernels::TensorView> tensors,
                                   std::span<const double> scalars, CUstream stream) {
  LIGERD_RETURN_IF_ERROR(Check());
  const std::string op_name(op);  // Debian's abseil string_view is not std::string_view
  if (!remote()) return absl::FailedPreconditionError("session dispatches locally: " + dispatch_reason_);
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  // A CUDA graph replays GPU work only: the record pushed below would reach the daemon once, at
  // capture time, and no replay would run the op again (its outputs would go stale). Refuse
  // rather than capture that; the Python client runs captured ops in its own executor instead.
  // An error from the query (the legacy stream while another stream captures) counts as capturing.
  CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
  if (drv->cuStreamIsCapturing(stream, &capture) != CUDA_SUCCESS || capture != CU_STREAM_CAPTURE_STATUS_NONE) {
    return absl::FailedPreconditionError(absl::StrCat(
        op_name, ": the stream is being captured into a CUDA graph, and remote dispatch cannot be captured "
                 "(the daemon runs an op when its ring record is written, which a graph replay does not do); "
                 "run captured ops with a local executor"));
  }
  auto id = op_ids_.find(op_name);
  if (id == op_ids_.end()) return absl::NotFoundError(absl::StrCat("ligerd does not serve op '", op_name, "'"));
  if (tensors.size() > ring::kMaxTensors || scalars.size() > ring::kMaxScalars) {
    return absl::InvalidArgumentError(absl::StrCat(op_name, ": too many tensors or scalars for one record"));
  }
  ring::OpRecord record{};
  record.op_id = id->second;
  LIGERD_ASSIGN_OR_RETURN(record.stream_slot, SlotFor(stream));
  record.num_tensors = static_cast<uint32_t>(tensors.size());
  record.num_scalars = static_cast<uint32_t>(scalars.size());
  // A tensor with no elements has no memory to share (its pointer may be no allocation at all):
  // it rides on the start of a non-empty tensor's buffer of the same record (an allocation base,
  // aligned for any dtype), with an extent of 0 bytes, which the daemon's bound and overlap checks
  // accept and no kernel reads.
  const ring::TensorRef* carrier = nullptr;
  std::vector<size_t> empty;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const kernels::TensorView& t = tensors[i];
    ring::TensorRef& ref = record.tensors[i];
    if (!t.present()) continue;  // buffer_id 0: absent optional tensor
    if (std::any_of(t.sizes, t.sizes + t.ndim, [](int64_t s) { return s == 0; })) {
      empty.push_back(i);
    } else {
      absl::StatusOr<uint64_t> buffer = BufferFor(t, &ref.byte_offset);
      if (!buffer.ok()) return absl::Status(buffer.status().code(), absl::StrCat(op_name, ": tensor ", i, ": ", buffer.status().message()));
      ref.buffer_id = *buffer;
      carrier = &ref;
    }
    ref.dtype = static_cast<uint8_t>(RingDTypeOf(t.dtype));
    ref.ndim = static_cast<uint8_t>(t.ndim);
    for (int d = 0; d < t.ndim; ++d) {
      ref.sizes[d] = t.sizes[d];
      ref.strides[d] = t.strides[d];
    }
  }
  if (!empty.empty() && carrier == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op_name, ": every tensor is empty (nothing to run)"));
  }
  for (size_t i : empty) {
    record.tensors[i].buffer_id = carrier->buffer_id;
    record.tensors[i].byte_offset = 0;
  }
  for (size_t i = 0; i < scalars.size(); ++i) record.scalars[i] = scalars[i];

  const uint64_t sequence = ring_->next_sequence();
  const CUdeviceptr slot_flags = flags_ + record.stream_slot * kStreamFlagBytes;
  const CUdeviceptr ready = slot_flags + ring::kReadyFlagOffset;
  // Inputs are ready once everything queued before this point on `stream` has run.
  LIGERD_CU_CHECK(drv->cuStreamWriteValue64(stream, ready, sequence + 1, CU_STREAM_WRITE_VALUE_DEFAULT));
  absl::StatusOr<uint64_t> pushed = ring_->Push(record, kRingFullTimeout, [this] { return !daemon_gone_.load(); });
  if (!pushed.ok()) return pushed.status();
  // Consumers of the outputs queue behind this wait: the daemon writes done after the op ran.
  LIGERD_CU_CHECK(drv->cuStreamWaitValue64(stream, slot_flags + ring::kDoneFlagOffset, sequence + 1,
                                           CU_STREAM_WAIT_VALUE_GEQ));
  return absl::OkStatus();
}

void RemoteSession::ReleaseAllWaits() {
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok() || flags_ == 0) return;
  const uint64_t release = (ring_ ? ring_->next_sequence() : 0) + kReleaseAhead;
  for (uint32_t slot = 0; slot < slots_; ++slot) {
    const CUdeviceptr done = flags_ + slot * kStreamFlagBytes + ring::kDoneFlagOffset;
    (*drv)->cuStreamWriteValue64(control_stream_, done, release, CU_STREAM_WRITE_VALUE_DEFAULT);
  }
  (*drv)->cuStreamSynchronize(control_stream_);
}

void RemoteSession::HeartbeatLoop() {
  auto next = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (std::chrono::steady_clock::now() < next) continue;
    next = std::chrono::steady_clock::now() + std::chrono::milliseconds(heartbeat_ms_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(heartbeat_ms_));
    v1::HeartbeatRequest request;
    request.set_session_id(session_id_);
    request.set_token(token_);
    v1::HeartbeatResponse response;
    const grpc::Status status = sessions_->Heartbeat(&context, request, &response);
    if (status.ok()) continue;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE || status.error_code() == grpc::StatusCode::NOT_FOUND ||
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      daemon_gone_.store(true);
      // The daemon will never write the done flags our streams wait on: write them ourselves so
      // the GPU does not hang; Check() reports the loss at the next op.
      if (absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver(); drv.ok() && context_ != nullptr) {
        (*drv)->cuCtxSetCurrent(context_);
        ReleaseAllWaits();
      }
      return;
    }
  }
}

}  // namespace ligerd
