#include "server/telemetry/op_tally.h"

#include <cstring>

namespace ligerd::telemetry {

uint64_t CallBytes(const std::vector<kernels::TensorView>& tensors) {
  uint64_t total = 0;
  for (const kernels::TensorView& t : tensors) {
    if (!t.present()) continue;
    uint64_t n = 1;
    for (int d = 0; d < t.ndim && d < kernels::kMaxDims; ++d) n *= static_cast<uint64_t>(t.sizes[d] > 0 ? t.sizes[d] : 0);
    total += n * static_cast<uint64_t>(kernels::DTypeBytes(t.dtype));
  }
  return total;
}

const char* CallDType(const std::vector<kernels::TensorView>& tensors) {
  for (const kernels::TensorView& t : tensors) {
    if (t.present()) return kernels::DTypeName(t.dtype);
  }
  return "none";
}

OpTally::OpTally(Store* store, std::string job, std::string dispatch, const std::vector<std::string>* op_names)
    : store_(store), job_(std::move(job)), dispatch_(std::move(dispatch)), op_names_(op_names) {
  if (op_names_ != nullptr) cells_.resize(op_names_->size());
}

void OpTally::Count(uint32_t op_id, const char* dtype, uint64_t bytes, bool failed) {
  if (store_ == nullptr || op_id >= cells_.size()) return;
  std::vector<Cell>& cells = cells_[op_id];
  Cell* cell = nullptr;
  for (Cell& c : cells) {
    if (c.dtype == dtype || std::strcmp(c.dtype, dtype) == 0) cell = &c;
  }
  if (cell == nullptr) cell = &cells.emplace_back(Cell{dtype, {}});
  ++cell->totals.calls;
  cell->totals.errors += failed ? 1 : 0;
  cell->totals.bytes += bytes;
  ++pending_;
}

void OpTally::MaybeFlush() {
  if (pending_ == 0) return;
  if (pending_ >= kFlushOps || std::chrono::steady_clock::now() - last_flush_ >= kFlushInterval) Flush();
}

void OpTally::Flush() {
  last_flush_ = std::chrono::steady_clock::now();
  if (store_ == nullptr || pending_ == 0) return;
  pending_ = 0;
  for (size_t id = 0; id < cells_.size(); ++id) {
    for (Cell& c : cells_[id]) {
      if (c.totals.calls == 0) continue;
      const std::string& op = (*op_names_)[id];
      store_->AddOps(OpKey{op, DirectionOf(op), c.dtype, dispatch_, job_}, c.totals);
      c.totals = OpTotals{};
    }
  }
}

}  // namespace ligerd::telemetry
