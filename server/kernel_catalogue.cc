#include "server/kernel_catalogue.h"

#include <cstdio>

namespace ligerd {

// Wired to kernels/ once its catalogue lands (issue 3, step 1).
std::vector<OpSummary> CatalogueSummary() { return {}; }

int PrecompileMain(const DaemonConfig& config) {
  std::fprintf(stderr, "ligerd: --precompile_arch: the kernel catalogue is not built yet\n");
  return 1;
}

}  // namespace ligerd
