// A small cache of op plans, so a call with the same geometry as an earlier one skips the
// geometry checks and the planning (PlanOp) and only patches its tensor and workspace addresses
// into the kernel parameter blocks. What depends on the addresses themselves is checked on every
// call, hit or miss, with PlanOp's messages (CheckAddresses: element alignment, ranges that do
// not wrap, no output overlapping another tensor but its declared exact alias): two calls of one
// key can differ there.
//
// Key: op name, and per tensor: present, dtype, rank, sizes, strides, device, address mod 16
// (vectorisation depends on alignment) and which earlier tensor it aliases (dX over dY); the
// scalars bit for bit. Everything a plan depends on besides the addresses themselves.
//
// Generic, with a self-check: on a miss the op is planned twice more with synthetic addresses
// (the call's own, then all of them shifted by one constant that keeps every alignment and every
// relative position). Words of the parameter blocks that move by exactly that constant are the
// addresses of one tensor (or of the workspace) and are recorded as patches; if anything else
// differs between the two plans (an address with an offset added, a launch shape that depends on
// an address), the key is marked uncacheable and every such call is planned from scratch. A call
// that fails its checks is never cached (the next one fails the same way, through PlanOp, with
// the same message). An autotuned config (OpCall::tuned) is part of the key, so tuned and
// default plans of one geometry are cached side by side.
//
// Configs chosen from the tuning DB (a ConfigSource): asked only about calls that passed the
// generic checks (CheckCall), so a hostile geometry never reaches the tuning-key arithmetic. The
// key is the call's geometry plus the
// DB's generation, and the entry remembers the config it was planned with, so a hit costs no DB
// lookup at all, a tuned plan and a default plan of one geometry can never be confused (a
// default-keyed call never carries a source), and a DB change (a new generation) is a new key:
// the first call after it looks the DB up again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/catalogue.h"

namespace ligerd::kernels {

class PlanCache {
 public:
  explicit PlanCache(size_t max_entries = 256) : max_entries_(max_entries) {}

  // Same result as PlanOp(op, call, device) (the plan, or the same error), from the cache when
  // it can. `device` must be the same for every call on one cache (one executor, one device).
  absl::StatusOr<OpPlan> Plan(std::string_view op, const OpCall& call, const DeviceInfo& device);

  // Where a call without OpCall::tuned gets its config from: the tuning DB, as of `generation`.
  struct ConfigSource {
    uint64_t generation = 0;
    // The stored config for this call, if any (nullopt: plan with the default). Miss only.
    std::function<std::optional<LaunchConfig>(const OpCall&)> lookup;
    // The op refused the stored config while the default plan is fine (miss only; for a log).
    std::function<void(const LaunchConfig&, const absl::Status&)> rejected;
  };
  // The plan for `call` (OpCall::tuned must be null) with the config `source` stores for it,
  // OpPlan::tuned set; or, when it stores none or the op refuses it, the default plan (what
  // Plan() gives) or its error. On a hit neither callback runs.
  absl::StatusOr<OpPlan> Plan(std::string_view op, const OpCall& call, const DeviceInfo& device,
                              const ConfigSource& source);

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t uncacheable = 0;  // calls planned from scratch because their key is uncacheable
  };
  Stats stats() const;
  size_t size() const;

 private:
  struct Patch {
    uint32_t launch = 0;
    uint32_t offset = 0;  // byte offset in KernelLaunch::params (8-byte aligned)
    int32_t source = 0;   // tensor index, or -1 for the workspace
  };
  struct Entry {
    bool cacheable = false;
    OpPlan plan;  // built with the addresses of the call that missed
    std::vector<Patch> patches;
    std::optional<LaunchConfig> tuned;  // the source's config it was planned with (ConfigSource)
    // For the checks a hit still runs (CheckAddresses): the op's spec and each tensor's byte
    // extent, which the key's geometry fixes.
    const OpSpec* spec = nullptr;
    std::vector<uint64_t> extents;
  };

  static void AppendKey(std::string& key, std::string_view op, const OpCall& call);
  static absl::StatusOr<std::shared_ptr<Entry>> Build(std::string_view op, const OpCall& call,
                                                      const DeviceInfo& device);
  // Build for a ConfigSource miss: the stored config, else (none, or refused) the default.
  static absl::StatusOr<std::shared_ptr<Entry>> BuildFromSource(std::string_view op, const OpCall& call,
                                                                const DeviceInfo& device,
                                                                const ConfigSource& source);
  // The cached entry for `key` (counting a hit), or the one `build` makes (counting a miss).
  template <typename BuildFn>
  absl::StatusOr<OpPlan> Lookup(const std::string& key, std::string_view op, const OpCall& call,
                                const DeviceInfo& device, BuildFn build);

  const size_t max_entries_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Entry>> entries_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd::kernels
