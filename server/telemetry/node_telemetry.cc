#include "server/telemetry/node_telemetry.h"

#include <unistd.h>

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"

namespace ligerd::telemetry {

namespace v1 = ::ligerd::v1;

NvmlSampler SystemNvml() {
  absl::StatusOr<std::unique_ptr<Nvml>> nvml = Nvml::Load();
  if (!nvml.ok()) {
    return [status = nvml.status()]() -> absl::StatusOr<std::vector<NvmlGpuSample>> { return status; };
  }
  std::shared_ptr<Nvml> shared(std::move(*nvml));
  return [shared] { return shared->Sample(); };
}

namespace {
std::string LocalHostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}
}  // namespace

NodeTelemetry::NodeTelemetry(LiveSources sources)
    : sources_(std::move(sources)),
      hostname_(sources_.hostname.empty() ? LocalHostname() : sources_.hostname) {}

v1::SnapshotResponse NodeTelemetry::Snapshot() {
  store_.PruneProcesses(&PidAlive);
  const Store::Snapshot s = store_.Read();
  v1::SnapshotResponse out;
  out.set_hostname(hostname_);
  out.set_version(sources_.version);
  out.set_time_unix_seconds(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  out.set_draining(sources_.draining ? sources_.draining() : false);

  for (const auto& [key, totals] : s.ops) {
    v1::OpStats* op = out.add_ops();
    op->set_op(key.op);
    op->set_direction(key.direction);
    op->set_dtype(key.dtype);
    op->set_dispatch(key.dispatch);
    op->set_job(key.job);
    op->set_calls_total(totals.calls);
    op->set_errors_total(totals.errors);
    op->set_bytes_moved_total(totals.bytes);
  }
  for (const auto& [key, h] : s.gpu_time) {
    v1::GpuTimeStats* g = out.add_gpu_time();
    g->set_op(key.first);
    g->set_dispatch(key.second);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kGpuSecondsBuckets.size(); ++i) {
      cumulative += h.buckets[i];
      g->add_bucket_upper_bounds(kGpuSecondsBuckets[i]);
      g->add_bucket_counts(cumulative);
    }
    g->set_count(h.count);
    g->set_sum_seconds(h.sum_seconds);
    g->set_sampled_bytes(h.sampled_bytes);
    // The per-op totals carry the sampled time too (all jobs of that op and mode together).
    for (v1::OpStats& op : *out.mutable_ops()) {
      if (op.op() == key.first && op.dispatch() == key.second && op.gpu_seconds_total() == 0) {
        op.set_gpu_seconds_total(h.sum_seconds);
        break;
      }
    }
  }
  for (const auto& [job, j] : s.jobs) {
    v1::JobStats* js = out.add_jobs();
    js->set_job(job);
    js->set_tokens_total(j.tokens);
    js->set_steps_total(j.steps);
    js->set_tokens_per_second(j.tokens_per_second);
    js->set_step_seconds(j.step_seconds);
    js->set_loss(j.loss);
    js->set_has_loss(j.has_loss);
    js->set_peak_allocated_bytes(j.peak_allocated_bytes);
    js->set_memory_saved_bytes(j.memory_saved_bytes);
  }

  // Sessions, and the processes behind them (a remote client need not report to be known).
  std::map<pid_t, v1::JobProcess> processes;
  for (const auto& [pid, p] : s.processes) {
    v1::JobProcess& jp = processes[pid];
    jp.set_pid(static_cast<uint32_t>(pid));
    jp.set_job(p.job);
    jp.set_user(p.user);
    jp.set_command(p.command);
    jp.set_dispatch(p.dispatch);
  }
  std::map<int, v1::SessionStats> per_device;  // summed over sessions, by CUDA ordinal
  if (sources_.sessions) {
    for (v1::SessionStats& session : sources_.sessions()) {
      v1::SessionStats& d = per_device[static_cast<int>(session.device())];
      d.set_ipc_mapped_bytes(d.ipc_mapped_bytes() + session.ipc_mapped_bytes());
      d.set_ipc_mappings(d.ipc_mappings() + session.ipc_mappings());
      d.set_scratch_bytes(d.scratch_bytes() + session.scratch_bytes());
      const pid_t pid = static_cast<pid_t>(session.pid());
      auto it = processes.find(pid);
      if (it == processes.end()) {
        v1::JobProcess& jp = processes[pid];
        jp.set_pid(session.pid());
        jp.set_job(session.job());
        jp.set_user(session.user());
        jp.set_command(ProcessCommandLine(pid));
        jp.set_dispatch(session.dispatch());
      } else if (session.dispatch() == "remote") {
        it->second.set_dispatch("remote");
      }
      *out.add_sessions() = std::move(session);
    }
  }
  out.set_active_sessions(static_cast<uint32_t>(out.sessions_size()));
  for (auto& [pid, jp] : processes) *out.add_processes() = std::move(jp);
  // Jobs of open sessions show even before their first report.
  for (const v1::SessionStats& session : out.sessions()) {
    bool known = false;
    for (const v1::JobStats& j : out.jobs()) known = known || j.job() == session.job();
    if (!known) out.add_jobs()->set_job(session.job());
  }

  // GPUs: NVML's view of the node, joined with the ones this ligerd serves by UUID.
  std::map<std::string, const GpuDescription*> served_by_uuid;
  for (const GpuDescription& gpu : sources_.inventory.gpus) served_by_uuid[gpu.uuid] = &gpu;
  std::map<pid_t, std::string> job_of;
  for (const v1::JobProcess& p : out.processes()) job_of[static_cast<pid_t>(p.pid())] = p.job();
  std::map<std::string, bool> listed;
  auto add_served = [&](v1::GpuStats* g, int ordinal) {
    g->set_cuda_device(ordinal);
    auto it = per_device.find(ordinal);
    if (it == per_device.end()) return;
    g->set_ipc_mapped_bytes(it->second.ipc_mapped_bytes());
    g->set_ipc_mappings(it->second.ipc_mappings());
    g->set_scratch_bytes(it->second.scratch_bytes());
  };
  if (sources_.nvml) {
    absl::MutexLock lock(&nvml_mu_);
    absl::StatusOr<std::vector<NvmlGpuSample>> samples = sources_.nvml();
    if (!samples.ok()) {
      out.set_nvml_status(std::string(samples.status().message()));
    } else {
      for (const NvmlGpuSample& sample : *samples) {
        v1::GpuStats* g = out.add_gpus();
        g->set_gpu(absl::StrCat(sample.index));
        g->set_uuid(sample.uuid);
        g->set_model_name(sample.name);
        g->set_memory_total_bytes(sample.total_bytes);
        g->set_memory_used_bytes(sample.used_bytes);
        g->set_has_memory_used(true);
        g->set_peak_bandwidth_bytes_per_second(sample.peak_bandwidth_bytes_per_second);
        for (const GpuProcessMemory& p : sample.processes) {
          v1::GpuProcessStats* ps = g->add_processes();
          ps->set_pid(static_cast<uint32_t>(p.pid));
          ps->set_used_bytes(p.used_bytes);
          auto job = job_of.find(p.pid);
          if (job != job_of.end()) ps->set_job(job->second);
        }
        auto served = served_by_uuid.find(sample.uuid);
        add_served(g, served == served_by_uuid.end() ? -1 : served->second->index);
        listed[sample.uuid] = true;
      }
    }
  } else {
    out.set_nvml_status("NVML not used");
  }
  for (const GpuDescription& gpu : sources_.inventory.gpus) {
    if (listed.count(gpu.uuid) != 0) continue;
    v1::GpuStats* g = out.add_gpus();
    g->set_gpu(absl::StrCat(gpu.index));  // no NVML: the CUDA ordinal stands in for its index
    g->set_uuid(gpu.uuid);
    g->set_model_name(gpu.name);
    g->set_memory_total_bytes(gpu.total_memory_bytes);
    add_served(g, gpu.index);
  }

  // JIT: the daemon's own cache, and what local clients reported of theirs.
  uint64_t hits = 0, misses = 0, compiles = 0;
  auto add_jit = [&](const std::string& source, const JitDelta& d) {
    v1::JitStats* j = out.add_jit();
    j->set_source(source);
    j->set_memory_hits_total(d.memory_hits);
    j->set_disk_hits_total(d.disk_hits);
    j->set_misses_total(d.misses);
    j->set_compiles_total(d.compiles);
    j->set_compile_failures_total(d.compile_failures);
    j->set_compile_seconds_total(d.compile_seconds);
    hits += d.memory_hits + d.disk_hits;
    misses += d.misses;
    compiles += d.compiles;
  };
  std::optional<kernels::JitCacheStats> daemon_jit = sources_.daemon_jit ? sources_.daemon_jit() : std::nullopt;
  JitDelta own;
  if (daemon_jit.has_value()) {
    own = JitDelta{daemon_jit->memory_hits, daemon_jit->disk_hits, daemon_jit->misses,
                   daemon_jit->compiles,    daemon_jit->compile_failures, daemon_jit->compile_seconds};
  }
  add_jit("daemon", own);
  add_jit("clients", s.client_jit);
  out.set_jit_cache_hits_total(hits);
  out.set_jit_cache_misses_total(misses);
  out.set_jit_compiles_total(compiles);

  for (const auto& [op, t] : s.tuning) {
    v1::TuningStats* ts = out.add_tuning();
    ts->set_op(op);
    ts->set_improved_total(t.improved);
    ts->set_kept_default_total(t.kept_default);
    ts->set_failed_total(t.failed);
  }
  for (const auto& [key, speedup] : s.tuning_speedup) {
    v1::TuningGain* g = out.add_tuning_gains();
    g->set_op(key.first);
    g->set_bucket(key.second);
    g->set_speedup(speedup);
  }
  for (const auto& [reason, n] : s.errors) {
    v1::ErrorCount* e = out.add_errors();
    e->set_reason(reason);
    e->set_count(n);
  }
  out.set_reports_accepted_total(s.reports_accepted);
  out.set_reports_rejected_total(s.reports_rejected);
  return out;
}

}  // namespace ligerd::telemetry
