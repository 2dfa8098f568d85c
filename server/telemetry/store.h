// The node's telemetry numbers that ligerd accumulates itself: ops (from the remote runners and
// from local clients' reports), sampled GPU times, errors by reason, tuning runs, jobs and their
// training statistics, and the JIT statistics local clients report. Live state (sessions, rings,
// IPC mappings, GPU memory, the daemon's own JIT cache) is not stored here: it is read when a
// scrape or a snapshot asks (telemetry/exposition.h). Every method is thread-safe.
//
// Cardinality: labels are op names, dtypes, dispatch modes and job names (a job name is what the
// client sets, default its script's name), all bounded in practice; process ids appear only on
// info-style series of live processes, which are dropped when the process is gone.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace ligerd::telemetry {

// Upper bounds (seconds) of the GPU-time histogram's buckets: 1 us to 1 s, 1-2-5 steps.
inline constexpr std::array<double, 19> kGpuSecondsBuckets = {
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3,
    2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1, 1.0};

struct OpKey {
  std::string op;         // catalogue name, e.g. "rms_norm_fwd"
  std::string direction;  // "forward" | "backward" | "other" (from the name: DirectionOf)
  std::string dtype;      // "bf16" | "f16" | "f32" | ... of the op's first tensor
  std::string dispatch;   // "remote" (run by ligerd) | "local" (reported by the client)
  std::string job;        // the job name the client set
  auto tie() const { return std::tie(op, direction, dtype, dispatch, job); }
  bool operator<(const OpKey& o) const { return tie() < o.tie(); }
};

struct OpTotals {
  uint64_t calls = 0;
  uint64_t errors = 0;
  uint64_t bytes = 0;  // by the minimal byte model: every tensor of the call read or written once
};

// Sampled kernel times of one op in one dispatch mode.
struct GpuTimeHistogram {
  std::array<uint64_t, kGpuSecondsBuckets.size()> buckets{};  // non-cumulative counts
  uint64_t count = 0;         // samples (the +Inf bucket)
  double sum_seconds = 0;
  uint64_t sampled_bytes = 0;  // bytes moved by the sampled calls (achieved bandwidth = bytes / sum)
  void Observe(double seconds, uint64_t bytes);
  void Merge(const GpuTimeHistogram& other);
};

// What a training job reports about itself (through the fused loss or the training loop).
struct JobStats {
  uint64_t tokens = 0;              // tokens processed, all steps
  uint64_t steps = 0;               // optimizer steps (or loss calls when steps are not reported)
  double tokens_per_second = 0;     // over the last report window
  double step_seconds = 0;          // the last step's wall time
  double loss = 0;                  // the last loss reported
  bool has_loss = false;
  uint64_t peak_allocated_bytes = 0;  // the job's peak allocated GPU memory (torch's allocator)
  uint64_t memory_saved_bytes = 0;    // memory the fused ops did not allocate vs unfused ones (max seen)
};

// A process known to run a job (an open session, or a client that reported).
struct JobProcess {
  pid_t pid = 0;
  uid_t uid = 0;
  std::string job;
  std::string user;
  std::string command;   // the process's command line (from /proc), cut to 256 bytes
  std::string dispatch;  // "remote" | "local" | "" when unknown
  std::chrono::steady_clock::time_point last_seen;
};

// A client's report of its JIT cache (deltas since its last report).
struct JitDelta {
  uint64_t memory_hits = 0, disk_hits = 0, misses = 0, compiles = 0, compile_failures = 0;
  double compile_seconds = 0;
};

struct TuningTotals {
  uint64_t improved = 0;      // a faster config was found and stored
  uint64_t kept_default = 0;  // the default stayed the best
  uint64_t failed = 0;
};

// "forward" for *_fwd, "backward" for *_bwd, "other" otherwise.
std::string DirectionOf(const std::string& op);

class Store {
 public:
  void AddOps(const OpKey& key, const OpTotals& delta);
  void ObserveGpuTime(const std::string& op, const std::string& dispatch, double seconds, uint64_t bytes);
  void MergeGpuTime(const std::string& op, const std::string& dispatch, const GpuTimeHistogram& delta);
  void AddError(const std::string& reason, uint64_t n = 1);
  void AddTuningRun(const std::string& op, const std::string& bucket, bool ok, bool improved, double speedup);
  void AddClientJit(const JitDelta& delta);
  // Merges a job's report: tokens/steps add up, the rest is the latest value (peaks: the max).
  void ReportJob(const std::string& job, const JobStats& delta, bool has_tokens_per_second);
  // Records (or refreshes) a process that runs `job`.
  void NoteProcess(const JobProcess& process);
  // Drops processes that no longer exist (or, for `pid_alive` tests, whatever it says is gone).
  void PruneProcesses(bool (*pid_alive)(pid_t));
  void AddReport(bool accepted);

  struct Snapshot {
    std::map<OpKey, OpTotals> ops;
    std::map<std::pair<std::string, std::string>, GpuTimeHistogram> gpu_time;  // (op, dispatch)
    std::map<std::string, uint64_t> errors;
    std::map<std::string, TuningTotals> tuning;         // by op
    std::map<std::pair<std::string, std::string>, double> tuning_speedup;  // (op, bucket) -> last
    JitDelta client_jit;
    std::map<std::string, JobStats> jobs;
    std::map<pid_t, JobProcess> processes;
    uint64_t reports_accepted = 0, reports_rejected = 0;
  };
  Snapshot Read() const;

 private:
  mutable absl::Mutex mu_;
  Snapshot s_ ABSL_GUARDED_BY(mu_);
};

// /proc/<pid>/cmdline with NULs as spaces, at most `limit` bytes ("" when unreadable).
std::string ProcessCommandLine(pid_t pid, size_t limit = 256);
// The user name of `uid` (its number when it has no name).
std::string UserName(uid_t uid);
// True while `pid` exists (kill(pid, 0) does not say ESRCH).
bool PidAlive(pid_t pid);

}  // namespace ligerd::telemetry
