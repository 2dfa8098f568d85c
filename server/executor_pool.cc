#include "server/executor_pool.h"

namespace ligerd {

absl::StatusOr<kernels::Executor*> ExecutorPool::ForDevice(int device) {
  absl::MutexLock lock(&mu_);
  auto it = executors_.find(device);
  if (it != executors_.end()) return it->second.get();
  absl::StatusOr<std::unique_ptr<kernels::Executor>> created =
      kernels::Executor::Create({.cache_dir = cache_dir_, .device = device});
  if (!created.ok()) return created.status();
  return (executors_[device] = std::move(*created)).get();
}

}  // namespace ligerd
