// ligerctl: look at a running ligerd from a shell or a script.
//   ligerctl status          health, version, GPUs, MPS, sessions
//   ligerctl info [--json]   everything Info reports (JSON for scripts)
//   ligerctl tune SHAPE... [--model=llama3-8b [--tokens=N]] [--dtype=bf16] [--device=0]
//                            tune launch configs in the daemon (SHAPE = op:dtype:ROWSxCOLS, or
//                            op:ROWSxCOLS with --dtype) and print default vs tuned per shape
//   ligerctl tune --show     list the node's tuning DB (every GPU model)
//   ligerctl telemetry [--json]  the node's telemetry now: jobs, GPUs, ops (JSON: the whole
//                            Telemetry/Snapshot, docs/telemetry.md)
//   ligerctl top [--interval_ms=2000] [--iterations=N]
//                            a live view of the same, redrawn until Ctrl-C
//   ligerctl paths           the socket and cache dir ligerd and its clients default to here
//                            (common/default_paths.h; needs no daemon)
//   ligerctl health-proxy --listen=HOST:PORT
//                            serve the daemon's health on TCP for Kubernetes gRPC probes
//                            (client/health_proxy.h) until SIGTERM
// Exit codes: 0 the daemon is serving (tune: tuned); 1 it answers but is not serving (tune: the
// daemon could not tune, e.g. no GPU); 2 usage error (tune: a shape the daemon refused);
// 3 no daemon answers on the socket.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/control_client.h"
#include "client/telemetry_view.h"
#include "client/health_proxy.h"
#include "common/default_paths.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/tuning/tuning_db.h"

ABSL_FLAG(std::string, socket, "",
          "ligerd's control socket. Default: $LIGERD_SOCKET; else the first of "
          "$XDG_RUNTIME_DIR/ligerd/ligerd.sock (or /tmp/ligerd-<uid>/ligerd.sock without XDG_RUNTIME_DIR) "
          "and /run/ligerd/ligerd.sock (the node service) that exists (common/default_paths.h).");
ABSL_FLAG(std::string, listen, "0.0.0.0:8081",
          "health-proxy: the TCP address to answer grpc.health.v1.Health/Check on.");
ABSL_FLAG(bool, json, false, "info, telemetry: print the full answer as JSON.");
ABSL_FLAG(int, interval_ms, 2000, "top: how often to refresh.");
ABSL_FLAG(int, iterations, 0, "top: stop after this many screens (0: until Ctrl-C).");
ABSL_FLAG(int, timeout_ms, 2000, "How long to wait for the daemon before giving up.");
ABSL_FLAG(std::string, model, "",
          "tune: add the row-wise shapes of a model (llama3-8b, llama3-70b, mistral-7b, qwen2-7b, gemma-7b): "
          "rms_norm_fwd/bwd at tokens x hidden, the model's GLU fwd/bwd at tokens x FFN.");
ABSL_FLAG(int64_t, tokens, 16384, "tune: rows (tokens per step) for --model shapes.");
ABSL_FLAG(std::string, dtype, "bf16", "tune: dtype for --model shapes and for shapes given as op:ROWSxCOLS.");
ABSL_FLAG(int, device, 0, "tune: the daemon's CUDA ordinal to tune on.");
ABSL_FLAG(int, trials, 0, "tune: timed trials per config (median); 0 = the daemon's default.");
ABSL_FLAG(bool, show, false, "tune: list the tuning DB instead of tuning.");
ABSL_FLAG(std::string, cache_dir, "",
          "tune --show: the cache dir to read. Default: the daemon's (from Info), else the default cache "
          "dir ($LIGERD_CACHE_DIR, else $XDG_CACHE_HOME/ligerd, else $HOME/.cache/ligerd, else "
          "/tmp/ligerd-<uid>/cache).");

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

struct ModelPreset {
  const char* name;
  int64_t hidden;
  int64_t ffn;
  const char* glu;
};
// Published configs (HF config.json: hidden_size, intermediate_size, hidden_act).
constexpr ModelPreset kPresets[] = {
    {"llama3-8b", 4096, 14336, "swiglu"},  {"llama3-70b", 8192, 28672, "swiglu"},
    {"mistral-7b", 4096, 14336, "swiglu"}, {"qwen2-7b", 3584, 18944, "swiglu"},
    {"gemma-7b", 3072, 24576, "geglu"},
};

// "op:dtype:ROWSxCOLS" or "op:ROWSxCOLS".
absl::StatusOr<ligerd::v1::TuneShape> ParseShape(const std::string& text, const std::string& default_dtype) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() == 2) parts.insert(parts.begin() + 1, default_dtype);
  std::vector<std::string> dims = parts.size() == 3 ? absl::StrSplit(parts[2], 'x') : std::vector<std::string>{};
  ligerd::v1::TuneShape shape;
  int64_t rows = 0, cols = 0;
  if (parts.size() != 3 || parts[0].empty() || dims.size() != 2 || !absl::SimpleAtoi(dims[0], &rows) ||
      !absl::SimpleAtoi(dims[1], &cols))
    return absl::InvalidArgumentError(
        absl::StrCat("bad shape '", text, "': expected op:dtype:ROWSxCOLS, e.g. rms_norm_fwd:bf16:16384x4096"));
  shape.set_op(parts[0]);
  shape.set_dtype(parts[1]);
  shape.set_rows(rows);
  shape.set_cols(cols);
  return shape;
}

std::string ShowCacheDir(ligerd::ControlClient& client) {
  if (!absl::GetFlag(FLAGS_cache_dir).empty()) return absl::GetFlag(FLAGS_cache_dir);
  ligerd::v1::GetInfoRequest request;
  request.set_omit_catalogue(true);
  auto info = client.GetInfo(request);
  if (info.ok() && !info->cache_dir().empty()) return info->cache_dir();
  return ligerd::DefaultCacheDir(ligerd::ProcessEnv(), geteuid());
}

int ShowTuning(ligerd::ControlClient& client) {
  const std::string dir = ShowCacheDir(client);
  const auto listings = ligerd::kernels::ListTuningDbs(dir);
  if (listings.empty()) {
    std::cout << "no tuning DB under " << dir << "/tuning (run `ligerctl tune ...` first)\n";
    return kExitServing;
  }
  for (const auto& l : listings) {
    std::cout << l.file.string() << "\n";
    if (!l.status.ok()) {
      std::cout << "  unreadable: " << l.status.message() << " (it will be rebuilt by the next tune)\n";
      continue;
    }
    std::cout << "  GPU " << l.gpu.name << ", " << l.gpu.sm_count << " SMs, sm_" << l.gpu.compute_capability << ", "
              << l.entries.size() << " entries\n";
    std::cout << absl::StrFormat("  %-14s %-5s %-13s %10s %10s %7s  %s\n", "op", "dtype", "bucket", "default ms",
                                 "tuned ms", "gain", "config");
    for (const auto& e : l.entries) {
      const double gain = e.tuned_ms > 0 ? (e.default_ms / e.tuned_ms - 1.0) * 100.0 : 0.0;
      std::cout << absl::StrFormat("  %-14s %-5s %-13s %10.4f %10.4f %+6.1f%%  %s\n", e.key.op, e.key.dtype,
                                   absl::StrCat(e.key.rows_bucket, "x", e.key.cols), e.default_ms, e.tuned_ms, gain,
                                   ligerd::kernels::FormatLaunchConfig(e.config));
    }
  }
  return kExitServing;
}

int Tune(ligerd::ControlClient& client, const std::vector<std::string>& shape_args) {
  if (absl::GetFlag(FLAGS_show)) return ShowTuning(client);
  ligerd::v1::TuneRequest request;
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  for (const std::string& text : shape_args) {
    auto shape = ParseShape(text, dtype);
    if (!shape.ok()) {
      std::fprintf(stderr, "ligerctl: %s\n", std::string(shape.status().message()).c_str());
      return kExitUsage;
    }
    *request.add_shapes() = *shape;
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  if (!model.empty()) {
    const ModelPreset* preset = nullptr;
    for (const ModelPreset& p : kPresets)
      if (model == p.name) preset = &p;
    if (preset == nullptr) {
      std::vector<std::string> names;
      for (const ModelPreset& p : kPresets) names.push_back(p.name);
      std::fprintf(stderr, "ligerctl: unknown --model '%s' (known: %s)\n", model.c_str(),
                   absl::StrJoin(names, ", ").c_str());
      return kExitUsage;
    }
    const int64_t tokens = absl::GetFlag(FLAGS_tokens);
    const std::pair<std::string, int64_t> rows[] = {{"rms_norm_fwd", preset->hidden},
                                                    {"rms_norm_bwd", preset->hidden},
                                                    {absl::StrCat(preset->glu, "_fwd"), preset->ffn},
                                                    {absl::StrCat(preset->glu, "_bwd"), preset->ffn}};
    for (const auto& [op, cols] : rows) {
      ligerd::v1::TuneShape* s = request.add_shapes();
      s->set_op(op);
      s->set_dtype(dtype);
      s->set_rows(tokens);
      s->set_cols(cols);
    }
  }
  if (request.shapes_size() == 0) {
    std::fprintf(stderr, "ligerctl: tune needs shapes (op:dtype:ROWSxCOLS ...) and/or --model, or --show\n");
    return kExitUsage;
  }
  request.set_device(static_cast<uint32_t>(absl::GetFlag(FLAGS_device)));
  request.set_trials(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_trials))));
  std::vector<ligerd::v1::TuneResult> results;
  const absl::Status status = client.Tune(request, [&](const ligerd::v1::TuneProgress& p) {
    std::fprintf(stderr, "[%u/%u] %s\n", p.shape_index() + 1, p.shape_count(), p.message().c_str());
    if (p.has_result()) results.push_back(p.result());
  });
  if (!results.empty()) {
    std::cout << absl::StrFormat("%-14s %-5s %-13s %10s %10s %7s  %s\n", "op", "dtype", "shape", "default ms",
                                 "tuned ms", "gain", "tuned config (default)");
    for (const auto& r : results) {
      const double gain = r.tuned_ms() > 0 ? (r.default_ms() / r.tuned_ms() - 1.0) * 100.0 : 0.0;
      const bool same = r.tuned_config() == r.default_config();
      std::cout << absl::StrFormat("%-14s %-5s %-13s %10.4f %10.4f %+6.1f%%  %s%s\n", r.shape().op(),
                                   r.shape().dtype(), absl::StrCat(r.shape().rows(), "x", r.shape().cols()),
                                   r.default_ms(), r.tuned_ms(), gain, r.tuned_config(),
                                   same ? " (= default)" : absl::StrCat(" (default ", r.default_config(), ")"));
    }
    std::cout << "stored in " << results.back().db_file() << "\n";
  }
  if (!status.ok()) {
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      std::fprintf(stderr, "ligerctl: %s\n", std::string(status.message()).c_str());
      return kExitUsage;
    }
    return Fail(status);
  }
  return kExitServing;
}

// Serves the daemon's health on `listen` until SIGTERM/SIGINT (client/health_proxy.h).
int HealthProxyMain(const std::string& socket, const std::string& listen) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before gRPC's threads exist: they inherit it
  absl::StatusOr<std::unique_ptr<ligerd::HealthProxy>> proxy = ligerd::HealthProxy::Start(listen, socket);
  if (!proxy.ok()) {
    std::fprintf(stderr, "ligerctl: %s\n", std::string(proxy.status().message()).c_str());
    return kExitUsage;
  }
  std::printf("ligerctl: answering health checks on port %d for the ligerd on %s\n", (*proxy)->port(),
              socket.c_str());
  std::fflush(stdout);
  int signo = 0;
  sigwait(&stop, &signo);
  (*proxy)->Shutdown();
  return kExitServing;
}

// The first of `search` that is a socket now; the first of them when none is (its error then
// names the path that was expected).
std::string FirstExistingSocket(const std::vector<std::string>& search) {
  for (const std::string& path : search) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return path;
  }
  return search.front();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ligerctl: inspect a running ligerd.\n\n"
      "usage: ligerctl [--socket=PATH] status\n"
      "       ligerctl [--socket=PATH] info [--json]\n"
      "       ligerctl [--socket=PATH] tune op:dtype:ROWSxCOLS... [--model=llama3-8b [--tokens=16384]]\n"
      "       ligerctl [--socket=PATH] tune --show\n"
      "       ligerctl [--socket=PATH] telemetry [--json]\n"
      "       ligerctl [--socket=PATH] top [--interval_ms=2000] [--iterations=N]\n"
      "       ligerctl paths\n"
      "       ligerctl [--socket=PATH] health-proxy [--listen=HOST:PORT]\n\n"
      "Exit codes: 0 serving, 1 answering but not serving, 2 usage error, 3 no daemon answers.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::StrContains(file, "ligerctl"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2 || (args.size() != 2 && std::string(args[1]) != "tune")) {
    std::fprintf(stderr,
                 "ligerctl: expected one command, 'status', 'info', 'telemetry', 'top', 'tune', 'paths' or 'health-proxy' (see ligerctl --help)\n");
    return kExitUsage;
  }
  std::string socket = absl::GetFlag(FLAGS_socket);
  const std::vector<std::string> search = ligerd::SocketSearchPath(ligerd::ProcessEnv(), geteuid());
  const std::string command = args[1];
  if (command == "paths") {
    // What a flagless ligerd and the Python client use (ligerd/_paths.py implements the same
    // rule; tests/python/test_paths.py compares the two through this output).
    std::string cache_dir = absl::GetFlag(FLAGS_cache_dir);
    if (cache_dir.empty()) cache_dir = ligerd::DefaultCacheDir(ligerd::ProcessEnv(), geteuid());
    if (socket.empty()) socket = ligerd::DefaultSocketPath(ligerd::ProcessEnv(), geteuid());
    std::cout << "socket: " << socket << "\nsearch: " << absl::StrJoin(search, ":") << "\ncache_dir: " << cache_dir
              << "\n";
    return kExitServing;
  }
  if (socket.empty()) socket = FirstExistingSocket(search);
  if (command == "health-proxy") return HealthProxyMain(socket, absl::GetFlag(FLAGS_listen));
  ligerd::ControlClient client(socket, std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  if (command == "status") return Status(client);
  if (command == "info") return Info(client, absl::GetFlag(FLAGS_json));
  if (command == "telemetry") {
    return ligerd::TelemetryCommand(client, absl::GetFlag(FLAGS_json), absl::GetFlag(FLAGS_timeout_ms));
  }
  if (command == "top") {
    return ligerd::TopCommand(client, absl::GetFlag(FLAGS_interval_ms), absl::GetFlag(FLAGS_iterations),
                              absl::GetFlag(FLAGS_timeout_ms));
  }
  if (command == "tune") return Tune(client, std::vector<std::string>(args.begin() + 2, args.end()));
  std::fprintf(stderr, "ligerctl: unknown command '%s' (use 'status', 'info', 'telemetry', 'top', 'tune' or 'paths')\n",
               command.c_str());
  return kExitUsage;
}
