// ligerctl: look at a running ligerd from a shell or a script.
//   ligerctl status          health, version, GPUs, MPS, sessions
//   ligerctl info [--json]   everything Info reports (JSON for scripts)
// Exit codes: 0 the daemon is serving; 1 it answers but is not serving; 2 usage error;
// 3 no daemon answers on the socket.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/control_client.h"
#include "client/default_paths.h"
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::string, socket, "",
          "ligerd's control socket. Default: $XDG_RUNTIME_DIR/ligerd/ligerd.sock, or "
          "/tmp/ligerd-<uid>/ligerd.sock (the daemon's default).");
ABSL_FLAG(bool, json, false, "info: print the full Info answer as JSON.");
ABSL_FLAG(int, timeout_ms, 2000, "How long to wait for the daemon before giving up.");

namespace {

constexpr int kExitServing = 0;
constexpr int kExitNotServing = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "ligerctl: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kUnavailable ||
                 status.code() == absl::StatusCode::kDeadlineExceeded
             ? kExitUnreachable
             : kExitNotServing;
}

std::string DescribeGpu(const ligerd::v1::Gpu& gpu) {
  return absl::StrCat(gpu.index(), ": ", gpu.name(), " (", gpu.uuid(), ", ",
                      gpu.total_memory_bytes() >> 20, " MiB, ", gpu.multiprocessor_count(),
                      " SMs, sm_", gpu.compute_capability_major(), gpu.compute_capability_minor(),
                      "), MPS ", gpu.mps_enabled() ? "active" : "inactive");
}

int Status(ligerd::ControlClient& client) {
  auto health = client.Health();
  if (!health.ok()) return Fail(health.status());
  ligerd::v1::GetInfoRequest request;
  auto info = client.GetInfo(request);
  if (!info.ok()) return Fail(info.status());
  const bool serving = *health == grpc::health::v1::HealthCheckResponse::SERVING;
  const auto& b = info->build();
  std::cout << "ligerd " << b.version() << " (" << b.git_sha() << ") on " << client.socket_path() << "\n"
            << "  health:   " << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*health) << "\n"
            << "  protocol: " << info->protocol_version() << " (accepts clients "
            << info->min_protocol_version() << ".." << info->protocol_version() << ")\n"
            << "  build:    CUDA " << b.cuda_toolkit_version() << ", NVRTC "
            << (b.nvrtc_version().empty() ? "unavailable" : b.nvrtc_version()) << ", archs "
            << absl::StrJoin(b.cuda_archs(), " ") << ", " << b.build_type() << "\n";
  if (info->gpus().empty()) {
    std::cout << "  GPUs:     none (" << info->gpu_status() << ")\n";
  } else {
    const char* label = "  GPUs:     ";
    for (const auto& gpu : info->gpus()) {
      std::cout << label << DescribeGpu(gpu) << "\n";
      label = "            ";
    }
  }
  std::vector<std::string> ops;
  for (const auto& op : info->ops()) ops.push_back(op.name());
  std::cout << "  sessions: " << info->active_sessions() << "\n"
            << "  ops:      " << info->ops_size() << (ops.empty() ? "" : " (" + absl::StrJoin(ops, ", ") + ")") << "\n"
            << "  cache:    " << info->cache_dir() << "\n"
            << "  uptime:   " << info->uptime_seconds() << " s, pid " << info->pid() << "\n";
  return serving ? kExitServing : kExitNotServing;
}

int Info(ligerd::ControlClient& client, bool json) {
  auto info = client.GetInfo();
  if (!info.ok()) return Fail(info.status());
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.always_print_primitive_fields = true;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(*info, &out, options).ok()) {
      std::fprintf(stderr, "ligerctl: cannot encode the answer as JSON\n");
      return kExitNotServing;
    }
    std::cout << out;
  } else {
    std::cout << info->DebugString();
  }
  return kExitServing;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ligerctl: inspect a running ligerd.\n\n"
      "usage: ligerctl [--socket=PATH] status\n"
      "       ligerctl [--socket=PATH] info [--json]\n\n"
      "Exit codes: 0 serving, 1 answering but not serving, 2 usage error, 3 no daemon answers.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::StrContains(file, "ligerctl"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "ligerctl: expected one command, 'status' or 'info' (see ligerctl --help)\n");
    return kExitUsage;
  }
  std::string socket = absl::GetFlag(FLAGS_socket);
  if (socket.empty()) socket = ligerd::DefaultSocketPath(ligerd::ProcessEnv(), geteuid());
  ligerd::ControlClient client(socket, std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  const std::string command = args[1];
  if (command == "status") return Status(client);
  if (command == "info") return Info(client, absl::GetFlag(FLAGS_json));
  std::fprintf(stderr, "ligerctl: unknown command '%s' (use 'status' or 'info')\n", command.c_str());
  return kExitUsage;
}
