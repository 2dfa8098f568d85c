// See plan_cache.h.
#include "kernels/plan_cache.h"

#include <cstring>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

// The shift of the self-check: a multiple of every alignment a plan can care about.
constexpr uintptr_t kShift = uintptr_t{1} << 24;

uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

template <typename T>
void Put(std::string& key, const T& v) {
  key.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// Index of the first earlier tensor at the same address, or -1.
int8_t AliasOf(std::span<const TensorView> tensors, size_t i) {
  for (size_t j = 0; j < i; ++j)
    if (tensors[j].data != nullptr && tensors[j].data == tensors[i].data) return static_cast<int8_t>(j);
  return -1;
}

bool SameShape(const OpPlan& a, const OpPlan& b) {
  if (a.variant.tag != b.variant.tag || a.variant.defines != b.variant.defines ||
      a.workspace_bytes != b.workspace_bytes || a.launches.size() != b.launches.size())
    return false;
  const LaunchConfig& x = a.config;
  const LaunchConfig& y = b.config;
  if (x.threads_per_row != y.threads_per_row || x.rows_per_block != y.rows_per_block ||
      x.iters != y.iters || x.vectorized != y.vectorized || x.grid != y.grid ||
      x.cluster != y.cluster || x.shared_bytes != y.shared_bytes)
    return false;
  for (size_t i = 0; i < a.launches.size(); ++i) {
    const KernelLaunch& k = a.launches[i];
    const KernelLaunch& l = b.launches[i];
    if (k.kernel != l.kernel || k.shared_bytes != l.shared_bytes || k.cluster != l.cluster ||
        k.params.size() != l.params.size())
      return false;
    for (int d = 0; d < 3; ++d)
      if (k.grid[d] != l.grid[d] || k.block[d] != l.block[d]) return false;
  }
  return true;
}

}  // namespace

void PlanCache::AppendKey(std::string& key, std::string_view op, const OpCall& call) {
  key.append(op);
  key.push_back('\0');
  Put(key, static_cast<uint32_t>(call.tensors.size()));
  for (size_t i = 0; i < call.tensors.size(); ++i) {
    const TensorView& t = call.tensors[i];
    struct {
      uint8_t present, dtype, align;
      int8_t alias;
      int32_t ndim, device;
      int64_t sizes[kMaxDims], strides[kMaxDims];
    } k;
    std::memset(&k, 0, sizeof(k));  // padding included: the key is compared as bytes
    k.present = t.present() ? 1 : 0;
    if (k.present) {
      k.dtype = static_cast<uint8_t>(t.dtype);
      k.align = static_cast<uint8_t>(Addr(t.data) % 16);
      k.alias = AliasOf(call.tensors, i);
      k.ndim = t.ndim;
      k.device = t.device;
      const int nd = t.ndim < 0 ? 0 : (t.ndim > kMaxDims ? kMaxDims : t.ndim);
      for (int d = 0; d < nd; ++d) {
        k.sizes[d] = t.sizes[d];
        k.strides[d] = t.strides[d];
      }
    }
    Put(key, k);
  }
  Put(key, static_cast<uint32_t>(call.scalars.size()));
  for (double s : call.scalars) Put(key, s);  // bit for bit (-0.0 and NaN payloads included)
  int8_t ws_alias = -1;
  for (size_t j = 0; j < call.tensors.size() && call.workspace != nullptr; ++j)
    if (call.tensors[j].data == call.workspace) {
      ws_alias = static_cast<int8_t>(j);
      break;
    }
  struct {
    uint8_t present, align, check;
    int8_t alias;
    uint64_t bytes;
  } w;
  std::memset(&w, 0, sizeof(w));
  w.present = call.workspace != nullptr ? 1 : 0;
  w.align = static_cast<uint8_t>(Addr(call.workspace) % 16);
  w.check = call.check_workspace ? 1 : 0;
  w.alias = ws_alias;
  w.bytes = call.workspace_bytes;
  Put(key, w);
  struct {
    uint8_t present, vectorized;
    int32_t threads_per_row, rows_per_block, iters, grid, cluster, shared_bytes;
  } t;
  std::memset(&t, 0, sizeof(t));
  if (call.tuned != nullptr) {
    t.present = 1;
    t.vectorized = call.tuned->vectorized ? 1 : 0;
    t.threads_per_row = call.tuned->threads_per_row;
    t.rows_per_block = call.tuned->rows_per_block;
    t.iters = call.tuned->iters;
    t.grid = call.tuned->grid;
    t.cluster = call.tuned->cluster;
    t.shared_bytes = call.tuned->shared_bytes;
  }
  Put(key, t);
}

absl::StatusOr<std::shared_ptr<PlanCache::Entry>> PlanCache::Build(std::string_view op,
                                                                   const OpCall& call,
                                                                   const DeviceInfo& device) {
  absl::StatusOr<OpPlan> a = PlanOp(op, call, device);
  if (!a.ok()) return a.status();
  auto entry = std::make_shared<Entry>();
  entry->plan = *std::move(a);
  // PlanOp passed, so the op exists and every present tensor has a valid extent.
  entry->spec = FindOp(op);
  if (entry->spec == nullptr) return absl::InternalError(absl::StrCat("planned unknown op '", std::string(op), "'"));
  entry->extents.assign(call.tensors.size(), 0);
  for (size_t i = 0; i < call.tensors.size(); ++i)
    if (call.tensors[i].present() && !ByteExtent(call.tensors[i], &entry->extents[i]))
      return absl::InternalError(absl::StrCat(std::string(op), ": planned a tensor without an extent"));

  // The same call with every address shifted by kShift.
  std::vector<TensorView> shifted(call.tensors.begin(), call.tensors.end());
  for (TensorView& t : shifted)
    if (t.data != nullptr) t.data = reinterpret_cast<void*>(Addr(t.data) + kShift);
  OpCall b_call = call;
  b_call.tensors = shifted;
  if (call.workspace != nullptr) b_call.workspace = reinterpret_cast<void*>(Addr(call.workspace) + kShift);
  absl::StatusOr<OpPlan> b = PlanOp(op, b_call, device);
  if (!b.ok() || !SameShape(entry->plan, *b)) return entry;  // uncacheable

  for (size_t l = 0; l < entry->plan.launches.size(); ++l) {
    const std::vector<uint8_t>& pa = entry->plan.launches[l].params;
    const std::vector<uint8_t>& pb = b->launches[l].params;
    const size_t words = pa.size() / 8;
    if (std::memcmp(pa.data() + words * 8, pb.data() + words * 8, pa.size() - words * 8) != 0)
      return entry;
    for (size_t w = 0; w < words; ++w) {
      uint64_t va = 0, vb = 0;
      std::memcpy(&va, pa.data() + w * 8, 8);
      std::memcpy(&vb, pb.data() + w * 8, 8);
      if (va == vb) continue;
      if (vb - va != kShift) return entry;  // derived, not an address
      int32_t source = -2;
      for (size_t t = 0; t < call.tensors.size() && source == -2; ++t)
        if (call.tensors[t].data != nullptr && Addr(call.tensors[t].data) == va) source = static_cast<int32_t>(t);
      if (source == -2 && call.workspace != nullptr && Addr(call.workspace) == va) source = -1;
      if (source == -2) return entry;  // an address plus an offset
      entry->patches.push_back({static_cast<uint32_t>(l), static_cast<uint32_t>(w * 8), source});
    }
  }
  entry->cacheable = true;
  return entry;
}

absl::StatusOr<std::shared_ptr<PlanCache::Entry>> PlanCache::BuildFromSource(
    std::string_view op, const OpCall& call, const DeviceInfo& device, const ConfigSource& source) {
  // The source computes a tuning key from the call's geometry: only for a call that passes the
  // generic checks (an unchecked record could make that arithmetic overflow or spin). A bad call
  // fails here with PlanOp's own error.
  const OpSpec* spec = FindOp(op);
  if (spec == nullptr) return PlanOp(op, call, device).status();
  if (absl::Status s = CheckCall(*spec, call, device); !s.ok()) return s;
  std::optional<LaunchConfig> stored = source.lookup ? source.lookup(call) : std::nullopt;
  if (!stored.has_value()) return Build(op, call, device);
  OpCall tuned_call = call;
  tuned_call.tuned = &*stored;
  absl::StatusOr<std::shared_ptr<Entry>> tuned = Build(op, tuned_call, device);
  if (tuned.ok()) {
    (*tuned)->plan.tuned = true;
    (*tuned)->tuned = *stored;
    return tuned;
  }
  absl::StatusOr<std::shared_ptr<Entry>> fallback = Build(op, call, device);
  // Only the stored config's fault when the default plan is fine (else the call is bad).
  if (fallback.ok() && source.rejected) source.rejected(*stored, tuned.status());
  return fallback;
}

template <typename BuildFn>
absl::StatusOr<OpPlan> PlanCache::Lookup(const std::string& key, std::string_view op,
                                         const OpCall& call, const DeviceInfo& device,
                                         BuildFn build) {
  std::shared_ptr<const Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      entry = it->second;
      if (entry->cacheable) ++stats_.hits; else ++stats_.uncacheable;
    }
  }
  if (entry == nullptr) {
    absl::StatusOr<std::shared_ptr<Entry>> built = build();
    if (!built.ok()) return built.status();  // never cached: the next call fails the same way
    entry = *std::move(built);
    absl::MutexLock lock(&mu_);
    ++stats_.misses;
    if (entries_.size() >= max_entries_) entries_.clear();
    entries_.emplace(key, entry);
    // Build planned this very call (cacheable or not): its plan carries the right addresses.
    return entry->plan;
  }
  if (!entry->cacheable) {
    // Planned from scratch, with the config the entry was planned with (the stored config
    // passed this geometry's checks when the entry was built; should this call's addresses
    // make the op refuse it, the default plan, as a DB miss would give).
    if (entry->tuned.has_value()) {
      OpCall tuned_call = call;
      tuned_call.tuned = &*entry->tuned;
      absl::StatusOr<OpPlan> plan = PlanOp(op, tuned_call, device);
      if (plan.ok()) {
        plan->tuned = true;
        return plan;
      }
    }
    return PlanOp(op, call, device);
  }
  // The key fixed the geometry, not where the tensors are: the address checks of PlanOp, on
  // this call's pointers (a few comparisons per pair of tensors).
  if (absl::Status s = CheckAddresses(*entry->spec, call.tensors, entry->extents); !s.ok()) return s;
  OpPlan plan = entry->plan;
  for (const Patch& p : entry->patches) {
    const void* v = p.source < 0 ? call.workspace : call.tensors[p.source].data;
    std::memcpy(plan.launches[p.launch].params.data() + p.offset, &v, sizeof(v));
  }
  return plan;
}

// Keys end in where the config came from: 0 the call (OpCall::tuned or the default), 1 a
// ConfigSource at a generation. So a tuned and a default plan of one geometry never share a key.
absl::StatusOr<OpPlan> PlanCache::Plan(std::string_view op, const OpCall& call,
                                       const DeviceInfo& device) {
  thread_local std::string key;
  key.clear();
  AppendKey(key, op, call);
  Put(key, uint8_t{0});
  return Lookup(key, op, call, device, [&] { return Build(op, call, device); });
}

absl::StatusOr<OpPlan> PlanCache::Plan(std::string_view op, const OpCall& call,
                                       const DeviceInfo& device, const ConfigSource& source) {
  if (call.tuned != nullptr) return Plan(op, call, device);  // an explicit config wins
  thread_local std::string key;
  key.clear();
  AppendKey(key, op, call);
  Put(key, uint8_t{1});
  Put(key, source.generation);
  return Lookup(key, op, call, device, [&] { return BuildFromSource(op, call, device, source); });
}

PlanCache::Stats PlanCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

size_t PlanCache::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace ligerd::kernels
