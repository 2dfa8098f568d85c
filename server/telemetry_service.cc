#include "server/telemetry_service.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include <cmath>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/catalogue.h"
#include "server/raw_unary.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

namespace {

bool KnownOp(const std::string& name) {
  for (const kernels::OpSpec* op : kernels::AllOps()) {
    if (op->name == name) return true;
  }
  return false;
}

bool KnownDType(const std::string& dtype) {
  for (const char* d : {"float32", "float16", "bfloat16", "int32", "int64", "float64", "none"}) {
    if (dtype == d) return true;
  }
  return false;
}

bool Finite(double x) { return std::isfinite(x); }

}  // namespace

absl::Status ApplyReport(const v1::ReportRequest& r, const PeerCredentials& peer,
                         telemetry::NodeTelemetry* telemetry) {
  const char* m = "Telemetry/Report";
  if (r.pid() != 0 && r.pid() != static_cast<uint32_t>(peer.pid)) {
    return absl::InvalidArgumentError(
        absl::StrCat(m, ": pid ", r.pid(), " is not the reporting process (pid ", peer.pid, ")"));
  }
  if (r.ops_size() > kMaxReportOps) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": ", r.ops_size(), " op entries; at most ", kMaxReportOps,
                                                   " per report"));
  }
  int samples = 0;
  for (const v1::OpStats& op : r.ops()) {
    if (!KnownOp(op.op())) return absl::InvalidArgumentError(absl::StrCat(m, ": unknown op '", op.op(), "'"));
    if (!KnownDType(op.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(m, ": op ", op.op(), ": unknown dtype '", op.dtype(), "'"));
    }
    if (op.errors_total() > op.calls_total()) {
      return absl::InvalidArgumentError(absl::StrCat(m, ": op ", op.op(), ": more errors than calls"));
    }
    samples += op.gpu_seconds_samples_size();
    for (double s : op.gpu_seconds_samples()) {
      if (!Finite(s) || s < 0 || s > 3600) {
        return absl::InvalidArgumentError(absl::StrCat(m, ": op ", op.op(), ": GPU time sample ", s,
                                                       " s is not a time"));
      }
    }
  }
  if (samples > kMaxReportSamples) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": ", samples, " GPU time samples; at most ",
                                                   kMaxReportSamples, " per report"));
  }
  const v1::JobStats& j = r.job_stats();
  for (double x : {j.tokens_per_second(), j.step_seconds(), j.loss()}) {
    if (!Finite(x)) return absl::InvalidArgumentError(absl::StrCat(m, ": job statistics must be finite numbers"));
  }
  if (j.tokens_per_second() < 0 || j.step_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": tokens/s and step time cannot be negative"));
  }
  if (!Finite(r.jit().compile_seconds_total()) || r.jit().compile_seconds_total() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(m, ": JIT compile seconds must be a non-negative number"));
  }

  const std::string job = JobLabel(r.job(), peer.pid);
  telemetry::Store& store = telemetry->store();
  telemetry::JobProcess process;
  process.pid = peer.pid;
  process.uid = peer.uid;
  process.job = job;
  process.user = telemetry::UserName(peer.uid);
  process.command = telemetry::ProcessCommandLine(peer.pid);
  process.dispatch = r.ops_size() > 0 ? "local" : "";
  process.last_seen = std::chrono::steady_clock::now();
  store.NoteProcess(process);
  for (const v1::OpStats& op : r.ops()) {
    const std::string dtype = op.dtype().empty() ? "none" : op.dtype();
    store.AddOps(telemetry::OpKey{op.op(), telemetry::DirectionOf(op.op()), dtype, "local", job},
                 telemetry::OpTotals{op.calls_total(), op.errors_total(), op.bytes_moved_total()});
    if (op.gpu_seconds_samples_size() > 0) {
      telemetry::GpuTimeHistogram h;
      // The report's sampled bytes belong to its samples as a whole; spread evenly.
      const uint64_t n = static_cast<uint64_t>(op.gpu_seconds_samples_size());
      for (int i = 0; i < op.gpu_seconds_samples_size(); ++i) {
        h.Observe(op.gpu_seconds_samples(i), op.sampled_bytes() / n + (static_cast<uint64_t>(i) < op.sampled_bytes() % n));
      }
      store.MergeGpuTime(op.op(), "local", h);
    }
    if (op.errors_total() > 0) store.AddError("local_op_error", op.errors_total());
  }
  telemetry::JobStats stats;
  stats.tokens = j.tokens_total();
  stats.steps = j.steps_total();
  stats.tokens_per_second = j.tokens_per_second();
  stats.step_seconds = j.step_seconds();
  stats.loss = j.loss();
  stats.has_loss = j.has_loss();
  stats.peak_allocated_bytes = j.peak_allocated_bytes();
  stats.memory_saved_bytes = j.memory_saved_bytes();
  store.ReportJob(job, stats, r.has_tokens_per_second());
  const v1::JitStats& jit = r.jit();
  store.AddClientJit(telemetry::JitDelta{jit.memory_hits_total(), jit.disk_hits_total(), jit.misses_total(),
                                         jit.compiles_total(), jit.compile_failures_total(),
                                         jit.compile_seconds_total()});
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* TelemetryService::Snapshot(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::SnapshotRequest, v1::SnapshotResponse>(
      context, request, response, "Telemetry/Snapshot",
      [&](const v1::SnapshotRequest&, v1::SnapshotResponse* resp) -> absl::Status {
        absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
        if (!peer.ok()) return peer.status();
        *resp = telemetry_->Snapshot();
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* TelemetryService::Report(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::ReportRequest, v1::ReportResponse>(
      context, request, response, "Telemetry/Report",
      [&](const v1::ReportRequest& req, v1::ReportResponse*) -> absl::Status {
        absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
        if (!peer.ok()) return peer.status();
        if (req.session_id() != 0) {
          absl::Status owned = registry_->Authenticate(req.session_id(), req.token(), *peer).status();
          if (!owned.ok()) {
            telemetry_->store().AddReport(false);
            return owned;
          }
        }
        absl::Status applied = ApplyReport(req, *peer, telemetry_);
        telemetry_->store().AddReport(applied.ok());
        if (!applied.ok()) telemetry_->store().AddError("report_rejected");
        return applied;
      });
}

// Sends a snapshot every interval from its own thread until the client goes away or the server
// shuts down (which cancels the call).
class WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  WatchReactor(TelemetryService* service, absl::Duration interval) : service_(service), interval_(interval) {
    worker_ = std::thread([this] { Run(); });
  }
  explicit WatchReactor(const absl::Status& refused) { Finish(ToGrpcStatus(refused)); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) cancelled_ = true;
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  void OnDone() override {
    if (worker_.joinable()) worker_.join();
    if (service_ != nullptr) service_->watchers_.fetch_sub(1);
    delete this;
  }

 private:
  void Run() {
    while (true) {
      v1::SnapshotResponse snapshot = service_->telemetry_->Snapshot();
      bool own = false;
      absl::MutexLock lock(&mu_);
      if (cancelled_) break;
      if (!writing_) {  // a slow reader skips snapshots instead of queueing them
        buffer_.Clear();
        if (grpc::SerializationTraits<v1::SnapshotResponse>::Serialize(snapshot, &buffer_, &own).ok()) {
          writing_ = true;
          StartWrite(&buffer_);
        }
      }
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancelled_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), interval_)) break;
    }
    // Finish once no write is in flight.
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_; };
    mu_.Await(absl::Condition(&idle));
    Finish(grpc::Status::OK);
  }

  TelemetryService* service_ = nullptr;
  absl::Duration interval_;
  std::thread worker_;
  absl::Mutex mu_;
  grpc::ByteBuffer buffer_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* TelemetryService::Watch(grpc::CallbackServerContext* context,
                                                                    const grpc::ByteBuffer* request_bytes) {
  v1::WatchRequest request;
  grpc::ByteBuffer copy(*request_bytes);
  if (!grpc::SerializationTraits<v1::WatchRequest>::Deserialize(&copy, &request).ok()) {
    return new WatchReactor(absl::InvalidArgumentError("Telemetry/Watch: the request is not a valid WatchRequest"));
  }
  if (absl::Status peer = peers_->Lookup(context->peer()).status(); !peer.ok()) return new WatchReactor(peer);
  if (watchers_.fetch_add(1) >= kMaxWatchers) {
    watchers_.fetch_sub(1);
    return new WatchReactor(absl::ResourceExhaustedError(
        absl::StrCat("Telemetry/Watch: ", kMaxWatchers, " watchers already; poll Snapshot instead")));
  }
  const uint32_t ms = std::clamp<uint32_t>(request.interval_ms() == 0 ? 1000 : request.interval_ms(), 100, 60000);
  return new WatchReactor(this, absl::Milliseconds(ms));
}

}  // namespace ligerd
