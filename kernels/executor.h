// The executor: one library that plans and launches catalogue ops, used both by ligerd (remote
// dispatch, on IPC-mapped tensors) and by the Python extension ligerd._C (local dispatch, on the
// trainer's own tensors). Both paths run this code, so their results are bitwise the same.
//
// Contract for callers:
// - A CUDA context for the tensors' device is current on the calling thread (torch makes one;
//   ligerd makes its own per device).
// - Tensors and scalars are positional, in the order the op's catalogue entry lists them
//   (kernels/ops/<op>.cc documents it). Optional tensors are passed with data == nullptr.
// - Launch() checks every tensor (dtype, shape, strides, device) and returns INVALID_ARGUMENT
//   naming the op and the tensor before anything is launched; it never writes a tensor it
//   rejected. Kernel modules come from the NVRTC JIT cache (compiled once per key per node).
// - Launch() is asynchronous on `stream`, like a kernel launch.
// - Tuned configs: when the tuning DB (<cache_dir>/tuning/, kernels/tuning/tuning_db.h) holds a
//   config for the call's bucket, the op is planned with it (OpCall::tuned); a config the op
//   rejects for this call is ignored (logged once per bucket) and the default is used.
#pragma once

#include <sys/types.h>

#include <cuda.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/catalogue.h"
#include "kernels/planner.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

class TuningDb;

struct ExecutorOptions {
  std::filesystem::path cache_dir;  // on-disk JIT cache (shared by ligerd and its clients); empty =
                                    // DefaultCacheDir() of common/default_paths.h
  int device = 0;                   // CUDA ordinal this executor launches on
  bool use_tuning_db = true;        // also off with LIGERD_TUNING_DB=off in the environment
  // Another uid whose cache_dir may be used read-only: the node daemon's, when a job of its
  // --socket_group shares the node's JIT cache and tuning DB (kernels/jit/cache_entry.h,
  // OpenCacheDirectory). Empty: only this user's (or root's) directories.
  std::optional<uid_t> trusted_cache_owner = std::nullopt;
};

// PlanOptions (how Plan() picks the launch config) is in kernels/planner.h.

class Executor {
 public:
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const ExecutorOptions& options);
  virtual ~Executor() = default;

  // Bytes of scratch memory `op` needs for these arguments (0 for most ops). The caller allocates
  // it (torch's caching allocator locally, the session's scratch pool in ligerd) and passes it to
  // Launch; it need not be zeroed.
  virtual absl::StatusOr<size_t> WorkspaceBytes(std::string_view op,
                                                std::span<const TensorView> tensors,
                                                std::span<const double> scalars) = 0;

  virtual absl::Status Launch(std::string_view op, std::span<const TensorView> tensors,
                              std::span<const double> scalars, void* workspace,
                              size_t workspace_bytes, CUstream stream) = 0;

  // The plan Launch would run (all checks included): its config, whether that came from the
  // tuning DB (OpPlan::tuned), kernels, grids. For the tuner, tests and debugging.
  virtual absl::StatusOr<OpPlan> Plan(std::string_view op, std::span<const TensorView> tensors,
                                      std::span<const double> scalars, void* workspace,
                                      size_t workspace_bytes, const PlanOptions& options) = 0;
  // Launches a plan from Plan() (same op) on `stream`.
  virtual absl::Status LaunchPlan(std::string_view op, const OpPlan& plan, CUstream stream) = 0;

  virtual const DeviceInfo& device_info() const = 0;
  // The tuning DB this executor reads (null when disabled or its directory is unusable).
  virtual std::shared_ptr<TuningDb> tuning_db() const = 0;
};

}  // namespace ligerd::kernels
