#include "server/admin_service.h"

#include <grpcpp/impl/codegen/proto_utils.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kernels/jit/jit_cache.h"
#include "server/logging.h"
#include "server/raw_unary.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

absl::StatusOr<uint64_t> ClearCacheFiles(const std::string& cache_dir, bool include_tuning_db) {
  namespace fs = std::filesystem;
  uint64_t removed = 0;
  auto remove_matching = [&](const fs::path& dir, std::initializer_list<const char*> extensions) -> absl::Status {
    std::error_code ec;
    if (!fs::exists(dir, ec)) return absl::OkStatus();
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (!e.is_regular_file(ec)) continue;
      const std::string ext = e.path().extension().string();
      bool match = false;
      for (const char* x : extensions) match = match || ext == x;
      if (!match) continue;
      if (fs::remove(e.path(), ec)) ++removed;
      if (ec) return absl::InternalError(absl::StrCat("cannot remove ", e.path().string(), ": ", ec.message()));
    }
    if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
    return absl::OkStatus();
  };
  if (absl::Status s = remove_matching(cache_dir, {".cubin", ".ptx"}); !s.ok()) return s;
  if (include_tuning_db) {
    if (absl::Status s = remove_matching(fs::path(cache_dir) / "tuning", {".tunedb"}); !s.ok()) return s;
  }
  return removed;
}

AdminService::AdminService(SessionRegistry* registry, const PeerTable* peers, std::string cache_dir,
                           std::function<void(bool)> set_serving)
    : registry_(registry), peers_(peers), cache_dir_(std::move(cache_dir)), set_serving_(std::move(set_serving)),
      daemon_uid_(geteuid()) {}

AdminService::~AdminService() {
  std::vector<std::thread> drains;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    drains.swap(drains_);
  }
  for (std::thread& t : drains) t.join();
}

absl::Status AdminService::CheckAdmin(grpc::CallbackServerContext* context, const char* method) const {
  absl::StatusOr<PeerCredentials> peer = peers_->Lookup(context->peer());
  if (!peer.ok()) return peer.status();
  if (peer->uid != daemon_uid_ && peer->uid != 0) {
    LIGERD_LOG(kWarning) << method << " refused to pid " << peer->pid << " uid " << peer->uid;
    return absl::PermissionDeniedError(absl::StrCat(method, ": only the daemon's user (uid ", daemon_uid_,
                                                    ") or root may do this; you are uid ", peer->uid));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminService::Drain(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
                                              grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::DrainRequest request;
  grpc::ByteBuffer copy(*request_bytes);
  if (!grpc::SerializationTraits<v1::DrainRequest>::Deserialize(&copy, &request).ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "Admin/Drain: the request is not a valid DrainRequest"));
    return reactor;
  }
  if (absl::Status s = CheckAdmin(context, "Admin/Drain"); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  registry_->SetDraining(true);
  if (set_serving_) set_serving_(false);
  LIGERD_LOG(kInfo) << "draining (Admin/Drain): new sessions are refused; " << registry_->active()
                    << " open, waiting up to " << std::min(request.timeout_ms(), kMaxDrainWaitMs) << " ms";
  const absl::Time deadline = absl::Now() + absl::Milliseconds(std::min(request.timeout_ms(), kMaxDrainWaitMs));
  // The wait runs off gRPC's callback threads; the reactor is finished from there.
  absl::MutexLock lock(&mu_);
  drains_.emplace_back([this, reactor, response_bytes, deadline] {
    while (registry_->active() > 0 && absl::Now() < deadline) {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(50))) break;
    }
    v1::DrainResponse response;
    response.set_sessions_left(registry_->active());
    bool own = false;
    reactor->Finish(grpc::SerializationTraits<v1::DrainResponse>::Serialize(response, response_bytes, &own));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::ClearCache(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::ClearCacheRequest, v1::ClearCacheResponse>(
      context, request, response, "Admin/ClearCache",
      [&](const v1::ClearCacheRequest& req, v1::ClearCacheResponse* resp) -> absl::Status {
        if (absl::Status s = CheckAdmin(context, "Admin/ClearCache"); !s.ok()) return s;
        absl::StatusOr<uint64_t> removed = ClearCacheFiles(cache_dir_, req.include_tuning_db());
        if (!removed.ok()) return absl::Status(removed.status().code(),
                                                absl::StrCat("Admin/ClearCache: ", removed.status().message()));
        // Kernels already loaded keep running; later lookups compile again.
        if (absl::StatusOr<std::shared_ptr<kernels::JitCache>> cache = kernels::JitCache::Shared(cache_dir_);
            cache.ok()) {
          (*cache)->DropMemoryLayer();
        }
        LIGERD_LOG(kInfo) << "Admin/ClearCache: removed " << *removed << " files from " << cache_dir_
                          << (req.include_tuning_db() ? " (tuning DB included)" : "");
        resp->set_entries_removed(*removed);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminService::SetLogLevel(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::SetLogLevelRequest, v1::SetLogLevelResponse>(
      context, request, response, "Admin/SetLogLevel",
      [&](const v1::SetLogLevelRequest& req, v1::SetLogLevelResponse* resp) -> absl::Status {
        if (absl::Status s = CheckAdmin(context, "Admin/SetLogLevel"); !s.ok()) return s;
        absl::StatusOr<LogLevel> level = ParseLogLevel(req.level());
        if (!level.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("Admin/SetLogLevel: ", level.status().message()));
        }
        resp->set_previous_level(std::string(LogLevelName(GetLogLevel())));
        ::ligerd::SetLogLevel(*level);
        LIGERD_LOG(kInfo) << "log level " << resp->previous_level() << " -> " << LogLevelName(*level)
                          << " (Admin/SetLogLevel)";
        return absl::OkStatus();
      });
}

}  // namespace ligerd
