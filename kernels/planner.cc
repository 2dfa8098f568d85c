// See planner.h.
#include "kernels/planner.h"

#include <optional>

#include "absl/strings/str_cat.h"

namespace ligerd::kernels {

absl::StatusOr<OpPlan> Planner::Plan(std::string_view op, std::span<const TensorView> tensors,
                                     std::span<const double> scalars, void* workspace, size_t workspace_bytes,
                                     const PlanOptions& options) {
  OpCall call;
  call.tensors = tensors;
  call.scalars = scalars;
  call.workspace = workspace;
  call.workspace_bytes = workspace_bytes;
  call.check_workspace = options.check_workspace;
  if (options.config != nullptr) {
    call.tuned = options.config;
    return plans_.Plan(op, call, device_);
  }
  if (!options.use_tuning_db || tuning_ == nullptr) return plans_.Plan(op, call, device_);
  // The hot path: a launch whose geometry was planned before, with the DB unchanged since, is
  // one plan-cache hit (key build + hash lookup + address patching). The DB's generation is a
  // clock read and atomic loads (it stats the file at most every 250 ms, as Lookup does, so a
  // newly tuned config is still picked up); the op lookup, tuning key and DB lookup below run
  // only on a miss. Read the generation before the lookup: a plan cached under it then never
  // reflects an older DB than its key says.
  struct Miss {  // what the callbacks share; they capture one pointer (no allocation)
    Planner* self;
    std::string_view op;
    std::optional<TuningKey> key;  // kept for the rejection log
  } miss{this, op, std::nullopt};
  PlanCache::ConfigSource source;
  source.generation = tuning_->Generation();
  source.lookup = [m = &miss](const OpCall& c) -> std::optional<LaunchConfig> {
    const OpSpec* spec = FindOp(m->op);
    if (spec == nullptr || !spec->candidates || !spec->tuning_shape) return std::nullopt;
    const std::optional<TuningShape> shape = spec->tuning_shape(c);
    if (!shape.has_value()) return std::nullopt;
    m->key = MakeTuningKey(m->op, *shape);
    std::optional<TuningEntry> entry = m->self->tuning_->Lookup(*m->key);
    if (!entry.has_value()) return std::nullopt;
    return entry->config;
  };
  source.rejected = [m = &miss](const LaunchConfig& config, const absl::Status& why) {
    if (m->key.has_value()) m->self->NoteRejected(*m->key, config, why);
  };
  return plans_.Plan(op, call, device_, source);
}

void Planner::NoteRejected(const TuningKey& key, const LaunchConfig& config, const absl::Status& why) {
  const std::string id = absl::StrCat(KeyString(key), " ", FormatLaunchConfig(config));
  {
    absl::MutexLock lock(&mu_);
    if (!rejected_.insert(id).second) return;
  }
  TuningLog(absl::StrCat("ignoring tuned config ", FormatLaunchConfig(config), " for ", KeyString(key),
                         " (using the default): ", why.message()));
}

}  // namespace ligerd::kernels
