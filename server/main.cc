// ligerd: entry point. Parses flags, either precompiles kernels and exits or serves until SIGTERM.
// Exit codes (documented in --help): 0 clean exit, 1 runtime failure, 2 bad flags,
// 3 another instance already serves the socket.
#include <cuda.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/build_info.h"
#include "server/cache_dir.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/dataplane/cuda_ipc_opener.h"
#include "server/gpu_inventory.h"
#include "server/kernel_catalogue.h"
#include "server/logging.h"

namespace ligerd {
namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitBadFlags = 2;
constexpr int kExitAlreadyRunning = 3;

void LogGpus(const GpuInventory& inventory) {
  if (inventory.gpus.empty()) {
    LIGERD_LOG(kWarning) << "no GPU: " << inventory.status
                         << " (serving the control plane only; ops will be refused)";
    return;
  }
  for (const GpuDescription& gpu : inventory.gpus) {
    LIGERD_LOG(kInfo) << "GPU " << gpu.index << ": " << gpu.name << " " << gpu.uuid << ", "
                      << gpu.total_memory_bytes / (1 << 20) << " MiB, " << gpu.multiprocessor_count
                      << " SMs, sm_" << gpu.cc_major << gpu.cc_minor << ", MPS "
                      << (gpu.mps_enabled ? "active (remote dispatch is fast)"
                                          : "inactive (clients will dispatch locally)");
  }
  if (!inventory.status.empty()) {
    LIGERD_LOG(kWarning) << "devices: " << inventory.status;
  }
}

// Raises the soft open-file limit to the hard one (systemd's default soft limit is 1024), and
// says when even that cannot hold the configured caps.
void RaiseFileLimit(const DaemonConfig& config) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  const rlim_t needed = config.max_connections + 2 * config.max_sessions + 256;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    LIGERD_LOG(kWarning) << "open-file limit " << limit.rlim_cur << " is below what the caps need ("
                         << needed << " = --max_connections + 2 x --max_sessions + 256): set "
                         << "LimitNOFILE=65536 or lower the caps; the daemon backs off when out of fds";
  }
}

int Serve(const DaemonConfig& config) {
  const auto t0 = std::chrono::steady_clock::now();
  // Signals are taken by sigwait on this thread, so every other thread must block them: block
  // before any thread (gRPC's, the acceptor) exists.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that vanishes mid-write must not kill the daemon

  LIGERD_LOG(kInfo) << "ligerd " << kLigerdVersion << " (" << kLigerdGitSha << ", protocol "
                    << kProtocolVersion << ", CUDA " << CudaVersionString(CUDA_VERSION)
                    << ", NVRTC " << NvrtcVersionString() << ") starting";
  // Private, or shared read-only with --socket_group's members; read-only ones are used as they are.
  if (absl::StatusOr<kernels::CacheDirAccess> cache = PrepareCacheDir(config.cache_dir, config.socket_gid);
      !cache.ok()) {
    LIGERD_LOG(kError) << "cannot use cache dir " << config.cache_dir << ": " << cache.status().message();
    return kExitRuntimeError;
  }
  DaemonFacts facts;
  facts.socket_path = config.socket_path;
  facts.cache_dir = config.cache_dir;
  facts.inventory = DiscoverGpus(config.devices);
  facts.ops = CatalogueSummary();
  LogGpus(facts.inventory);

  RaiseFileLimit(config);
  dataplane::CudaIpcOpener ipc_opener;
  SessionLimits limits;
  limits.max_sessions = config.max_sessions;
  limits.max_sessions_per_uid = config.max_sessions_per_uid;
  limits.max_sessions_per_pid = config.max_sessions_per_pid;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config, facts, &ipc_opener, limits);
  if (!daemon.ok()) {
    const bool already = daemon.status().code() == absl::StatusCode::kAlreadyExists;
    // An address given by --metrics_address that cannot be served is a bad flag.
    const bool bad_flag = daemon.status().code() == absl::StatusCode::kInvalidArgument;
    LIGERD_LOG(kError) << daemon.status().message() << (already ? "; exiting" : "");
    std::fprintf(stderr, "ligerd: %s\n", std::string(daemon.status().message()).c_str());
    return already ? kExitAlreadyRunning : bad_flag ? kExitBadFlags : kExitRuntimeError;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  LIGERD_LOG(kInfo) << "serving on " << config.socket_path << " (mode "
                    << (config.socket_gid ? absl::StrCat("0660, group ", config.socket_group_name) : "0600")
                    << "), cache dir " << config.cache_dir << ", " << facts.ops.size()
                    << " ops in the catalogue; ready in " << ms.count() << " ms";

  int signo = 0;
  sigwait(&stop_signals, &signo);
  LIGERD_LOG(kInfo) << "received " << (signo == SIGTERM ? "SIGTERM" : "SIGINT")
                    << ": no longer accepting, draining";
  (*daemon)->Shutdown();
  daemon->reset();
  LIGERD_LOG(kInfo) << "stopped; removed " << config.socket_path;
  return 0;
}

}  // namespace
}  // namespace ligerd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(absl::StrCat(
      ligerd::DaemonUsage(),
      "\nExit codes: 0 clean exit, 1 runtime failure, 2 bad flags, 3 another ligerd already "
      "serves the socket."));
  ligerd::InstallFlagsUsageConfig();
  if (absl::Status flags = ligerd::CheckCommandLine(argc, argv); !flags.ok()) {
    std::fprintf(stderr, "ligerd: %s\n", std::string(flags.message()).c_str());
    return ligerd::kExitBadFlags;
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "ligerd: unexpected argument '%s' (see ligerd --help)\n", positional[1]);
    return ligerd::kExitBadFlags;
  }
  absl::StatusOr<ligerd::DaemonConfig> config = ligerd::ConfigFromFlags(ligerd::ProcessEnv());
  if (!config.ok()) {
    std::fprintf(stderr, "ligerd: %s\n", std::string(config.status().message()).c_str());
    return ligerd::kExitBadFlags;
  }
  ligerd::SetLogLevel(config->log_level);
  if (!config->precompile_arch.empty()) return ligerd::PrecompileMain(*config);
  return ligerd::Serve(*config);
}
