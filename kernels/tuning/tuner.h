// The autotuner: times every candidate launch config of an op for one (dtype, rows x cols) on
// scratch buffers and stores the fastest in the node's tuning DB (tuning_db.h).
//
// For one request it: builds the op's TuningProblem (OpSpec::tuning_problem), allocates every
// tensor with cuMemAlloc (never a user tensor) and fills it with random values, asks the op for
// its candidates (OpSpec::candidates), then for the default config and each candidate: plans
// through the executor (the op checks the config like any input), warms up, and runs `trials`
// timed trials of `reps` back-to-back launches between two CUDA events (reps chosen so a trial
// lasts ~kTrialTarget); the config's time is the median trial / reps. The fastest wins only if it
// beats the default by more than kMinGain (else the default itself is stored, so noise never
// picks a config). Driver API only (no cudart), on its own stream in the device's primary context.
// Scratch tensors larger than L2 make every timing L2-cold; small shapes are timed L2-warm.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/executor.h"
#include "kernels/tuning/tuning_db.h"

namespace ligerd::kernels {

struct TuneRequest {
  std::string op;
  DType dtype = DType::kBFloat16;
  int64_t rows = 0;
  int64_t cols = 0;
  int trials = 7;    // timed trials per config (median)
  int warmup = 2;    // untimed launches per config first
  bool store = true; // write the result into the executor's tuning DB
};

struct CandidateTiming {
  LaunchConfig config;
  double ms = 0;      // median per launch; < 0 when it could not run
  std::string error;  // why not
};

struct TuneReport {
  TuningKey key;
  LaunchConfig default_config;
  LaunchConfig best_config;  // == default_config when no candidate beat it by kMinGain
  double default_ms = 0;
  double best_ms = 0;
  int candidates = 0;  // timed (default included)
  int failed = 0;      // candidates that could not be planned or run
  std::vector<CandidateTiming> timings;  // default first
  bool stored = false;
};

inline constexpr double kMinGain = 0.01;  // 1%: below this a "faster" config is noise

// Called with a line of progress ("rms_norm_fwd bf16 16384x4096: 12/35 tpr=...: 0.095 ms");
// return false to cancel (the tune then fails with CANCELLED).
using TuneProgressFn = std::function<bool(const std::string& line)>;

// Checks a request without touching the GPU: the op exists and has candidates, shape positive
// and within limits. INVALID_ARGUMENT saying what is wrong.
absl::Status ValidateTuneRequest(const TuneRequest& request);

// Tunes one request on `executor`'s device. The calling thread's current context is restored.
absl::StatusOr<TuneReport> Tune(Executor& executor, const TuneRequest& request, const TuneProgressFn& progress);

}  // namespace ligerd::kernels
