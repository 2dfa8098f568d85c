#include "server/kernels_service.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/logging.h"
#include "server/raw_unary.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

namespace {

constexpr int kMaxShapes = 256;
constexpr uint32_t kMaxTrials = 100;
constexpr int kDefaultTrials = 7;
constexpr const char* kMethod = "Kernels/Tune";

}  // namespace

absl::StatusOr<std::vector<kernels::TuneRequest>> ValidateTuneRpc(const v1::TuneRequest& request) {
  if (request.shapes_size() == 0)
    return absl::InvalidArgumentError(absl::StrCat(kMethod, ": no shapes to tune"));
  if (request.shapes_size() > kMaxShapes)
    return absl::InvalidArgumentError(
        absl::StrCat(kMethod, ": ", request.shapes_size(), " shapes; at most ", kMaxShapes, " per request"));
  if (request.trials() > kMaxTrials)
    return absl::InvalidArgumentError(absl::StrCat(kMethod, ": trials ", request.trials(), " > ", kMaxTrials));
  std::vector<kernels::TuneRequest> out;
  for (int i = 0; i < request.shapes_size(); ++i) {
    const v1::TuneShape& s = request.shapes(i);
    const std::string where = absl::StrCat(kMethod, ": shape #", i, " (", s.op(), ":", s.dtype(), ":", s.rows(),
                                           "x", s.cols(), "): ");
    kernels::TuneRequest r;
    r.op = s.op();
    absl::StatusOr<kernels::DType> dtype = kernels::ParseTuningDType(s.dtype());
    if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat(where, dtype.status().message()));
    r.dtype = *dtype;
    r.rows = s.rows();
    r.cols = s.cols();
    r.trials = request.trials() == 0 ? kDefaultTrials : static_cast<int>(request.trials());
    if (absl::Status st = kernels::ValidateTuneRequest(r); !st.ok())
      return absl::InvalidArgumentError(absl::StrCat(where, st.message()));
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<kernels::TuneRequest>> KernelsService::Admit(const v1::TuneRequest& request) const {
  // The request's own mistakes first, then whether this machine can run it at all.
  absl::StatusOr<std::vector<kernels::TuneRequest>> shapes = ValidateTuneRpc(request);
  if (!shapes.ok()) return shapes.status();
  if (inventory_.gpus.empty())
    return absl::FailedPreconditionError(absl::StrCat(
        kMethod, ": this ligerd has no GPU to tune on (",
        inventory_.status.empty() ? std::string("no device") : inventory_.status,
        "); run `ligerctl tune` against a daemon on a GPU machine"));
  bool known = false;
  for (const GpuDescription& g : inventory_.gpus) known |= g.index == static_cast<int>(request.device());
  if (!known)
    return absl::InvalidArgumentError(
        absl::StrCat(kMethod, ": device ", request.device(), " is not one of this daemon's GPUs"));
  return shapes;
}

// Runs the tune on its own thread and streams TuneProgress messages as it goes. Writes are
// queued (gRPC allows one outstanding write); Finish comes after the last write completes.
class TuneReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  TuneReactor(KernelsService* service, kernels::Executor* executor, std::vector<kernels::TuneRequest> shapes)
      : service_(service), executor_(executor), shapes_(std::move(shapes)) {
    worker_ = std::thread([this] { Run(); });
  }
  // A request refused before starting.
  explicit TuneReactor(const absl::Status& refused) {
    absl::MutexLock lock(&mu_);
    done_ = true;
    final_ = refused;
    MaybeFinishLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    if (!ok) {  // the client is gone: stop writing, let the worker notice through cancelled_
      cancelled_ = true;
      queue_.clear();
    }
    if (!queue_.empty()) {
      StartWrite(&queue_.front());
      return;
    }
    writing_ = false;
    MaybeFinishLocked();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  void OnDone() override {
    if (worker_.joinable()) worker_.join();
    delete this;
  }

 private:
  bool Push(const v1::TuneProgress& message) {
    grpc::ByteBuffer buffer;
    bool own = false;
    if (!grpc::SerializationTraits<v1::TuneProgress>::Serialize(message, &buffer, &own).ok()) return true;
    absl::MutexLock lock(&mu_);
    if (cancelled_) return false;
    queue_.push_back(std::move(buffer));
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
    return true;
  }

  void Run() {
    const absl::Status status = TuneAll();
    if (!status.ok()) {
      LIGERD_LOG(kWarning) << "tune failed: " << status.message();
    }
    absl::MutexLock lock(&mu_);
    done_ = true;
    final_ = status;
    MaybeFinishLocked();
  }

  absl::Status TuneAll() {
    const uint32_t count = static_cast<uint32_t>(shapes_.size());
    v1::TuneProgress waiting;
    waiting.set_shape_count(count);
    waiting.set_message("waiting for the GPU (one tune at a time)");
    if (!service_->tune_mu_.TryLock()) {
      if (!Push(waiting)) return absl::CancelledError(absl::StrCat(kMethod, ": cancelled"));
      service_->tune_mu_.Lock();
    }
    struct Unlock {
      absl::Mutex* mu;
      ~Unlock() { mu->Unlock(); }
    } unlock{&service_->tune_mu_};
    for (uint32_t i = 0; i < count; ++i) {
      const kernels::TuneRequest& r = shapes_[i];
      auto progress = [&](const std::string& line) {
        v1::TuneProgress p;
        p.set_shape_index(i);
        p.set_shape_count(count);
        p.set_message(line);
        return Push(p);
      };
      absl::StatusOr<kernels::TuneReport> report = kernels::Tune(*executor_, r, progress);
      if (telemetry::Store* store = service_->telemetry_; store != nullptr) {
        if (!report.ok()) {
          store->AddTuningRun(r.op, "", false, false, 0);
          store->AddError("tuning_failed");
        } else {
          const bool improved = kernels::FormatLaunchConfig(report->best_config) !=
                                kernels::FormatLaunchConfig(report->default_config);
          store->AddTuningRun(r.op, kernels::KeyString(report->key), true, improved,
                              report->best_ms > 0 ? report->default_ms / report->best_ms : 1.0);
        }
      }
      if (!report.ok()) return report.status();
      v1::TuneProgress done;
      done.set_shape_index(i);
      done.set_shape_count(count);
      v1::TuneResult* res = done.mutable_result();
      res->mutable_shape()->set_op(r.op);
      res->mutable_shape()->set_dtype(kernels::TuningDTypeName(r.dtype));
      res->mutable_shape()->set_rows(r.rows);
      res->mutable_shape()->set_cols(r.cols);
      res->set_bucket(kernels::KeyString(report->key));
      res->set_default_ms(report->default_ms);
      res->set_tuned_ms(report->best_ms);
      res->set_default_config(kernels::FormatLaunchConfig(report->default_config));
      res->set_tuned_config(kernels::FormatLaunchConfig(report->best_config));
      res->set_candidates(report->candidates);
      res->set_failed(report->failed);
      if (executor_->tuning_db() != nullptr) res->set_db_file(executor_->tuning_db()->file().string());
      done.set_message(absl::StrCat(res->bucket(), ": default ", res->default_config(), " ", report->default_ms,
                                    " ms, tuned ", res->tuned_config(), " ", report->best_ms, " ms"));
      LIGERD_LOG(kInfo) << "tuned " << done.message();
      if (!Push(done)) return absl::CancelledError(absl::StrCat(kMethod, ": cancelled"));
    }
    return absl::OkStatus();
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (done_ && !writing_ && !finished_) {
      finished_ = true;
      Finish(ToGrpcStatus(final_));
    }
  }

  KernelsService* service_ = nullptr;
  kernels::Executor* executor_ = nullptr;
  std::vector<kernels::TuneRequest> shapes_;
  std::thread worker_;
  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);  // front = the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_ ABSL_GUARDED_BY(mu_);
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* KernelsService::Tune(grpc::CallbackServerContext* context,
                                                                  const grpc::ByteBuffer* request_bytes) {
  (void)context;
  v1::TuneRequest request;
  grpc::ByteBuffer copy(*request_bytes);  // Deserialize consumes its buffer; the copy is a refcount
  if (!grpc::SerializationTraits<v1::TuneRequest>::Deserialize(&copy, &request).ok())
    return new TuneReactor(absl::InvalidArgumentError(
        absl::StrCat(kMethod, ": the request is not a valid ", v1::TuneRequest::descriptor()->full_name(),
                     " message")));
  absl::StatusOr<std::vector<kernels::TuneRequest>> shapes = Admit(request);
  if (!shapes.ok()) return new TuneReactor(shapes.status());
  absl::StatusOr<kernels::Executor*> executor = executors_->ForDevice(static_cast<int>(request.device()));
  if (!executor.ok()) {
    const absl::Status& s = executor.status();
    return new TuneReactor(absl::Status(s.code(), absl::StrCat(kMethod, ": ", s.message())));
  }
  return new TuneReactor(this, *executor, *std::move(shapes));
}

}  // namespace ligerd
