#include "server/dataplane/remote_runner.h"

#include <chrono>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda_driver.h"
#include "kernels/status_macros.h"
#include "server/dataplane/record_validation.h"
#include "server/logging.h"

namespace ligerd::dataplane {
namespace {

using ring::kReleaseAhead;
using ring::kStreamFlagBytes;
// After the ring runs dry the thread keeps polling this long before it starts sleeping: ops
// arrive in bursts (a layer's forward), and a sleeping reader adds its wake-up to the latency.
constexpr auto kSpinWindow = std::chrono::microseconds(2000);
constexpr auto kIdleSleep = std::chrono::microseconds(50);

CUdeviceptr SlotFlags(const BufferRef& flags, uint32_t slot) {
  return reinterpret_cast<CUdeviceptr>(flags.mapping->base()) + slot * kStreamFlagBytes;
}
CUdeviceptr ReadyFlag(const BufferRef& flags, uint32_t slot) { return SlotFlags(flags, slot) + ring::kReadyFlagOffset; }
CUdeviceptr DoneFlag(const BufferRef& flags, uint32_t slot) { return SlotFlags(flags, slot) + ring::kDoneFlagOffset; }

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteRunner>> RemoteRunner::Start(int device, kernels::Executor* executor,
                                                                   const ShmRing* ring, const BufferRegistry* buffers,
                                                                   BufferRef flags, uint32_t slots,
                                                                   std::vector<std::string> op_names,
                                                                   RunnerTelemetry telemetry) {
  if (slots == 0 || slots > ring::kMaxStreamSlots) {
    return absl::InvalidArgumentError(absl::StrCat("AttachStreamFlags: slots must be 1..", ring::kMaxStreamSlots));
  }
  if (flags.size_bytes < uint64_t{slots} * kStreamFlagBytes) {
    return absl::InvalidArgumentError(absl::StrCat("AttachStreamFlags: the flag buffer has ", flags.size_bytes,
                                                   " bytes; ", slots, " slots need ", slots * kStreamFlagBytes));
  }
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  std::unique_ptr<RemoteRunner> runner(new RemoteRunner());
  runner->device_ = device;
  runner->executor_ = executor;
  runner->ring_ = ring;
  runner->buffers_ = buffers;
  runner->flags_ = std::move(flags);
  runner->slots_ = slots;
  runner->op_names_ = std::move(op_names);
  runner->reader_ = std::make_unique<RingReader>(ring);
  runner->telemetry_ = std::move(telemetry);
  runner->tally_ = std::make_unique<telemetry::OpTally>(runner->telemetry_.store, runner->telemetry_.job, "remote",
                                                        &runner->op_names_);
  runner->sampler_ = std::make_unique<GpuTimeSampler>(runner->telemetry_.store, "remote",
                                                      runner->telemetry_.sample_every);
  CUdevice dev;
  LIGERD_CU_CHECK(drv->cuDeviceGet(&dev, device));
  LIGERD_CU_CHECK(drv->cuDevicePrimaryCtxRetain(&runner->context_, dev));
  LIGERD_CU_CHECK(drv->cuCtxSetCurrent(runner->context_));
  LIGERD_CU_CHECK(drv->cuStreamCreate(&runner->stream_, CU_STREAM_NON_BLOCKING));
  runner->thread_ = std::thread([r = runner.get()] { r->Loop(); });
  return runner;
}

RemoteRunner::~RemoteRunner() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok() || context_ == nullptr) return;
  (*drv)->cuCtxSetCurrent(context_);
  if (stream_ != nullptr) {
    // Our stream may wait on ready flags a dead client will never write: write them ourselves,
    // so the stream drains before the mappings it uses are closed.
    const uint64_t release = reader_->next_sequence() + kReleaseAhead;
    for (uint32_t slot = 0; slot < slots_; ++slot) {
      (*drv)->cuMemcpyHtoD(ReadyFlag(flags_, slot), &release, sizeof(release));
    }
    (*drv)->cuStreamSynchronize(stream_);
    (*drv)->cuStreamDestroy(stream_);
  }
  // The stream has drained: the last samples are ready. Events go while the context is current.
  if (sampler_ != nullptr) sampler_->Poll();
  sampler_.reset();
  if (tally_ != nullptr) tally_->Flush();
  if (workspace_ != 0) (*drv)->cuMemFree(workspace_);
  CUdevice dev;
  if ((*drv)->cuDeviceGet(&dev, device_) == CUDA_SUCCESS) (*drv)->cuDevicePrimaryCtxRelease(dev);
}

void RemoteRunner::Loop() {
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok()) return;
  (*drv)->cuCtxSetCurrent(context_);
  auto last_op = std::chrono::steady_clock::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    absl::StatusOr<std::optional<ring::OpRecord>> next = reader_->Next();
    if (!next.ok()) {  // corrupted indices: nothing more in this ring can be trusted
      ring::OpRecord none{};
      none.sequence = reader_->next_sequence();
      none.stream_slot = UINT32_MAX;
      Fail(none, next.status());
      return;
    }
    tally_->MaybeFlush();
    sampler_->Poll();
    if (!next->has_value()) {
      if (std::chrono::steady_clock::now() - last_op > kSpinWindow) std::this_thread::sleep_for(kIdleSleep);
      continue;
    }
    last_op = std::chrono::steady_clock::now();
    const ring::OpRecord& record = **next;
    absl::Status status = RunOne(record);
    stats_.ops.fetch_add(1, std::memory_order_relaxed);
    if (!status.ok()) Fail(record, status);
  }
}

absl::Status RemoteRunner::EnsureWorkspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return absl::OkStatus();
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  // Ops already queued may still use the old scratch: let them finish before freeing it.
  LIGERD_CU_CHECK(drv->cuStreamSynchronize(stream_));
  if (workspace_ != 0) LIGERD_CU_CHECK(drv->cuMemFree(workspace_));
  workspace_ = 0;
  workspace_bytes_ = 0;
  scratch_bytes_.store(0, std::memory_order_relaxed);
  LIGERD_CU_CHECK(drv->cuMemAlloc(&workspace_, bytes));
  workspace_bytes_ = bytes;
  scratch_bytes_.store(bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status RemoteRunner::RunOne(const ring::OpRecord& record) {
  LIGERD_ASSIGN_OR_RETURN(const kernels::DriverApi* drv, kernels::Driver());
  RecordLimits limits{static_cast<uint32_t>(op_names_.size()), slots_, device_};
  absl::StatusOr<ValidatedOp> op = ValidateRecord(record, reader_->next_sequence() - 1, limits, *buffers_);
  if (!op.ok()) return op.status();
  const std::string& name = op_names_[op->op_id];
  // Order after the client's producers of the inputs, on the GPU, without a CPU wait.
  LIGERD_CU_CHECK(drv->cuStreamWaitValue64(stream_, ReadyFlag(flags_, op->stream_slot), op->sequence + 1,
                                           CU_STREAM_WAIT_VALUE_GEQ));
  const uint64_t bytes = telemetry::CallBytes(op->tensors);
  const bool timed = sampler_->Due();
  absl::Status launched = [&]() -> absl::Status {
    LIGERD_ASSIGN_OR_RETURN(size_t ws, executor_->WorkspaceBytes(name, op->tensors, op->scalars));
    LIGERD_RETURN_IF_ERROR(EnsureWorkspace(ws));
    if (timed) sampler_->Begin(stream_);  // after the wait on the client: times the kernels only
    absl::Status s = executor_->Launch(name, op->tensors, op->scalars, reinterpret_cast<void*>(workspace_),
                                       workspace_bytes_, stream_);
    if (timed) sampler_->End(stream_, name, bytes);
    return s;
  }();
  tally_->Count(op->op_id, telemetry::CallDType(op->tensors), bytes, !launched.ok());
  // Released whether or not the op ran: the client raises the recorded error, it never hangs.
  LIGERD_CU_CHECK(drv->cuStreamWriteValue64(stream_, DoneFlag(flags_, op->stream_slot), op->sequence + 1,
                                            CU_STREAM_WRITE_VALUE_DEFAULT));
  return launched;
}

void RemoteRunner::Fail(const ring::OpRecord& record, const absl::Status& status) {
  stats_.failed_ops.fetch_add(1, std::memory_order_relaxed);
  if (telemetry_.store != nullptr) {
    telemetry_.store->AddError(absl::AsciiStrToLower(absl::StrCat("remote_op_", absl::StatusCodeToString(status.code()))));
  }
  // Only the first error is kept, as with CUDA's sticky errors: it names the op that failed.
  if (!error_recorded_) {
    error_recorded_ = true;
    ring::SessionStatus* shared = ring_->status();
    const std::string op = record.op_id < op_names_.size() ? op_names_[record.op_id] : "unknown op";
    const std::string message = absl::StartsWith(status.message(), op) ? std::string(status.message())
                                                                       : absl::StrCat(op, ": ", status.message());
    shared->failed_sequence = record.sequence;
    shared->failed_op_id = record.op_id;
    const size_t n = std::min(message.size(), sizeof(shared->message));
    std::memcpy(shared->message, message.data(), n);
    shared->message_bytes = static_cast<uint32_t>(n);
    shared->error_code.store(static_cast<uint32_t>(status.code()), std::memory_order_release);  // publishes the above
    LIGERD_LOG(kWarning) << "remote op " << record.sequence << " failed: " << message;
  }
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok()) return;
  if (record.stream_slot < slots_) {  // release the client waiting on this op
    (*drv)->cuStreamWriteValue64(stream_, DoneFlag(flags_, record.stream_slot), record.sequence + 1,
                                 CU_STREAM_WRITE_VALUE_DEFAULT);
    return;
  }
  // A record we cannot place (bad slot, corrupted ring): release every slot, far ahead.
  const uint64_t release = record.sequence + kReleaseAhead;
  for (uint32_t slot = 0; slot < slots_; ++slot) {
    (*drv)->cuStreamWriteValue64(stream_, DoneFlag(flags_, slot), release, CU_STREAM_WRITE_VALUE_DEFAULT);
  }
}

}  // namespace ligerd::dataplane
