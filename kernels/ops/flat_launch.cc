#include "kernels/ops/flat_launch.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ligerd::kernels {

namespace {
constexpr int kDefaultBlock = 256;
constexpr int64_t kMaxGrid = 0x7fffffff;  // gridDim.x limit
}  // namespace

LaunchConfig FlatDefaultConfig(const FlatFamily& f, bool vectorized) {
  LaunchConfig c;
  c.threads_per_row = kDefaultBlock;
  c.rows_per_block = 1;
  c.iters = f.positions_per_thread;
  c.vectorized = vectorized;
  c.grid = 0;
  return c;
}

absl::Status FlatCheckConfig(const FlatFamily& f, const LaunchConfig& c, bool vectorized_ok) {
  if (c.vectorized && !vectorized_ok) return absl::InvalidArgumentError(f.vector_rule);
  if (c.threads_per_row < 32 || c.threads_per_row > f.max_threads || c.threads_per_row % 32 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("block of ", c.threads_per_row, " threads must be a multiple of 32 <= ", f.max_threads));
  if (c.rows_per_block != 1)
    return absl::InvalidArgumentError(absl::StrCat("the ", f.name, " kernels take 1-D blocks (rows_per_block 1)"));
  if (c.iters != f.positions_per_thread)
    return absl::InvalidArgumentError(absl::StrCat("iters ", c.iters, " not available (the kernels take ",
                                                   f.positions_per_thread, " positions per thread)"));
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  if (c.cluster > 1) return absl::InvalidArgumentError(absl::StrCat("the ", f.name, " kernels take no clusters"));
  return absl::OkStatus();
}

absl::StatusOr<LaunchConfig> FlatChooseConfig(const FlatFamily& f, const std::string& op, const LaunchConfig* tuned,
                                              bool vectorized_ok) {
  if (tuned == nullptr) return FlatDefaultConfig(f, vectorized_ok);
  absl::Status s = FlatCheckConfig(f, *tuned, vectorized_ok);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(op, ": config: ", s.message()));
  return *tuned;
}

KernelLaunch FlatLaunch(std::string kernel, const LaunchConfig& c, int64_t units, const void* params, size_t size) {
  const int64_t per_block = int64_t{c.threads_per_row} * c.iters;
  const int64_t work = std::max<int64_t>((units + per_block - 1) / per_block, 1);
  const int64_t grid = std::min<int64_t>(c.grid > 0 ? std::min<int64_t>(c.grid, work) : work, kMaxGrid);
  KernelLaunch launch;
  launch.kernel = std::move(kernel);
  launch.grid[0] = static_cast<unsigned>(grid);
  launch.block[0] = static_cast<unsigned>(c.threads_per_row);
  launch.params.resize(size);
  std::memcpy(launch.params.data(), params, size);
  return launch;
}

}  // namespace ligerd::kernels
