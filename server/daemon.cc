#include "server/daemon.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/logging.h"

namespace ligerd {

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config, DaemonFacts facts,
                                                       dataplane::IpcOpener* opener, SessionLimits limits) {
  if (absl::Status s = PrepareSocketDirectory(config.socket_path, config.socket_gid); !s.ok()) return s;
  absl::StatusOr<InstanceLock> lock = InstanceLock::Acquire(config.socket_path);
  if (!lock.ok()) return lock.status();
  if (lock->removed_stale()) {
    LIGERD_LOG(kWarning) << "removed a stale socket left by an instance that did not exit cleanly: "
                         << config.socket_path;
  }
  absl::StatusOr<ListeningSocket> socket = ListeningSocket::Bind(config.socket_path, config.socket_gid);
  if (!socket.ok()) return socket.status();

  std::unique_ptr<Daemon> daemon(new Daemon(config, std::move(*lock), std::move(*socket)));
  std::vector<DeviceState> devices;
  for (const GpuDescription& gpu : facts.inventory.gpus) devices.push_back({gpu.index, gpu.mps_enabled});
  // Remote execution needs a GPU and its driver; without them sessions are told so and run locally.
  const bool remote_available = !devices.empty();
  daemon->executors_ = std::make_unique<ExecutorPool>(config.cache_dir);
  daemon->kernels_service_ = std::make_unique<KernelsService>(daemon->executors_.get(), facts.inventory);
  kernels::SetTuningLogSink([](std::string_view line) { LIGERD_LOG(kWarning) << "tuning: " << line; });
  daemon->sessions_ = std::make_unique<SessionRegistry>(limits, std::move(devices), remote_available, opener);
  SessionRegistry* registry = daemon->sessions_.get();
  daemon->info_ = std::make_unique<InfoService>(std::move(facts), [registry] { return registry->active(); });
  daemon->sessions_service_ = std::make_unique<SessionsService>(registry, &daemon->peers_, daemon->executors_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(daemon->info_.get());
  builder.RegisterService(daemon->sessions_service_.get());
  builder.RegisterService(daemon->kernels_service_.get());
  // Control messages are small; cap them so a hostile client cannot make the daemon buffer much.
  builder.SetMaxReceiveMessageSize(4 << 20);
  // Idle connections are closed (GOAWAY, then close), so peers cannot park fds forever.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, config.idle_connection_timeout_ms);
  daemon->server_ = builder.BuildAndStart();
  if (daemon->server_ == nullptr) return absl::InternalError("gRPC server failed to start");
  daemon->server_->GetHealthCheckService()->SetServingStatus(true);

  daemon->wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!daemon->wake_fd_) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  daemon->acceptor_ = std::thread([d = daemon.get()] { d->AcceptLoop(); });
  return daemon;
}

Daemon::Daemon(const DaemonConfig& config, InstanceLock lock, ListeningSocket socket)
    : config_(config),
      lock_(std::move(lock)),
      socket_(std::move(socket)),
      peers_(ConnectionLimits{config.max_connections, config.max_connections_per_uid,
                              config.max_connections_per_pid}) {
  policy_.daemon_uid = geteuid();
  policy_.group = config.socket_gid;
}

namespace {
// Accept failures that mean "out of a resource" (fds, socket buffers): retrying at once would
// spin, so the acceptor backs off, doubling up to kMaxAcceptBackoff.
bool OutOfResources(int err) { return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM; }
constexpr std::chrono::milliseconds kMaxAcceptBackoff{100};
constexpr int kSweepIntervalMs = 1000;  // how often closed connections are forgotten
}  // namespace

void Daemon::AcceptLoop() {
  pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0}, {socket_.fd(), POLLIN, 0}};
  std::chrono::milliseconds backoff{0};
  LogRateLimiter accept_failures;
  LogRateLimiter refusals;
  auto last_sweep = std::chrono::steady_clock::now();
  while (true) {
    // While backing off only the wake fd is watched: the listening socket stays readable.
    const bool backing_off = backoff.count() > 0;
    if (poll(fds, backing_off ? 1 : 2, backing_off ? static_cast<int>(backoff.count()) : kSweepIntervalMs) < 0) {
      if (errno == EINTR) continue;
      LIGERD_LOG(kError) << "acceptor: poll failed: " << std::strerror(errno);
      return;
    }
    if (fds[0].revents != 0) return;  // Shutdown() woke us
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sweep >= std::chrono::milliseconds(kSweepIntervalMs)) {
      peers_.Sweep();
      last_sweep = now;
    }
    if (!backing_off && (fds[1].revents & POLLIN) == 0) continue;
    UniqueFd fd(accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      const int err = errno;
      if (OutOfResources(err)) {
        backoff = std::min(kMaxAcceptBackoff, std::max(std::chrono::milliseconds(1), 2 * backoff));
        if (const uint64_t n = accept_failures.Note(); n > 0) {
          LIGERD_LOG(kWarning) << "acceptor: cannot accept connections: " << std::strerror(err) << " ("
                               << n << " failed attempts since the last such line; retrying every "
                               << kMaxAcceptBackoff.count() << " ms at most; raise LimitNOFILE or lower "
                               << "--max_connections)";
        }
        continue;
      }
      backoff = std::chrono::milliseconds(0);
      if (err != EAGAIN && err != EINTR && err != ECONNABORTED) {
        if (const uint64_t n = accept_failures.Note(); n > 0) {
          LIGERD_LOG(kWarning) << "acceptor: accept failed: " << std::strerror(err) << " (" << n
                               << " failures since the last such line)";
        }
      }
      continue;
    }
    backoff = std::chrono::milliseconds(0);
    absl::StatusOr<PeerCredentials> peer = GetPeerCredentials(fd.get());
    absl::Status admitted = peer.ok() ? CheckPeer(*peer, policy_) : peer.status();
    if (admitted.ok()) admitted = peers_.Admit(fd.get(), *peer);
    if (!admitted.ok()) {
      refused_.fetch_add(1);
      if (const uint64_t n = refusals.Note(); n > 0) {
        LIGERD_LOG(kWarning) << "refused " << n << " connection(s) on " << config_.socket_path
                             << " since the last such line; latest"
                             << (peer.ok() ? absl::StrCat(" (pid ", peer->pid, ", uid ", peer->uid, ")") : "")
                             << ": " << admitted.message();
      }
      continue;  // fd closes here
    }
    accepted_.fetch_add(1);
    LIGERD_LOG(kDebug) << "admitted pid " << peer->pid << " uid " << peer->uid;
    grpc::AddInsecureChannelFromFd(server_.get(), fd.release());  // gRPC owns and closes it
  }
}

void Daemon::Shutdown() {
  if (stopped_.exchange(true)) return;
  if (wake_fd_) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_.get(), &one, sizeof(one));
    if (acceptor_.joinable()) acceptor_.join();
    wake_fd_.reset();
  }
  if (server_) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(config_.shutdown_grace_ms));
    server_->Wait();
  }
  // lock_ (destroyed with the daemon) removes the socket file, then releases the lock.
}

Daemon::~Daemon() { Shutdown(); }

}  // namespace ligerd
