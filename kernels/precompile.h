// Ahead-of-time compilation of every catalogue kernel variant for one GPU arch, using NVRTC
// only (no GPU or driver needed): `ligerd --precompile_arch=sm_90 --cache_dir=DIR` fills the
// JIT cache so no process on the node ever compiles at first use, and CI proves every kernel
// compiles.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/jit/jit_cache.h"

namespace ligerd::kernels {

struct PrecompileFailure {
  std::string op;
  std::string variant;
  std::string message;  // includes the NVRTC log
};

struct PrecompileReport {
  std::string arch;
  size_t total = 0;     // variants considered
  size_t compiled = 0;  // compiled now
  size_t cached = 0;    // already valid in the cache
  std::vector<PrecompileFailure> failures;
  size_t unstored = 0;  // compiled but not written to the cache (disk full, permissions): the
                        // cache is incomplete, so precompile fails
  double seconds = 0;   // wall time
  bool ok() const { return failures.empty() && unstored == 0; }
};

struct PrecompileProgress {
  size_t done = 0;
  size_t total = 0;
  std::string_view op;
  std::string_view variant;
  const absl::Status* status = nullptr;  // this variant's result
};
// Called once per variant as it finishes, from worker threads but never concurrently.
using ProgressCallback = std::function<void(const PrecompileProgress&)>;

// Compiles every variant of every op for `arch` ("sm_90", or "compute_90" for PTX) into the
// cache at `cache_dir`, on `threads` worker threads (0 = hardware concurrency). Returns an error
// only when it cannot start (bad arch, unusable cache dir); per-variant failures are in the
// report. A read-only cache directory is an error (nothing could be stored).
absl::StatusOr<PrecompileReport> PrecompileAll(const std::filesystem::path& cache_dir,
                                               std::string_view arch,
                                               ProgressCallback progress = nullptr,
                                               int threads = 0);

// Same, into a given cache (tests use one with a fake compiler).
absl::StatusOr<PrecompileReport> PrecompileAllInto(JitCache& cache, std::string_view arch,
                                                   ProgressCallback progress = nullptr,
                                                   int threads = 0);

}  // namespace ligerd::kernels
