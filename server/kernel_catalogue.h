// The daemon's view of kernels/: the catalogue summary for Info, and the --precompile_arch mode.
#pragma once

#include <vector>

#include "server/config.h"
#include "server/info_service.h"

namespace ligerd {

std::vector<OpSummary> CatalogueSummary();

// Compiles every catalogue kernel variant for config.precompile_arch into config.cache_dir,
// prints progress and a count; returns the process exit code (non-zero if any variant failed).
int PrecompileMain(const DaemonConfig& config);

}  // namespace ligerd
