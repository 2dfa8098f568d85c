#include "server/config.h"

#include <grp.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

#include "absl/algorithm/container.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/telemetry/http_server.h"

ABSL_FLAG(std::string, socket, "",
          "Unix socket of the control plane. Default: $LIGERD_SOCKET, else "
          "$XDG_RUNTIME_DIR/ligerd/ligerd.sock, else /tmp/ligerd-<uid>/ligerd.sock (the clients' "
          "default too). Its directory is made 0700 and the socket 0600: only this user (and "
          "root) may connect.");
ABSL_FLAG(std::string, socket_group, "",
          "Also admit members of this group (name or gid): the socket becomes 0660 and a directory "
          "ligerd creates for it 0710, both owned by the group. Default: none.");
ABSL_FLAG(std::string, cache_dir, "",
          "Directory of the NVRTC JIT cache and the tuning DB. Default: $LIGERD_CACHE_DIR, else "
          "$XDG_CACHE_HOME/ligerd, else $HOME/.cache/ligerd, else /tmp/ligerd-<uid>/cache (the "
          "clients' default too, so they share one cache).");
ABSL_FLAG(std::string, devices, "all",
          "CUDA devices to serve: 'all' or a comma-separated list of ordinals, e.g. '0,1'.");
ABSL_FLAG(std::string, log_level, "info", "Log verbosity: debug, info, warning or error.");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "HOST:PORT of the telemetry HTTP server: Prometheus text on /metrics, the dashboard on /. "
          "An IP address (or localhost); port 0 picks a free one; 'off' serves nothing. It shows "
          "job names, pids and command lines, so keep it on loopback unless the node is yours. When "
          "the default port is taken (another ligerd), a free loopback port is used and logged.");
ABSL_FLAG(int64_t, telemetry_sample_every, 64,
          "Time one remote op launch in this many with CUDA events (ligerd_op_gpu_seconds); 0 = never.");
ABSL_FLAG(std::string, precompile_arch, "",
          "Compile every catalogue kernel variant for this arch (e.g. sm_90) into --cache_dir, "
          "print how many, and exit (non-zero if any failed). Needs no GPU.");

ABSL_FLAG(int64_t, max_connections, 8192,
          "Connections open at once, all peers together; more are closed at once (logged).");
ABSL_FLAG(int64_t, max_connections_per_uid, 1024, "Connections open at once from one user.");
ABSL_FLAG(int64_t, max_connections_per_pid, 64, "Connections open at once from one process.");
ABSL_FLAG(int64_t, max_sessions, 4096,
          "Sessions open at once, all clients together; OpenSession beyond it is RESOURCE_EXHAUSTED. "
          "Each holds 2 fds, so the defaults fit in LimitNOFILE=65536.");
ABSL_FLAG(int64_t, max_sessions_per_uid, 1024, "Sessions open at once for one user.");
ABSL_FLAG(int64_t, max_sessions_per_pid, 64, "Sessions open at once for one process.");
ABSL_FLAG(int64_t, idle_connection_timeout_s, 300,
          "A connection with no RPC in flight for this many seconds is closed (clients reconnect "
          "on their next call; an open session's heartbeats keep its connection busy).");

namespace ligerd {

namespace {
// A positive count flag that must fit in `max`.
absl::StatusOr<int64_t> Positive(const char* name, int64_t value, int64_t max) {
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, "=", value, ": must be between 1 and ", max));
  }
  return value;
}

absl::StatusOr<gid_t> ResolveGroup(const std::string& group) {
  uint32_t gid;
  if (absl::SimpleAtoi(group, &gid)) return static_cast<gid_t>(gid);
  struct group entry;
  struct group* found = nullptr;
  std::vector<char> buffer(16384);
  if (getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--socket_group: no group named '", group, "'"));
  }
  return found->gr_gid;
}
}  // namespace

absl::StatusOr<std::vector<int>> ParseDevices(const std::string& spec) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(spec);
  if (trimmed.empty() || trimmed == "all") return std::vector<int>{};
  std::vector<int> devices;
  std::set<int> seen;
  for (absl::string_view part : absl::StrSplit(trimmed, ',')) {
    int ordinal;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &ordinal) || ordinal < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: '", part, "' is not a device ordinal (use 'all' or e.g. '0,1')"));
    }
    if (!seen.insert(ordinal).second) {
      return absl::InvalidArgumentError(absl::StrCat("--devices: device ", ordinal, " listed twice"));
    }
    devices.push_back(ordinal);
  }
  return devices;
}

absl::StatusOr<DaemonConfig> ConfigFromFlags(const EnvLookup& env) {
  DaemonConfig config;
  const uid_t uid = geteuid();
  config.socket_path = absl::GetFlag(FLAGS_socket);
  // Errors name where a bad path came from: the flag, or the environment through the default.
  const char* socket_source = "--socket";
  if (config.socket_path.empty()) {
    config.socket_path = DefaultSocketPath(env, uid);
    socket_source = "default socket ($LIGERD_SOCKET or $XDG_RUNTIME_DIR)";
  }
  if (config.socket_path.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(socket_source, ": '", config.socket_path, "' must be an absolute path"));
  }
  // sockaddr_un::sun_path holds 108 bytes including the terminating NUL.
  if (config.socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(socket_source, ": '", config.socket_path, "' is ",
                                                   config.socket_path.size(),
                                                   " bytes; a Unix socket path must be under ",
                                                   sizeof(sockaddr_un{}.sun_path)));
  }
  config.socket_group_name = absl::GetFlag(FLAGS_socket_group);
  if (!config.socket_group_name.empty()) {
    auto gid = ResolveGroup(config.socket_group_name);
    if (!gid.ok()) return gid.status();
    config.socket_gid = *gid;
  }
  config.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  if (config.cache_dir.empty()) config.cache_dir = DefaultCacheDir(env, uid);
  auto devices = ParseDevices(absl::GetFlag(FLAGS_devices));
  if (!devices.ok()) return devices.status();
  config.devices = *devices;
  auto level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return absl::InvalidArgumentError(absl::StrCat("--log_level: ", level.status().message()));
  config.log_level = *level;
  config.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  config.metrics_address_is_default = config.metrics_address == kDefaultMetricsAddress;
  if (config.metrics_address == "off" || config.metrics_address.empty()) {
    config.metrics_address.clear();
  } else if (auto address = telemetry::ParseMetricsAddress(config.metrics_address); !address.ok()) {
    return address.status();
  }
  const int64_t sample_every = absl::GetFlag(FLAGS_telemetry_sample_every);
  if (sample_every < 0 || sample_every > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("--telemetry_sample_every=", sample_every,
                                                   ": must be between 0 (never) and ", 1 << 20));
  }
  config.telemetry_sample_every = static_cast<uint32_t>(sample_every);
  config.precompile_arch = absl::GetFlag(FLAGS_precompile_arch);

  struct Count {
    const char* name;
    int64_t value;
    size_t* out;
  };
  constexpr int64_t kMaxCount = 1 << 20;
  for (const Count& c : {Count{"max_connections", absl::GetFlag(FLAGS_max_connections), &config.max_connections},
                         Count{"max_connections_per_uid", absl::GetFlag(FLAGS_max_connections_per_uid),
                               &config.max_connections_per_uid},
                         Count{"max_connections_per_pid", absl::GetFlag(FLAGS_max_connections_per_pid),
                               &config.max_connections_per_pid},
                         Count{"max_sessions", absl::GetFlag(FLAGS_max_sessions), &config.max_sessions},
                         Count{"max_sessions_per_uid", absl::GetFlag(FLAGS_max_sessions_per_uid),
                               &config.max_sessions_per_uid},
                         Count{"max_sessions_per_pid", absl::GetFlag(FLAGS_max_sessions_per_pid),
                               &config.max_sessions_per_pid}}) {
    auto value = Positive(c.name, c.value, kMaxCount);
    if (!value.ok()) return value.status();
    *c.out = static_cast<size_t>(*value);
  }
  auto timeout = Positive("idle_connection_timeout_s", absl::GetFlag(FLAGS_idle_connection_timeout_s), 86400);
  if (!timeout.ok()) return timeout.status();
  config.idle_connection_timeout_ms = static_cast<int>(*timeout * 1000);
  return config;
}

absl::Status CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;                               // the rest is positional
    if (arg.size() < 2 || arg[0] != '-') continue;        // positional: main() refuses it
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    const bool has_value = eq != absl::string_view::npos;
    absl::string_view value = has_value ? arg.substr(eq + 1) : absl::string_view();
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {  // --nofoo for a bool --foo
      absl::CommandLineFlag* positive = absl::FindCommandLineFlag(name.substr(2));
      if (positive != nullptr && positive->IsOfType<bool>()) {
        if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
        continue;
      }
    }
    // absl's built-in flags (--help, --helpfull, --version, --flagfile, ...) are not in the
    // registry FindCommandLineFlag searches; ParseCommandLine handles them.
    static constexpr absl::string_view kBuiltins[] = {
        "help", "helpfull", "helpshort", "helppackage", "helpon", "helpmatch", "version",
        "only_check_args", "flagfile", "fromenv", "tryfromenv", "undefok"};
    if (flag == nullptr && absl::c_linear_search(kBuiltins, name)) {
      if (!has_value && name != "help" && name != "helpfull" && name != "helpshort" &&
          name != "helppackage" && name != "version" && name != "only_check_args") {
        ++i;  // --flagfile FILE, --helpon NAME, ...: the value is the next argument
      }
      continue;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see ligerd --help)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value (--", name, "=VALUE)"));
      }
      value = argv[++i];
    }
    // Parsing into the flag is harmless: ParseCommandLine sets the same value again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", error));
    }
  }
  return absl::OkStatus();
}

const char* DaemonUsage() {
  return "the per-node daemon that owns fused GPU kernels for LLM training.\n"
         "It serves its control plane (gRPC) on a Unix socket only this user may use.\n\n"
         "usage: ligerd [--socket=PATH] [--cache_dir=DIR] [--devices=all|0,1] "
         "[--log_level=info]\n"
         "       ligerd --precompile_arch=sm_90 --cache_dir=DIR\n";
}

void InstallFlagsUsageConfig() {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/config.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  usage.version_string = [] { return std::string("ligerd " LIGERD_VERSION "\n"); };
  absl::SetFlagsUsageConfig(usage);
}

}  // namespace ligerd
