#include "server/session_registry.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/logging.h"

namespace ligerd {
namespace {

constexpr size_t kTokenBytes = 32;
// How often the reaper wakes even when no process exited: bounds how late a missed-heartbeat
// timeout is noticed. Process exit itself is noticed at once through the pidfd.
constexpr int kReapIntervalMs = 100;

UniqueFd PidfdOpen(pid_t pid) { return UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0))); }

// Compares tokens without an early exit, so timing does not tell how much of a guess was right.
bool TokensEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::string JobLabel(const std::string& name, pid_t pid) {
  std::string out;
  for (char c : name.substr(0, 128)) out.push_back(static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f ? '?' : c);
  if (out.empty()) out = absl::StrCat("pid ", pid);
  return out;
}

DispatchChoice ChooseDispatch(Dispatch requested, bool mps_enabled, bool remote_available) {
  using R = ligerd::v1::OpenSessionRequest;
  if (requested == R::DISPATCH_LOCAL) return {R::DISPATCH_LOCAL, "local dispatch requested"};
  if (!remote_available) {
    return {R::DISPATCH_LOCAL, requested == R::DISPATCH_REMOTE
                                   ? "remote requested, but this ligerd cannot execute ops remotely; running locally"
                                   : "this ligerd cannot execute ops remotely; running locally"};
  }
  if (requested == R::DISPATCH_REMOTE) {
    return {R::DISPATCH_REMOTE, mps_enabled ? "remote dispatch requested; MPS active"
                                            : "remote dispatch requested; MPS inactive, so each op pays a GPU "
                                              "context switch (~280 us)"};
  }
  return mps_enabled ? DispatchChoice{R::DISPATCH_REMOTE, "MPS active on the device: remote dispatch"}
                     : DispatchChoice{R::DISPATCH_LOCAL, "MPS inactive on the device: local dispatch avoids a "
                                                         "~280 us context switch per op"};
}

Session::Session(uint64_t id, std::string token, PeerCredentials peer, int device, DispatchChoice dispatch,
                 dataplane::ShmRing ring, dataplane::IpcOpener* opener, size_t max_buffers, UniqueFd pidfd)
    : id_(id), token_(std::move(token)), peer_(peer), device_(device), dispatch_(std::move(dispatch)),
      ring_(std::move(ring)), buffers_(opener, device, max_buffers), pidfd_(std::move(pidfd)) {
  Touch();
}

absl::Status Session::StartRemote(kernels::Executor* executor, uint64_t flag_buffer_id, uint32_t slots,
                                  std::vector<std::string> op_names, dataplane::RunnerTelemetry telemetry) {
  if (dispatch_.mode != ligerd::v1::OpenSessionRequest::DISPATCH_REMOTE) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", id_, " dispatches locally (", dispatch_.reason, "); it has no remote stream flags"));
  }
  absl::StatusOr<dataplane::BufferRef> flags = buffers_.Find(flag_buffer_id);
  if (!flags.ok()) return flags.status();
  absl::MutexLock lock(&runner_mu_);
  if (runner_ != nullptr) return absl::AlreadyExistsError(absl::StrCat("session ", id_, " already runs remotely"));
  absl::StatusOr<std::unique_ptr<dataplane::RemoteRunner>> runner = dataplane::RemoteRunner::Start(
      device_, executor, &ring_, &buffers_, std::move(*flags), slots, std::move(op_names), std::move(telemetry));
  if (!runner.ok()) return runner.status();
  runner_ = std::move(*runner);
  return absl::OkStatus();
}

ligerd::v1::SessionStats Session::Stats() {
  ligerd::v1::SessionStats s;
  s.set_session_id(id_);
  s.set_pid(static_cast<uint32_t>(peer_.pid));
  s.set_job(job_);
  s.set_device(static_cast<uint32_t>(device_));
  s.set_dispatch(dispatch_.mode == ligerd::v1::OpenSessionRequest::DISPATCH_REMOTE ? "remote" : "local");
  // head is the client's to write: clamp what a broken or hostile client put there.
  const uint64_t head = ring_.header()->head.load(std::memory_order_relaxed);
  const uint64_t tail = ring_.header()->tail.load(std::memory_order_relaxed);
  s.set_ring_pending_records(head >= tail ? std::min<uint64_t>(head - tail, ring_.capacity()) : 0);
  s.set_ring_capacity_records(ring_.capacity());
  s.set_ipc_mapped_bytes(buffers_.mapped_bytes());
  s.set_ipc_mappings(buffers_.size());
  absl::MutexLock lock(&runner_mu_);
  if (runner_ != nullptr) s.set_scratch_bytes(runner_->scratch_bytes());
  return s;
}

Session::~Session() {
  {
    absl::MutexLock lock(&runner_mu_);
    runner_.reset();  // drains the session's stream while its mappings are still open
  }
  buffers_.Clear();
}

SessionRegistry::SessionRegistry(SessionLimits limits, std::vector<DeviceState> devices, bool remote_available,
                                 dataplane::IpcOpener* opener)
    : limits_(limits), devices_(std::move(devices)), remote_available_(remote_available), opener_(opener) {
  wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  reaper_ = std::thread([this] { ReapLoop(); });
}

SessionRegistry::~SessionRegistry() {
  stopping_.store(true);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_.get(), &one, sizeof(one));
  reaper_.join();
  absl::MutexLock lock(&mu_);
  sessions_.clear();
  active_.store(0);
}

absl::Status SessionRegistry::CheckCapsLocked(const PeerCredentials& peer) const {
  if (sessions_.size() >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("OpenSession: session limit: ", sessions_.size(),
                                                     " sessions open (--max_sessions=", limits_.max_sessions,
                                                     ")"));
  }
  size_t same_uid = 0;
  size_t same_pid = 0;
  for (const auto& [id, session] : sessions_) {
    same_uid += session->peer().uid == peer.uid;
    same_pid += session->peer().pid == peer.pid;
  }
  if (same_uid >= limits_.max_sessions_per_uid) {
    return absl::ResourceExhaustedError(absl::StrCat("OpenSession: session limit: uid ", peer.uid, " has ",
                                                     same_uid, " sessions open (--max_sessions_per_uid=",
                                                     limits_.max_sessions_per_uid, ")"));
  }
  if (same_pid >= limits_.max_sessions_per_pid) {
    return absl::ResourceExhaustedError(absl::StrCat("OpenSession: session limit: pid ", peer.pid, " has ",
                                                     same_pid, " sessions open (--max_sessions_per_pid=",
                                                     limits_.max_sessions_per_pid, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Session>> SessionRegistry::Open(const ligerd::v1::OpenSessionRequest& request,
                                                               const PeerCredentials& peer, uint32_t min_protocol,
                                                               uint32_t max_protocol) {
  if (request.protocol_version() < min_protocol || request.protocol_version() > max_protocol) {
    return absl::FailedPreconditionError(absl::StrCat("OpenSession: client speaks protocol ",
                                                      request.protocol_version(), "; this ligerd accepts ",
                                                      min_protocol, "..", max_protocol));
  }
  if (draining_.load()) {
    return absl::UnavailableError("OpenSession: ligerd is draining (an operator's Admin/Drain); try another "
                                  "ligerd or later");
  }
  if (request.client_pid() != static_cast<uint32_t>(peer.pid)) {
    return absl::PermissionDeniedError(absl::StrCat("OpenSession: client_pid ", request.client_pid(),
                                                    " is not the connecting process (pid ", peer.pid, ")"));
  }
  const DeviceState* device = nullptr;
  for (const DeviceState& d : devices_) {
    if (d.ordinal == static_cast<int>(request.device())) device = &d;
  }
  if (device == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("OpenSession: device ", request.device(),
                                                   " is not served by this ligerd (", devices_.size(), " devices)"));
  }
  std::string token(kTokenBytes, '\0');
  if (getrandom(token.data(), token.size(), 0) != static_cast<ssize_t>(token.size())) {
    return absl::InternalError("OpenSession: getrandom failed");
  }
  UniqueFd pidfd = PidfdOpen(peer.pid);
  if (!pidfd) {
    return absl::FailedPreconditionError(absl::StrCat("OpenSession: cannot watch pid ", peer.pid, ": ",
                                                      std::strerror(errno), " (has it exited?)"));
  }
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    absl::Status cap = CheckCapsLocked(peer);
    if (!cap.ok()) {
      if (const uint64_t n = refusal_log_.Note(); n > 0) {
        LIGERD_LOG(kWarning) << "refused " << n << " OpenSession call(s) since the last such line; latest: "
                             << cap.message();
      }
      return cap;
    }
    id = next_id_++;
  }
  absl::StatusOr<dataplane::ShmRing> ring = dataplane::ShmRing::Create(id, limits_.ring_capacity);
  if (!ring.ok()) return ring.status();
  auto session = std::make_shared<Session>(id, std::move(token), peer, device->ordinal,
                                           ChooseDispatch(request.requested_dispatch(), device->mps_enabled,
                                                          remote_available_),
                                           std::move(*ring), opener_, limits_.max_buffers_per_session,
                                           std::move(pidfd));
  session->set_job(JobLabel(request.client_name(), peer.pid));
  {
    absl::MutexLock lock(&mu_);
    sessions_[id] = session;
    active_.store(sessions_.size());
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_.get(), &one, sizeof(one));  // reaper: watch the new pidfd
  LIGERD_LOG(kInfo) << "session " << id << " opened by pid " << peer.pid << " ('" << request.client_name()
                    << "') on GPU " << device->ordinal << ": " << session->dispatch().reason;
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionRegistry::Authenticate(uint64_t id, const std::string& token,
                                                                       const PeerCredentials& peer) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("session ", id, " does not exist (ended?)"));
    session = it->second;
  }
  if (!TokensEqual(token, session->token()) || peer.pid != session->peer().pid) {
    LIGERD_LOG(kWarning) << "refused a call on session " << id << " from pid " << peer.pid
                         << ": wrong token or not the owning process";
    return absl::PermissionDeniedError(absl::StrCat("session ", id, ": wrong token or not the owning process"));
  }
  session->Touch();
  return session;
}

absl::Status SessionRegistry::Close(uint64_t id, const std::string& token, const PeerCredentials& peer) {
  absl::StatusOr<std::shared_ptr<Session>> session = Authenticate(id, token, peer);
  if (!session.ok()) return session.status();
  End(id, "closed by the client");
  return absl::OkStatus();
}

void SessionRegistry::End(uint64_t id, const char* why) {
  std::shared_ptr<Session> ended;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    ended = std::move(it->second);
    sessions_.erase(it);
  }
  LIGERD_LOG(kInfo) << "session " << id << " (pid " << ended->peer().pid << ") ended: " << why << "; closing "
                    << ended->buffers().size() << " buffer mappings and its ring";
  // Destroyed here unless an in-flight op still holds it (then when that op finishes): ring
  // unlinked, mappings closed. The count drops after, so "0 active" means "all released".
  ended.reset();
  absl::MutexLock lock(&mu_);
  active_.store(sessions_.size());
}

std::vector<std::shared_ptr<Session>> SessionRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> out;
  out.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) out.push_back(session);
  return out;
}

void SessionRegistry::ReapLoop() {
  while (!stopping_.load()) {
    std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0}};
    std::vector<uint64_t> ids{0};
    std::vector<uint64_t> stale;
    const auto now = std::chrono::steady_clock::now();
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, session] : sessions_) {
        fds.push_back({session->pidfd(), POLLIN, 0});
        ids.push_back(id);
        if (now - session->last_heartbeat() > std::chrono::milliseconds(limits_.heartbeat_timeout_ms)) {
          stale.push_back(id);
        }
      }
    }
    for (uint64_t id : stale) End(id, "no heartbeat");
    if (poll(fds.data(), fds.size(), kReapIntervalMs) <= 0) continue;
    if (fds[0].revents != 0) {
      uint64_t drain;
      [[maybe_unused]] ssize_t n = read(wake_fd_.get(), &drain, sizeof(drain));
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents != 0) End(ids[i], "its process exited");  // a pidfd is readable once the process is gone
    }
  }
}

}  // namespace ligerd
