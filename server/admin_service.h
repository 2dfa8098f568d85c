// ligerd.v1.Admin: operator actions. Drain (refuse new sessions, report NOT_SERVING, wait for open
// sessions to end; lasts until ligerd restarts), ClearCache (the JIT cache's compiled kernels on
// disk and in memory; optionally the tuning DB), SetLogLevel. Beyond the peer check every call
// has (an admitted connection), only the daemon's own user or root may use them: with
// --socket_group, group members run jobs but do not administer the daemon.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ligerd/v1/admin.grpc.pb.h"
#include "server/peer_table.h"
#include "server/session_registry.h"

namespace ligerd {

using AdminRawService = ligerd::v1::Admin::WithRawCallbackMethod_Drain<
    ligerd::v1::Admin::WithRawCallbackMethod_ClearCache<
        ligerd::v1::Admin::WithRawCallbackMethod_SetLogLevel<ligerd::v1::Admin::Service>>>;

inline constexpr uint32_t kMaxDrainWaitMs = 30000;

// Removes the compiled kernels in `cache_dir` (*.cubin, *.ptx; lock files stay) and, when asked,
// the tuning DB files (tuning/*.tunedb). Returns how many files it removed.
absl::StatusOr<uint64_t> ClearCacheFiles(const std::string& cache_dir, bool include_tuning_db);

class AdminService final : public AdminRawService {
 public:
  // `set_serving(false)` makes the health service report NOT_SERVING.
  AdminService(SessionRegistry* registry, const PeerTable* peers, std::string cache_dir,
               std::function<void(bool)> set_serving);
  ~AdminService() override;  // waits for drains in progress (they stop early on shutdown)

  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ClearCache(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SetLogLevel(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  // The caller's credentials when it may administer this daemon; PERMISSION_DENIED naming `method`.
  absl::Status CheckAdmin(grpc::CallbackServerContext* context, const char* method) const;

  SessionRegistry* registry_;
  const PeerTable* peers_;
  std::string cache_dir_;
  std::function<void(bool)> set_serving_;
  uid_t daemon_uid_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> drains_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd
