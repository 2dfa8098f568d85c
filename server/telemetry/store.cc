#include "server/telemetry/store.h"

#include <pwd.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ligerd::telemetry {

void GpuTimeHistogram::Observe(double seconds, uint64_t bytes) {
  if (!(seconds >= 0)) return;  // NaN or negative: a broken sample, not a time
  for (size_t i = 0; i < kGpuSecondsBuckets.size(); ++i) {
    if (seconds <= kGpuSecondsBuckets[i]) {
      ++buckets[i];
      break;
    }
  }
  ++count;
  sum_seconds += seconds;
  sampled_bytes += bytes;
}

void GpuTimeHistogram::Merge(const GpuTimeHistogram& other) {
  for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
  count += other.count;
  sum_seconds += other.sum_seconds;
  sampled_bytes += other.sampled_bytes;
}

std::string DirectionOf(const std::string& op) {
  if (absl::EndsWith(op, "_fwd")) return "forward";
  if (absl::EndsWith(op, "_bwd")) return "backward";
  return "other";
}

void Store::AddOps(const OpKey& key, const OpTotals& delta) {
  absl::MutexLock lock(&mu_);
  OpTotals& t = s_.ops[key];
  t.calls += delta.calls;
  t.errors += delta.errors;
  t.bytes += delta.bytes;
}

void Store::ObserveGpuTime(const std::string& op, const std::string& dispatch, double seconds, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  s_.gpu_time[{op, dispatch}].Observe(seconds, bytes);
}

void Store::MergeGpuTime(const std::string& op, const std::string& dispatch, const GpuTimeHistogram& delta) {
  absl::MutexLock lock(&mu_);
  s_.gpu_time[{op, dispatch}].Merge(delta);
}

void Store::AddError(const std::string& reason, uint64_t n) {
  absl::MutexLock lock(&mu_);
  s_.errors[reason] += n;
}

void Store::AddTuningRun(const std::string& op, const std::string& bucket, bool ok, bool improved, double speedup) {
  absl::MutexLock lock(&mu_);
  TuningTotals& t = s_.tuning[op];
  if (!ok) {
    ++t.failed;
    return;
  }
  ++(improved ? t.improved : t.kept_default);
  s_.tuning_speedup[{op, bucket}] = speedup;
}

void Store::AddClientJit(const JitDelta& d) {
  absl::MutexLock lock(&mu_);
  s_.client_jit.memory_hits += d.memory_hits;
  s_.client_jit.disk_hits += d.disk_hits;
  s_.client_jit.misses += d.misses;
  s_.client_jit.compiles += d.compiles;
  s_.client_jit.compile_failures += d.compile_failures;
  s_.client_jit.compile_seconds += d.compile_seconds;
}

void Store::ReportJob(const std::string& job, const JobStats& d, bool has_tokens_per_second) {
  absl::MutexLock lock(&mu_);
  JobStats& j = s_.jobs[job];
  j.tokens += d.tokens;
  j.steps += d.steps;
  if (has_tokens_per_second) j.tokens_per_second = d.tokens_per_second;
  if (d.step_seconds > 0) j.step_seconds = d.step_seconds;
  if (d.has_loss) {
    j.loss = d.loss;
    j.has_loss = true;
  }
  j.peak_allocated_bytes = std::max(j.peak_allocated_bytes, d.peak_allocated_bytes);
  j.memory_saved_bytes = std::max(j.memory_saved_bytes, d.memory_saved_bytes);
}

void Store::NoteProcess(const JobProcess& process) {
  absl::MutexLock lock(&mu_);
  JobProcess& p = s_.processes[process.pid];
  const std::string dispatch = p.dispatch;
  p = process;
  // A process with a remote session that also reports local ops: keep what we knew if unsaid.
  if (p.dispatch.empty()) p.dispatch = dispatch;
  if (s_.jobs.find(p.job) == s_.jobs.end()) s_.jobs[p.job];  // the job shows before its first report
}

void Store::PruneProcesses(bool (*pid_alive)(pid_t)) {
  absl::MutexLock lock(&mu_);
  for (auto it = s_.processes.begin(); it != s_.processes.end();) {
    it = pid_alive(it->first) ? std::next(it) : s_.processes.erase(it);
  }
}

void Store::AddReport(bool accepted) {
  absl::MutexLock lock(&mu_);
  ++(accepted ? s_.reports_accepted : s_.reports_rejected);
}

Store::Snapshot Store::Read() const {
  absl::MutexLock lock(&mu_);
  return s_;
}

std::string ProcessCommandLine(pid_t pid, size_t limit) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
  if (!in) return "";
  std::string raw;
  raw.resize(limit);
  in.read(raw.data(), static_cast<std::streamsize>(limit));
  raw.resize(static_cast<size_t>(in.gcount()));
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw) {
    if (c == '\0') c = ' ';
    else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';  // printable ASCII labels
  }
  return raw;
}

std::string UserName(uid_t uid) {
  passwd entry;
  passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return absl::StrCat(uid);
}

bool PidAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH); }

}  // namespace ligerd::telemetry
