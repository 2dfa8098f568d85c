#include "server/telemetry/history.h"

#include <map>

namespace ligerd::telemetry {

namespace v1 = ::ligerd::v1;

v1::HistoryPoint ToHistoryPoint(const v1::SnapshotResponse& s) {
  v1::HistoryPoint p;
  p.set_time_unix_seconds(s.time_unix_seconds());
  for (const v1::GpuStats& g : s.gpus()) {
    v1::HistoryPoint::Gpu* hg = p.add_gpus();
    hg->set_gpu(g.gpu());
    hg->set_uuid(g.uuid());
    hg->set_memory_used_bytes(g.memory_used_bytes());
    hg->set_memory_total_bytes(g.memory_total_bytes());
  }
  for (const v1::JobStats& j : s.jobs()) {
    v1::HistoryPoint::Job* hj = p.add_jobs();
    hj->set_job(j.job());
    hj->set_tokens_per_second(j.tokens_per_second());
    hj->set_loss(j.loss());
    hj->set_has_loss(j.has_loss());
    hj->set_peak_allocated_bytes(j.peak_allocated_bytes());
    hj->set_tokens_total(j.tokens_total());
  }
  std::map<std::string, v1::HistoryPoint::Op> ops;
  for (const v1::OpStats& o : s.ops()) {
    v1::HistoryPoint::Op& h = ops[o.op()];
    h.set_op(o.op());
    h.set_calls_total(h.calls_total() + o.calls_total());
  }
  for (const v1::GpuTimeStats& g : s.gpu_time()) {
    v1::HistoryPoint::Op& h = ops[g.op()];
    h.set_op(g.op());
    h.set_gpu_seconds_sum(h.gpu_seconds_sum() + g.sum_seconds());
    h.set_gpu_samples(h.gpu_samples() + g.count());
  }
  for (auto& [name, op] : ops) *p.add_ops() = std::move(op);
  uint64_t errors = 0;
  for (const v1::ErrorCount& e : s.errors()) errors += e.count();
  p.set_errors_total(errors);
  return p;
}

void History::Add(v1::HistoryPoint point) {
  absl::MutexLock lock(&mu_);
  points_.push_back(std::move(point));
  while (points_.size() > capacity_) points_.pop_front();
}

v1::HistoryResponse History::Read() const {
  absl::MutexLock lock(&mu_);
  v1::HistoryResponse out;
  for (const v1::HistoryPoint& p : points_) *out.add_points() = p;
  return out;
}

}  // namespace ligerd::telemetry
