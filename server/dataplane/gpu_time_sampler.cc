#include "server/dataplane/gpu_time_sampler.h"

#include "kernels/cuda_driver.h"

namespace ligerd::dataplane {

GpuTimeSampler::GpuTimeSampler(telemetry::Store* store, std::string dispatch, uint32_t every)
    : store_(store), dispatch_(std::move(dispatch)), every_(every) {}

GpuTimeSampler::~GpuTimeSampler() {
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok()) return;
  for (Pending& p : pending_) {
    free_.push_back(p.start);
    free_.push_back(p.end);
  }
  if (begun_ != nullptr) free_.push_back(begun_);
  for (CUevent e : free_) (*drv)->cuEventDestroy(e);
}

bool GpuTimeSampler::Due() {
  if (store_ == nullptr || every_ == 0) return false;
  if (++calls_ % every_ != 0) return false;
  return pending_.size() < kMaxPending;
}

CUevent GpuTimeSampler::Take() {
  if (!free_.empty()) {
    CUevent e = free_.back();
    free_.pop_back();
    return e;
  }
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  CUevent e = nullptr;
  if (!drv.ok() || (*drv)->cuEventCreate(&e, CU_EVENT_DEFAULT) != CUDA_SUCCESS) return nullptr;
  return e;
}

void GpuTimeSampler::Begin(CUstream stream) {
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok()) return;
  begun_ = Take();
  if (begun_ != nullptr && (*drv)->cuEventRecord(begun_, stream) != CUDA_SUCCESS) {
    free_.push_back(begun_);
    begun_ = nullptr;
  }
}

void GpuTimeSampler::End(CUstream stream, const std::string& op, uint64_t bytes) {
  if (begun_ == nullptr) return;
  CUevent start = begun_;
  begun_ = nullptr;
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  CUevent end = drv.ok() ? Take() : nullptr;
  if (end == nullptr || (*drv)->cuEventRecord(end, stream) != CUDA_SUCCESS) {
    free_.push_back(start);
    if (end != nullptr) free_.push_back(end);
    return;
  }
  pending_.push_back({start, end, op, bytes});
}

void GpuTimeSampler::Poll() {
  if (pending_.empty()) return;
  absl::StatusOr<const kernels::DriverApi*> drv = kernels::Driver();
  if (!drv.ok()) return;
  // In stream order: when the oldest has not finished, the later ones have not either.
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    float ms = 0;
    const CUresult r = (*drv)->cuEventElapsedTime(&ms, p.start, p.end);
    if (r == CUDA_ERROR_NOT_READY) return;
    if (r == CUDA_SUCCESS) store_->ObserveGpuTime(p.op, dispatch_, ms / 1e3, p.bytes);
    free_.push_back(p.start);
    free_.push_back(p.end);
    pending_.pop_front();
  }
}

}  // namespace ligerd::dataplane
