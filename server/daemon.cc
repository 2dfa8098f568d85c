#include "server/daemon.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <cuda.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/jit/cache_entry.h"
#include "server/build_info.h"
#include "server/logging.h"
#include "server/telemetry/exposition.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

namespace {
// A message as JSON for the dashboard: field names as in the .proto (snake_case), zeros included.
std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config, DaemonFacts facts,
                                                       dataplane::IpcOpener* opener, SessionLimits limits,
                                                       telemetry::NvmlSampler nvml) {
  if (absl::Status s = PrepareSocketDirectory(config.socket_path, config.socket_gid); !s.ok()) return s;
  absl::StatusOr<InstanceLock> lock = InstanceLock::Acquire(config.socket_path);
  if (!lock.ok()) return lock.status();
  if (lock->removed_stale()) {
    LIGERD_LOG(kWarning) << "removed a stale socket left by an instance that did not exit cleanly: "
                         << config.socket_path;
  }
  // Rings of a ligerd of ours that died without unlinking them (stale_rings.h). Our marker first,
  // so that a daemon starting beside us never takes our rings for stale ones.
  absl::StatusOr<std::shared_ptr<dataplane::LivenessMarker>> marker = dataplane::LivenessMarker::ForThisProcess();
  if (!marker.ok()) return marker.status();
  const dataplane::StaleRingReport stale = dataplane::RemoveStaleRings();
  if (stale.removed > 0) {
    LIGERD_LOG(kWarning) << "removed " << stale.removed << " ring(s)/marker(s) of a ligerd of this user that died "
                         << "without cleaning up (/dev/shm/ligerd-" << geteuid() << "-<pid>-*)";
  }
  absl::StatusOr<ListeningSocket> socket = ListeningSocket::Bind(config.socket_path, config.socket_gid);
  if (!socket.ok()) return socket.status();

  std::unique_ptr<Daemon> daemon(new Daemon(config, std::move(*lock), std::move(*socket)));
  daemon->liveness_ = *std::move(marker);
  std::vector<DeviceState> devices;
  for (const GpuDescription& gpu : facts.inventory.gpus) devices.push_back({gpu.index, gpu.mps_enabled});
  // Remote execution needs a GPU and its driver; without them sessions are told so and run locally.
  const bool remote_available = !devices.empty();
  daemon->executors_ = std::make_unique<ExecutorPool>(config.cache_dir);
  kernels::SetTuningLogSink([](std::string_view line) { LIGERD_LOG(kWarning) << "tuning: " << line; });
  kernels::SetCacheLogSink([](std::string_view line) { LIGERD_LOG(kWarning) << "cache: " << line; });
  daemon->sessions_ = std::make_unique<SessionRegistry>(limits, std::move(devices), remote_available, opener);
  SessionRegistry* registry = daemon->sessions_.get();
  if (absl::Status s = daemon->StartTelemetry(facts, std::move(nvml)); !s.ok()) return s;
  telemetry::Store* store = &daemon->telemetry_->store();
  daemon->kernels_service_ = std::make_unique<KernelsService>(daemon->executors_.get(), facts.inventory, store,
                                                              config.cache_dir, &daemon->peers_);
  daemon->info_ = std::make_unique<InfoService>(std::move(facts), [registry] { return registry->active(); });
  daemon->sessions_service_ = std::make_unique<SessionsService>(registry, &daemon->peers_, daemon->executors_.get(),
                                                                store, config.telemetry_sample_every);
  daemon->telemetry_service_ = std::make_unique<TelemetryService>(daemon->telemetry_.get(), registry, &daemon->peers_);
  Daemon* d = daemon.get();
  daemon->admin_service_ = std::make_unique<AdminService>(registry, &daemon->peers_, config.cache_dir, [d](bool serving) {
    if (d->server_ != nullptr) d->server_->GetHealthCheckService()->SetServingStatus(serving);
  });

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(daemon->info_.get());
  builder.RegisterService(daemon->sessions_service_.get());
  builder.RegisterService(daemon->kernels_service_.get());
  builder.RegisterService(daemon->telemetry_service_.get());
  builder.RegisterService(daemon->admin_service_.get());
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
  daemon->history_sampler_ = std::thread([d = daemon.get()] {
    pollfd wake{d->wake_fd_.get(), POLLIN, 0};
    while (true) {
      d->SampleHistory();
      const int r = poll(&wake, 1, kHistoryIntervalMs);
      if (r > 0 || (r < 0 && errno != EINTR)) return;  // Shutdown() woke us (or poll broke)
    }
  });
  return daemon;
}

absl::Status Daemon::StartTelemetry(const DaemonFacts& facts, telemetry::NvmlSampler nvml) {
  SessionRegistry* registry = sessions_.get();
  telemetry::LiveSources sources;
  sources.sessions = [registry] {
    std::vector<v1::SessionStats> out;
    for (const std::shared_ptr<Session>& session : registry->List()) {
      v1::SessionStats stats = session->Stats();
      stats.set_user(telemetry::UserName(session->peer().uid));
      out.push_back(std::move(stats));
    }
    return out;
  };
  sources.daemon_jit = [cache_dir = config_.cache_dir]() -> std::optional<kernels::JitCacheStats> {
    absl::StatusOr<std::shared_ptr<kernels::JitCache>> cache = kernels::JitCache::Shared(cache_dir);
    if (!cache.ok()) return std::nullopt;
    return (*cache)->stats();
  };
  sources.draining = [registry] { return registry->draining(); };
  sources.inventory = facts.inventory;
  sources.nvml = nvml ? std::move(nvml) : telemetry::SystemNvml();
  sources.version = kLigerdVersion;
  telemetry_ = std::make_unique<telemetry::NodeTelemetry>(std::move(sources));
  if (config_.metrics_address.empty()) return absl::OkStatus();

  absl::StatusOr<telemetry::MetricsAddress> address = telemetry::ParseMetricsAddress(config_.metrics_address);
  if (!address.ok()) return address.status();
  const telemetry::BuildLabels build{kLigerdVersion, kLigerdGitSha, CudaVersionString(CUDA_VERSION)};
  telemetry::HttpHandlers handlers;
  handlers.metrics_text = [this, build] { return telemetry::PrometheusText(telemetry_->Snapshot(), build); };
  handlers.snapshot_json = [this] { return ToJson(telemetry_->Snapshot()); };
  handlers.history_json = [this] { return ToJson(history_.Read()); };
  absl::StatusOr<std::unique_ptr<telemetry::HttpServer>> http = telemetry::HttpServer::Start(*address, handlers);
  if (!http.ok() && config_.metrics_address_is_default) {
    LIGERD_LOG(kWarning) << "telemetry: " << http.status().message() << "; using a free loopback port instead";
    address->port = 0;
    http = telemetry::HttpServer::Start(*address, handlers);
  }
  if (!http.ok()) return http.status();
  http_ = std::move(*http);
  LIGERD_LOG(kInfo) << "telemetry: metrics on " << http_->url() << "/metrics, dashboard on " << http_->url() << "/";
  return absl::OkStatus();
}

void Daemon::SampleHistory() { history_.Add(telemetry::ToHistoryPoint(telemetry_->Snapshot())); }

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
  http_.reset();  // no scrape may read the telemetry while the rest goes away
  if (wake_fd_) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_.get(), &one, sizeof(one));
    if (acceptor_.joinable()) acceptor_.join();
    if (history_sampler_.joinable()) history_sampler_.join();
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
