// Sessions: a client process's lease on the data plane. Each owns its ring, its buffer registry
// (IPC mappings) and, later, its streams and scratch memory; all of it dies with the session.
// A session ends on CloseSession, when its process exits (seen through a pidfd, within
// kReapIntervalMs), or when heartbeats stop for `heartbeat_timeout_ms`. Other sessions are
// untouched.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "ligerd/v1/sessions.pb.h"
#include "server/dataplane/buffer_registry.h"
#include "server/dataplane/remote_runner.h"
#include "server/dataplane/shm_ring.h"
#include "ligerd/v1/telemetry.pb.h"
#include "server/logging.h"
#include "server/peer_credentials.h"

namespace ligerd {

struct SessionLimits {
  uint32_t ring_capacity = 1024;           // records; ~0.8 MiB of shared memory per session
  uint32_t heartbeat_interval_ms = 1000;   // told to the client
  uint32_t heartbeat_timeout_ms = 30000;   // a stopped (not dead) process keeps its session this long
  size_t max_buffers_per_session = 65536;  // bounds the daemon's mappings per client
  size_t max_sessions = 4096;              // bounds what all clients together can make the daemon hold
  size_t max_sessions_per_uid = 1024;      // one user cannot take every session
  size_t max_sessions_per_pid = 64;        // nor one process
};

using Dispatch = ligerd::v1::OpenSessionRequest::Dispatch;

struct DispatchChoice {
  Dispatch mode;
  std::string reason;
};
// remote when MPS shares the GPU (a handoff costs ~10 us), local otherwise (~280 us context switch
// per handoff without MPS); an explicit request is honoured when it can be, with the cost stated.
// A client-given job name made safe for a metric label: at most 128 bytes of printable ASCII
// (others become '?'); "pid <pid>" when empty.
std::string JobLabel(const std::string& name, pid_t pid);

DispatchChoice ChooseDispatch(Dispatch requested, bool mps_enabled, bool remote_available);

class Session {
 public:
  Session(uint64_t id, std::string token, PeerCredentials peer, int device, DispatchChoice dispatch,
          dataplane::ShmRing ring, dataplane::IpcOpener* opener, size_t max_buffers, UniqueFd pidfd);
  ~Session();

  uint64_t id() const { return id_; }
  const PeerCredentials& peer() const { return peer_; }
  int device() const { return device_; }
  const DispatchChoice& dispatch() const { return dispatch_; }
  const dataplane::ShmRing& ring() const { return ring_; }
  dataplane::BufferRegistry& buffers() { return buffers_; }
  const std::string& token() const { return token_; }
  int pidfd() const { return pidfd_.get(); }
  void Touch() { last_heartbeat_ = std::chrono::steady_clock::now().time_since_epoch().count(); }
  // Starts remote execution once the client named its stream-flag page. FAILED_PRECONDITION for
  // a session that dispatches locally, ALREADY_EXISTS when already started.
  absl::Status StartRemote(kernels::Executor* executor, uint64_t flag_buffer_id, uint32_t slots,
                           std::vector<std::string> op_names, dataplane::RunnerTelemetry telemetry = {});
  // The job name the client gave (OpenSessionRequest.client_name, made safe for a label).
  const std::string& job() const { return job_; }
  void set_job(std::string job) { job_ = std::move(job); }
  // Ring occupancy, mappings, scratch: for telemetry (any thread).
  ligerd::v1::SessionStats Stats();
  std::chrono::steady_clock::time_point last_heartbeat() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_heartbeat_.load()));
  }

 private:
  uint64_t id_;
  std::string token_;
  PeerCredentials peer_;
  int device_;
  DispatchChoice dispatch_;
  std::string job_;
  dataplane::ShmRing ring_;
  dataplane::BufferRegistry buffers_;
  UniqueFd pidfd_;  // readable once the client process has exited
  std::atomic<int64_t> last_heartbeat_;
  absl::Mutex runner_mu_;
  // Last: destroyed first, so its stream drains before the ring and the mappings go.
  std::unique_ptr<dataplane::RemoteRunner> runner_ ABSL_GUARDED_BY(runner_mu_);
};

struct DeviceState {
  int ordinal = 0;
  bool mps_enabled = false;
};

class SessionRegistry {
 public:
  SessionRegistry(SessionLimits limits, std::vector<DeviceState> devices, bool remote_available,
                  dataplane::IpcOpener* opener);
  ~SessionRegistry();  // stops the reaper and ends every session

  absl::StatusOr<std::shared_ptr<Session>> Open(const ligerd::v1::OpenSessionRequest& request,
                                                const PeerCredentials& peer, uint32_t min_protocol,
                                                uint32_t max_protocol);
  // NOT_FOUND for an unknown id, PERMISSION_DENIED for a wrong token or another process's session.
  absl::StatusOr<std::shared_ptr<Session>> Authenticate(uint64_t id, const std::string& token,
                                                        const PeerCredentials& peer);
  absl::Status Close(uint64_t id, const std::string& token, const PeerCredentials& peer);

  uint32_t active() const { return active_.load(); }
  // The open sessions now (telemetry).
  std::vector<std::shared_ptr<Session>> List() const;
  // While draining, Open refuses new sessions (UNAVAILABLE); open ones go on until they end.
  void SetDraining(bool draining) { draining_.store(draining); }
  bool draining() const { return draining_.load(); }
  const SessionLimits& limits() const { return limits_; }

 private:
  void ReapLoop();
  // RESOURCE_EXHAUSTED naming the cap (and its flag) that `peer` opening one more would exceed.
  absl::Status CheckCapsLocked(const PeerCredentials& peer) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void End(uint64_t id, const char* why);

  SessionLimits limits_;
  std::vector<DeviceState> devices_;
  bool remote_available_;
  dataplane::IpcOpener* opener_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::atomic<uint32_t> active_{0};
  std::atomic<bool> draining_{false};
  LogRateLimiter refusal_log_;  // sessions refused on a cap
  UniqueFd wake_fd_;  // eventfd: wakes the reaper (new session, shutdown)
  std::atomic<bool> stopping_{false};
  std::thread reaper_;
};

}  // namespace ligerd
