#include "kernels/precompile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/catalogue.h"
#include "kernels/jit/nvrtc_compiler.h"
#include "kernels/status_macros.h"

namespace ligerd::kernels {

absl::StatusOr<PrecompileReport> PrecompileAll(const std::filesystem::path& cache_dir,
                                               std::string_view arch, ProgressCallback progress,
                                               int threads) {
  LIGERD_ASSIGN_OR_RETURN(std::shared_ptr<JitCache> cache, JitCache::Shared(cache_dir));
  return PrecompileAllInto(*cache, arch, std::move(progress), threads);
}

absl::StatusOr<PrecompileReport> PrecompileAllInto(JitCache& cache, std::string_view arch,
                                                   ProgressCallback progress, int threads) {
  LIGERD_RETURN_IF_ERROR(ParseArch(arch).status());
  if (cache.read_only())
    return absl::FailedPreconditionError(absl::StrCat("cannot precompile into ", cache.dir().string(),
                                                      ": it is read-only for this process"));
  const auto start = std::chrono::steady_clock::now();
  std::vector<CompileRequest> work;
  for (const OpSpec* spec : AllOps())
    for (const KernelVariant& v : spec->variants) work.push_back(MakeCompileRequest(*spec, v, arch));

  PrecompileReport report;
  report.arch = std::string(arch);
  report.total = work.size();
  const JitCacheStats before = cache.stats();
  const uint64_t compiles_before = before.compiles;

  std::atomic<size_t> next{0};
  absl::Mutex mu;
  size_t done = 0;
  auto worker = [&] {
    for (size_t i = next.fetch_add(1); i < work.size(); i = next.fetch_add(1)) {
      absl::Status s = cache.Get(work[i]).status();
      absl::MutexLock lock(&mu);
      ++done;
      if (!s.ok()) report.failures.push_back({work[i].op, work[i].variant, std::string(s.message())});
      if (progress) progress({done, work.size(), work[i].op, work[i].variant, &s});
    }
  };
  int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n = static_cast<int>(std::min<size_t>(n, std::max<size_t>(1, work.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();

  // Another process may compile concurrently into the same cache; count only our compiles.
  report.compiled = static_cast<size_t>(cache.stats().compiles - compiles_before);
  report.compiled = std::min(report.compiled, report.total - report.failures.size());
  report.cached = report.total - report.failures.size() - report.compiled;
  report.unstored = static_cast<size_t>(cache.stats().write_failures - before.write_failures);
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace ligerd::kernels
