// ligerd's configuration: the flags, their documented defaults, and the pure functions that
// compute the defaults from the environment (testable without starting anything).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/default_paths.h"
#include "server/logging.h"

namespace ligerd {

inline constexpr const char* kDefaultMetricsAddress = "127.0.0.1:9464";

struct DaemonConfig {
  std::string socket_path;          // Unix socket of the control plane
  std::optional<gid_t> socket_gid;  // --socket_group: members may connect too (socket 0660)
  std::string socket_group_name;    // as given, for logs
  std::string cache_dir;            // JIT cache and tuning DB
  std::vector<int> devices;         // CUDA ordinals to serve; empty = all
  LogLevel log_level = LogLevel::kInfo;
  // host:port of /metrics and the dashboard (telemetry/http_server.h); "" = off (the flag's default
  // is kDefaultMetricsAddress). When it is that default and the port is busy
  // (another user's ligerd on this node), a free loopback port is used instead.
  std::string metrics_address;
  bool metrics_address_is_default = false;
  uint32_t telemetry_sample_every = 64;  // time one remote launch in this many with CUDA events
  std::string precompile_arch;      // non-empty: compile every kernel variant for it and exit
  int shutdown_grace_ms = 1500;     // how long in-flight RPCs get on SIGTERM (exit within 2 s)
  // Limits (one peer must not make the daemon unreachable for the node). The defaults fit within
  // LimitNOFILE=65536 (deploy/systemd): a connection holds 1 fd, a session 2 (pidfd, ring).
  size_t max_connections = 8192;
  size_t max_connections_per_uid = 1024;
  size_t max_connections_per_pid = 64;
  size_t max_sessions = 4096;
  size_t max_sessions_per_uid = 1024;
  size_t max_sessions_per_pid = 64;
  int idle_connection_timeout_ms = 300000;  // a connection with no RPC for this long is closed
};

// Checks the command line before abseil parses it (abseil exits 1 on a bad flag; ligerd's bad-flag
// exit code is 2): unknown flags, flags missing their value, values that do not parse.
absl::Status CheckCommandLine(int argc, char** argv);

// "all" or "" -> {} (every GPU); "0,2" -> {0, 2}. Rejects negatives, duplicates and junk.
absl::StatusOr<std::vector<int>> ParseDevices(const std::string& spec);

// Builds the config from the parsed absl flags (call after absl::ParseCommandLine).
absl::StatusOr<DaemonConfig> ConfigFromFlags(const EnvLookup& env);

// The usage text ligerd --help prints above the flag list.
const char* DaemonUsage();
// Makes --help list ligerd's own flags (those defined under server/), not abseil's internals.
void InstallFlagsUsageConfig();

}  // namespace ligerd
