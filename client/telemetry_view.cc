#include "client/telemetry_view.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "ligerd/v1/telemetry.grpc.pb.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

namespace {

int ExitFor(const absl::Status& status) {
  std::fprintf(stderr, "ligerctl: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kUnavailable || status.code() == absl::StatusCode::kDeadlineExceeded ? 3
                                                                                                                : 1;
}

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u]) : absl::StrFormat("%.1f %s", b, units[u]);
}

std::string Seconds(double s) {
  if (s <= 0) return "-";
  if (s < 1e-3) return absl::StrFormat("%.1f us", s * 1e6);
  if (s < 1) return absl::StrFormat("%.2f ms", s * 1e3);
  return absl::StrFormat("%.2f s", s);
}

std::string Fit(const std::string& text, size_t width) {
  return text.size() <= width ? text : text.substr(0, width - 1) + "~";
}

// Per op (all jobs, both modes): calls, errors, sampled GPU time and bytes.
struct OpTotals {
  uint64_t calls = 0, errors = 0, bytes = 0;
  double gpu_seconds = 0;
  uint64_t gpu_samples = 0, sampled_bytes = 0;
  std::map<std::string, uint64_t> by_dispatch;
};

std::map<std::string, OpTotals> OpsOf(const v1::SnapshotResponse& s) {
  std::map<std::string, OpTotals> out;
  for (const v1::OpStats& o : s.ops()) {
    OpTotals& t = out[o.op()];
    t.calls += o.calls_total();
    t.errors += o.errors_total();
    t.bytes += o.bytes_moved_total();
    t.by_dispatch[o.dispatch()] += o.calls_total();
  }
  for (const v1::GpuTimeStats& g : s.gpu_time()) {
    OpTotals& t = out[g.op()];
    t.gpu_seconds += g.sum_seconds();
    t.gpu_samples += g.count();
    t.sampled_bytes += g.sampled_bytes();
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::SnapshotResponse> FetchSnapshot(const ControlClient& client, int timeout_ms) {
  auto stub = v1::Telemetry::NewStub(client.channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  v1::SnapshotResponse out;
  const grpc::Status status = stub->Snapshot(&context, {}, &out);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Telemetry/Snapshot on ", client.socket_path(), ": ", status.error_message()));
  }
  return out;
}

std::string RenderTop(const v1::SnapshotResponse& now, const v1::SnapshotResponse* before) {
  const double dt = before != nullptr ? now.time_unix_seconds() - before->time_unix_seconds() : 0;
  std::string out;
  uint32_t remote = 0;
  for (const v1::SessionStats& s : now.sessions()) remote += s.dispatch() == "remote";
  absl::StrAppend(&out, absl::StrFormat("ligerd %s on %s   sessions %d (remote %d)   processes %d%s\n", now.version(),
                                        now.hostname(), now.active_sessions(), remote, now.processes_size(),
                                        now.draining() ? "   DRAINING" : ""));
  if (!now.nvml_status().empty()) absl::StrAppend(&out, "NVML: ", now.nvml_status(), "\n");

  absl::StrAppend(&out, "\nGPU  MODEL                      MEMORY USED / TOTAL       LIGERD IPC   SCRATCH   PROCESSES\n");
  if (now.gpus().empty()) absl::StrAppend(&out, "  (none)\n");
  for (const v1::GpuStats& g : now.gpus()) {
    const std::string used = g.has_memory_used()
                                 ? absl::StrFormat("%s / %s (%.0f%%)", Bytes(g.memory_used_bytes()),
                                                   Bytes(g.memory_total_bytes()),
                                                   g.memory_total_bytes() ? 100.0 * g.memory_used_bytes() / g.memory_total_bytes() : 0)
                                 : absl::StrCat("? / ", Bytes(g.memory_total_bytes()));
    absl::StrAppend(&out, absl::StrFormat("%-4s %-26s %-25s %-12s %-9s %d\n", g.gpu(), Fit(g.model_name(), 26), used,
                                          g.cuda_device() >= 0 ? Bytes(g.ipc_mapped_bytes()) : "-",
                                          g.cuda_device() >= 0 ? Bytes(g.scratch_bytes()) : "-", g.processes_size()));
  }

  absl::StrAppend(&out, "\nJOB                  PIDS  TOKENS/S    STEP      LOSS      PEAK MEM   SAVED      TOKENS\n");
  std::map<std::string, std::vector<std::string>> pids;
  for (const v1::JobProcess& p : now.processes()) pids[p.job()].push_back(absl::StrCat(p.pid()));
  if (now.jobs().empty()) absl::StrAppend(&out, "  (none)\n");
  for (const v1::JobStats& j : now.jobs()) {
    absl::StrAppend(&out, absl::StrFormat("%-20s %-5s %-11s %-9s %-9s %-10s %-10s %d\n", Fit(j.job(), 20),
                                          Fit(absl::StrJoin(pids[j.job()], ","), 5),
                                          j.tokens_per_second() > 0 ? absl::StrFormat("%.0f", j.tokens_per_second()) : "-",
                                          Seconds(j.step_seconds()), j.has_loss() ? absl::StrFormat("%.4f", j.loss()) : "-",
                                          j.peak_allocated_bytes() ? Bytes(j.peak_allocated_bytes()) : "-",
                                          j.memory_saved_bytes() ? Bytes(j.memory_saved_bytes()) : "-", j.tokens_total()));
  }

  const std::map<std::string, OpTotals> ops = OpsOf(now);
  const std::map<std::string, OpTotals> old = before != nullptr ? OpsOf(*before) : std::map<std::string, OpTotals>{};
  absl::StrAppend(&out, "\nOP                        OPS/S      CALLS       ERRORS  GPU TIME/CALL  GB/S    MODES\n");
  if (ops.empty()) absl::StrAppend(&out, "  (none)\n");
  for (const auto& [name, t] : ops) {
    OpTotals prev;
    if (auto it = old.find(name); it != old.end()) prev = it->second;
    const double rate = dt > 0 ? (t.calls - prev.calls) / dt : 0;
    // GPU time per call and bandwidth over the interval's samples; the totals' on the first screen.
    const uint64_t samples = t.gpu_samples - prev.gpu_samples;
    const double gpu_s = t.gpu_seconds - prev.gpu_seconds;
    const uint64_t sbytes = t.sampled_bytes - prev.sampled_bytes;
    std::vector<std::string> modes;
    for (const auto& [mode, n] : t.by_dispatch) modes.push_back(absl::StrCat(mode, " ", n));
    absl::StrAppend(&out, absl::StrFormat("%-25s %-10s %-11d %-7d %-14s %-7s %s\n", Fit(name, 25),
                                          dt > 0 ? absl::StrFormat("%.1f", rate) : "-", t.calls, t.errors,
                                          samples ? Seconds(gpu_s / samples) : "-",
                                          gpu_s > 0 ? absl::StrFormat("%.0f", sbytes / gpu_s / 1e9) : "-",
                                          absl::StrJoin(modes, ", ")));
  }

  uint64_t compiles = 0, failures = 0;
  double compile_s = 0;
  for (const v1::JitStats& j : now.jit()) {
    compiles += j.compiles_total();
    failures += j.compile_failures_total();
    compile_s += j.compile_seconds_total();
  }
  uint64_t improved = 0, kept = 0, failed = 0;
  for (const v1::TuningStats& t : now.tuning()) {
    improved += t.improved_total();
    kept += t.kept_default_total();
    failed += t.failed_total();
  }
  absl::StrAppend(&out, absl::StrFormat("\nJIT cache: %d hits, %d misses, %d compiles (%d failed, %.1f s)   "
                                        "tuning: %d improved, %d kept default, %d failed\n",
                                        now.jit_cache_hits_total(), now.jit_cache_misses_total(), compiles, failures,
                                        compile_s, improved, kept, failed));
  std::vector<std::string> errors;
  for (const v1::ErrorCount& e : now.errors()) errors.push_back(absl::StrCat(e.reason(), " ", e.count()));
  absl::StrAppend(&out, "errors: ", errors.empty() ? "none" : absl::StrJoin(errors, ", "), "\n");
  return out;
}

int TelemetryCommand(const ControlClient& client, bool json, int timeout_ms) {
  absl::StatusOr<v1::SnapshotResponse> s = FetchSnapshot(client, timeout_ms);
  if (!s.ok()) return ExitFor(s.status());
  if (json) {
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    std::string text;
    if (!google::protobuf::util::MessageToJsonString(*s, &text, options).ok()) {
      std::fprintf(stderr, "ligerctl: cannot print the snapshot as JSON\n");
      return 1;
    }
    std::cout << text;
    return 0;
  }
  std::cout << RenderTop(*s, nullptr);
  return 0;
}

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }
}  // namespace

int TopCommand(const ControlClient& client, int interval_ms, int iterations, int timeout_ms) {
  struct sigaction action {};
  action.sa_handler = &OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  const bool tty = isatty(STDOUT_FILENO) != 0;
  const auto interval = std::chrono::milliseconds(std::clamp(interval_ms, 100, 60000));
  std::optional<v1::SnapshotResponse> before;
  for (int i = 0; !g_stop.load() && (iterations <= 0 || i < iterations); ++i) {
    if (i > 0) {
      const auto until = std::chrono::steady_clock::now() + interval;
      while (!g_stop.load() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (g_stop.load()) break;
    }
    absl::StatusOr<v1::SnapshotResponse> now = FetchSnapshot(client, timeout_ms);
    if (!now.ok()) return ExitFor(now.status());
    const std::string screen = RenderTop(*now, before ? &*before : nullptr);
    if (tty) std::cout << "\033[H\033[2J";  // home, clear: redraw in place
    else if (i > 0) std::cout << "\n";
    std::cout << screen << std::flush;
    before = *std::move(now);
  }
  return 0;
}

}  // namespace ligerd
