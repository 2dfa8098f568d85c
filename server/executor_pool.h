// One kernel executor per GPU the daemon serves, made on first use (creating one loads the CUDA
// driver, which a control-plane-only daemon never needs to do).
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/executor.h"

namespace ligerd {

class ExecutorPool {
 public:
  explicit ExecutorPool(std::string cache_dir) : cache_dir_(std::move(cache_dir)) {}
  absl::StatusOr<kernels::Executor*> ForDevice(int device);

 private:
  std::string cache_dir_;
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::unique_ptr<kernels::Executor>> executors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd
