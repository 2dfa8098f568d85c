// The planning half of the executor, with no CUDA in it: a call (op name, tensors, scalars,
// workspace) becomes an OpPlan through the plan cache, with the launch config from the tuning DB
// when it holds one for the call's bucket. Executor::Plan (and so WorkspaceBytes and Launch, the
// calls a remote session's runner makes for each ring record) is this; it is a class of its own
// so the whole path from a call to its plan runs without a GPU: in the CPU tests and in the
// ring-record fuzzer (tests/fuzz/), against a DeviceInfo whose occupancy oracle is fake.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/catalogue.h"
#include "kernels/plan_cache.h"
#include "kernels/tensor_view.h"
#include "kernels/tuning/tuning_db.h"

namespace ligerd::kernels {

// How Plan() picks the launch config.
struct PlanOptions {
  bool use_tuning_db = true;             // look the call's bucket up in the tuning DB
  const LaunchConfig* config = nullptr;  // explicit config (the tuner); null = DB or default
  bool check_workspace = true;           // false: only asking (workspace size, which config)
};

class Planner {
 public:
  // `device` answers for the GPU the plans are for (its callbacks may call back into the owner of
  // this planner: the executor's occupancy queries). `tuning` may be null (no tuning DB).
  Planner(DeviceInfo device, std::shared_ptr<TuningDb> tuning)
      : device_(std::move(device)), tuning_(std::move(tuning)) {}

  // The plan Executor::Launch would run for this call (all checks included), or the error.
  absl::StatusOr<OpPlan> Plan(std::string_view op, std::span<const TensorView> tensors,
                              std::span<const double> scalars, void* workspace, size_t workspace_bytes,
                              const PlanOptions& options);

  const DeviceInfo& device_info() const { return device_; }
  const std::shared_ptr<TuningDb>& tuning_db() const { return tuning_; }
  PlanCache::Stats cache_stats() const { return plans_.stats(); }

 private:
  // A stored config this call's op refused: logged once per (bucket, config), not an error.
  void NoteRejected(const TuningKey& key, const LaunchConfig& config, const absl::Status& why);

  const DeviceInfo device_;
  const std::shared_ptr<TuningDb> tuning_;
  PlanCache plans_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> rejected_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd::kernels
