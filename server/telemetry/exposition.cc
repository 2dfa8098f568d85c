#include "server/telemetry/exposition.h"

#include <deque>
#include <limits>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace ligerd::telemetry {

namespace v1 = ::ligerd::v1;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

using Labels = std::vector<ClientMetric::Label>;

class Families {
 public:
  MetricFamily& Family(const std::string& name, const std::string& help, MetricType type) {
    families_.push_back(MetricFamily{name, help, type, {}});
    return families_.back();
  }
  std::vector<MetricFamily> Take() { return {families_.begin(), families_.end()}; }

 private:
  std::deque<MetricFamily> families_;  // a deque: references to earlier families stay valid
};

void AddValue(MetricFamily& f, Labels labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

Labels GpuLabels(const v1::GpuStats& g, const std::string& host) {
  return {{"gpu", g.gpu()}, {"UUID", g.uuid()}, {"modelName", g.model_name()}, {"Hostname", host}};
}

}  // namespace

std::vector<MetricFamily> ToFamilies(const v1::SnapshotResponse& s, const BuildLabels& build) {
  Families out;
  const std::string& host = s.hostname();

  AddValue(out.Family("ligerd_build_info", "ligerd's build; the value is always 1.", MetricType::Gauge),
           {{"version", build.version}, {"git_sha", build.git_sha}, {"cuda", build.cuda}, {"Hostname", host}}, 1);
  AddValue(out.Family("ligerd_draining", "1 while an operator drain is in progress (new sessions refused).",
                      MetricType::Gauge),
           {}, s.draining() ? 1 : 0);

  // Ops.
  MetricFamily& ops = out.Family("ligerd_ops_total", "Ops launched, by op, direction, dtype, dispatch mode and job.",
                                 MetricType::Counter);
  MetricFamily& op_errors = out.Family("ligerd_op_errors_total", "Ops that failed (bad input or launch error).",
                                       MetricType::Counter);
  MetricFamily& op_bytes = out.Family(
      "ligerd_op_bytes_total",
      "Bytes the ops moved by the minimal byte model (every tensor of a call read or written once).",
      MetricType::Counter);
  for (const v1::OpStats& op : s.ops()) {
    Labels l = {{"op", op.op()}, {"direction", op.direction()}, {"dtype", op.dtype()},
                {"dispatch", op.dispatch()}, {"job", op.job()}};
    AddValue(ops, l, static_cast<double>(op.calls_total()));
    AddValue(op_errors, l, static_cast<double>(op.errors_total()));
    AddValue(op_bytes, l, static_cast<double>(op.bytes_moved_total()));
  }
  MetricFamily& gpu_time = out.Family(
      "ligerd_op_gpu_seconds",
      "Kernel time of sampled op calls (CUDA events around one launch in N), by op and dispatch mode.",
      MetricType::Histogram);
  MetricFamily& sampled_bytes = out.Family(
      "ligerd_op_sampled_bytes_total",
      "Bytes moved by the sampled calls of ligerd_op_gpu_seconds: their achieved bandwidth is "
      "rate(this) / rate(ligerd_op_gpu_seconds_sum).",
      MetricType::Counter);
  for (const v1::GpuTimeStats& g : s.gpu_time()) {
    ClientMetric m;
    m.label = {{"op", g.op()}, {"dispatch", g.dispatch()}};
    m.histogram.sample_count = g.count();
    m.histogram.sample_sum = g.sum_seconds();
    for (int i = 0; i < g.bucket_upper_bounds_size() && i < g.bucket_counts_size(); ++i) {
      m.histogram.bucket.push_back({g.bucket_counts(i), g.bucket_upper_bounds(i)});
    }
    m.histogram.bucket.push_back({g.count(), std::numeric_limits<double>::infinity()});
    gpu_time.metric.push_back(m);
    AddValue(sampled_bytes, m.label, static_cast<double>(g.sampled_bytes()));
  }

  // Sessions, processes, rings.
  MetricFamily& sessions = out.Family("ligerd_sessions", "Open sessions, by dispatch mode.", MetricType::Gauge);
  std::map<std::string, int> by_mode = {{"remote", 0}, {"local", 0}};
  for (const v1::SessionStats& session : s.sessions()) ++by_mode[session.dispatch()];
  for (const auto& [mode, n] : by_mode) AddValue(sessions, {{"dispatch", mode}}, n);
  MetricFamily& info = out.Family(
      "ligerd_job_process_info",
      "A live process of a job (an open session or a client that reported); the value is always 1.",
      MetricType::Gauge);
  for (const v1::JobProcess& p : s.processes()) {
    AddValue(info,
             {{"job", p.job()}, {"pid", absl::StrCat(p.pid())}, {"user", p.user()}, {"command", p.command()},
              {"dispatch", p.dispatch()}, {"Hostname", host}},
             1);
  }
  MetricFamily& pending = out.Family("ligerd_ring_pending_records",
                                     "Op records written to a session's ring and not yet read by ligerd.",
                                     MetricType::Gauge);
  MetricFamily& capacity = out.Family("ligerd_ring_capacity_records", "Records a session's ring holds.",
                                      MetricType::Gauge);
  for (const v1::SessionStats& session : s.sessions()) {
    Labels l = {{"job", session.job()}, {"session", absl::StrCat(session.session_id())}};
    AddValue(pending, l, static_cast<double>(session.ring_pending_records()));
    AddValue(capacity, l, static_cast<double>(session.ring_capacity_records()));
  }

  // GPUs.
  MetricFamily& used = out.Family("ligerd_gpu_memory_used_bytes", "GPU memory in use (NVML), all processes.",
                                  MetricType::Gauge);
  MetricFamily& total = out.Family("ligerd_gpu_memory_total_bytes", "GPU memory size.", MetricType::Gauge);
  MetricFamily& proc = out.Family("ligerd_gpu_process_memory_bytes",
                                  "GPU memory NVML attributes to each compute process, with its job if ligerd knows it.",
                                  MetricType::Gauge);
  MetricFamily& bandwidth = out.Family(
      "ligerd_gpu_memory_bandwidth_bytes_per_second",
      "Peak DRAM bandwidth (max memory clock x bus width x 2, from NVML): the speed of light for memory-bound ops.",
      MetricType::Gauge);
  MetricFamily& ipc = out.Family("ligerd_ipc_mapped_bytes", "Client memory ligerd has mapped through CUDA IPC.",
                                 MetricType::Gauge);
  MetricFamily& ipc_n = out.Family("ligerd_ipc_mappings", "CUDA IPC mappings open.", MetricType::Gauge);
  MetricFamily& scratch = out.Family("ligerd_scratch_bytes", "Scratch (workspace) memory ligerd holds for remote ops.",
                                     MetricType::Gauge);
  for (const v1::GpuStats& g : s.gpus()) {
    const Labels l = GpuLabels(g, host);
    if (g.has_memory_used()) AddValue(used, l, static_cast<double>(g.memory_used_bytes()));
    AddValue(total, l, static_cast<double>(g.memory_total_bytes()));
    if (g.peak_bandwidth_bytes_per_second() > 0) {
      AddValue(bandwidth, l, static_cast<double>(g.peak_bandwidth_bytes_per_second()));
    }
    for (const v1::GpuProcessStats& p : g.processes()) {
      Labels pl = l;
      pl.push_back({"pid", absl::StrCat(p.pid())});
      pl.push_back({"job", p.job()});
      AddValue(proc, pl, static_cast<double>(p.used_bytes()));
    }
    if (g.cuda_device() >= 0) {
      AddValue(ipc, l, static_cast<double>(g.ipc_mapped_bytes()));
      AddValue(ipc_n, l, static_cast<double>(g.ipc_mappings()));
      AddValue(scratch, l, static_cast<double>(g.scratch_bytes()));
    }
  }
  AddValue(out.Family("ligerd_nvml_available", "1 when NVML answered (per-GPU memory is then reported).",
                      MetricType::Gauge),
           {}, s.nvml_status().empty() ? 1 : 0);

  // JIT cache.
  MetricFamily& lookups = out.Family("ligerd_jit_cache_lookups_total",
                                     "JIT cache lookups by result (memory_hit, disk_hit, miss) and by whose cache use "
                                     "(daemon, or the local clients that reported theirs).",
                                     MetricType::Counter);
  MetricFamily& compiles = out.Family("ligerd_jit_compiles_total", "NVRTC compiles that succeeded.", MetricType::Counter);
  MetricFamily& failures = out.Family("ligerd_jit_compile_failures_total", "NVRTC compiles that failed.",
                                      MetricType::Counter);
  MetricFamily& compile_s = out.Family("ligerd_jit_compile_seconds_total", "Wall time spent compiling.",
                                       MetricType::Counter);
  for (const v1::JitStats& j : s.jit()) {
    AddValue(lookups, {{"result", "memory_hit"}, {"source", j.source()}}, static_cast<double>(j.memory_hits_total()));
    AddValue(lookups, {{"result", "disk_hit"}, {"source", j.source()}}, static_cast<double>(j.disk_hits_total()));
    AddValue(lookups, {{"result", "miss"}, {"source", j.source()}}, static_cast<double>(j.misses_total()));
    AddValue(compiles, {{"source", j.source()}}, static_cast<double>(j.compiles_total()));
    AddValue(failures, {{"source", j.source()}}, static_cast<double>(j.compile_failures_total()));
    AddValue(compile_s, {{"source", j.source()}}, j.compile_seconds_total());
  }

  // Tuning.
  MetricFamily& runs = out.Family("ligerd_tuning_runs_total",
                                  "Tuning runs (Kernels/Tune, one per shape) by op and result: improved (a faster "
                                  "config was stored), kept_default, failed.",
                                  MetricType::Counter);
  for (const v1::TuningStats& t : s.tuning()) {
    AddValue(runs, {{"op", t.op()}, {"result", "improved"}}, static_cast<double>(t.improved_total()));
    AddValue(runs, {{"op", t.op()}, {"result", "kept_default"}}, static_cast<double>(t.kept_default_total()));
    AddValue(runs, {{"op", t.op()}, {"result", "failed"}}, static_cast<double>(t.failed_total()));
  }
  MetricFamily& gain = out.Family("ligerd_tuning_speedup_ratio",
                                  "Default config time / tuned config time of the last tuning run of each bucket.",
                                  MetricType::Gauge);
  for (const v1::TuningGain& g : s.tuning_gains()) AddValue(gain, {{"op", g.op()}, {"bucket", g.bucket()}}, g.speedup());

  // Errors.
  MetricFamily& errors = out.Family("ligerd_errors_total", "Errors by reason (see docs/telemetry.md).",
                                    MetricType::Counter);
  for (const v1::ErrorCount& e : s.errors()) AddValue(errors, {{"reason", e.reason()}}, static_cast<double>(e.count()));
  MetricFamily& reports = out.Family("ligerd_telemetry_reports_total", "Telemetry.Report batches by result.",
                                     MetricType::Counter);
  AddValue(reports, {{"result", "accepted"}}, static_cast<double>(s.reports_accepted_total()));
  AddValue(reports, {{"result", "rejected"}}, static_cast<double>(s.reports_rejected_total()));

  // Jobs.
  MetricFamily& tokens = out.Family("ligerd_job_tokens_total", "Tokens the job processed (reported by its fused loss).",
                                    MetricType::Counter);
  MetricFamily& steps = out.Family("ligerd_job_steps_total", "Training steps the job reported.", MetricType::Counter);
  MetricFamily& tps = out.Family("ligerd_job_tokens_per_second", "The job's tokens/s over its last report window.",
                                 MetricType::Gauge);
  MetricFamily& step_s = out.Family("ligerd_job_step_seconds", "Wall time of the job's last step.", MetricType::Gauge);
  MetricFamily& loss = out.Family("ligerd_job_loss", "The job's last reported loss.", MetricType::Gauge);
  MetricFamily& peak = out.Family("ligerd_job_peak_allocated_bytes", "The job's peak allocated GPU memory (torch).",
                                  MetricType::Gauge);
  MetricFamily& saved = out.Family(
      "ligerd_job_memory_saved_bytes",
      "Memory the job's fused ops did not allocate compared with the unfused ops (largest seen, from each op's byte model).",
      MetricType::Gauge);
  for (const v1::JobStats& j : s.jobs()) {
    const Labels l = {{"job", j.job()}};
    AddValue(tokens, l, static_cast<double>(j.tokens_total()));
    AddValue(steps, l, static_cast<double>(j.steps_total()));
    AddValue(tps, l, j.tokens_per_second());
    AddValue(step_s, l, j.step_seconds());
    if (j.has_loss()) AddValue(loss, l, j.loss());
    AddValue(peak, l, static_cast<double>(j.peak_allocated_bytes()));
    AddValue(saved, l, static_cast<double>(j.memory_saved_bytes()));
  }
  return out.Take();
}

std::string PrometheusText(const v1::SnapshotResponse& snapshot, const BuildLabels& build) {
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, ToFamilies(snapshot, build));
  return text.str();
}

}  // namespace ligerd::telemetry
