#include "kernels/ops/flat_launch.h"

#include "absl/strings/str_cat.h"

namespace ligerd::kernels {

namespace {
constexpr int kDefaultBlock = 256;
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

}  // namespace ligerd::kernels
