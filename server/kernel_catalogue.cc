#include "server/kernel_catalogue.h"

#include <unistd.h>

#include <cstdio>

#include "kernels/catalogue.h"
#include "kernels/precompile.h"

namespace ligerd {

std::vector<OpSummary> CatalogueSummary() {
  std::vector<OpSummary> ops;
  for (const kernels::OpInfo& op : kernels::ListOps()) {
    ops.push_back({op.name, op.doc, static_cast<uint32_t>(op.variant_count)});
  }
  return ops;
}

int PrecompileMain(const DaemonConfig& config) {
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [tty](const kernels::PrecompileProgress& p) {
    // One line per variant when logging to a file; an updating counter on a terminal.
    if (p.status != nullptr && !p.status->ok()) {
      std::fprintf(stderr, "%sFAILED %.*s [%.*s]: %s\n", tty ? "\n" : "", static_cast<int>(p.op.size()),
                   p.op.data(), static_cast<int>(p.variant.size()), p.variant.data(),
                   std::string(p.status->message()).c_str());
    } else if (tty) {
      std::fprintf(stderr, "\rprecompile: %zu/%zu %.*s [%.*s]          ", p.done, p.total,
                   static_cast<int>(p.op.size()), p.op.data(), static_cast<int>(p.variant.size()), p.variant.data());
    }
  };
  absl::StatusOr<kernels::PrecompileReport> report =
      kernels::PrecompileAll(config.cache_dir, config.precompile_arch, progress);
  if (tty) std::fprintf(stderr, "\n");
  if (!report.ok()) {
    std::fprintf(stderr, "ligerd: --precompile_arch=%s: %s\n", config.precompile_arch.c_str(),
                 std::string(report.status().message()).c_str());
    return 2;
  }
  std::printf("precompiled %zu kernel variants for %s into %s: %zu compiled, %zu already cached, %zu failed, "
              "%zu not stored, %.1f s\n",
              report->total, report->arch.c_str(), config.cache_dir.c_str(), report->compiled, report->cached,
              report->failures.size(), report->unstored, report->seconds);
  if (report->unstored > 0) {
    std::fprintf(stderr, "ligerd: --precompile_arch=%s: %zu compiled kernel(s) could not be written to %s (see the "
                 "lines above); the cache is incomplete\n", config.precompile_arch.c_str(), report->unstored,
                 config.cache_dir.c_str());
  }
  return report->ok() ? 0 : 1;
}

}  // namespace ligerd
