// The real IpcOpener: opens a client's cudaIpcMemHandle_t in the daemon's primary context of the
// device, measures the allocation behind it (cuMemGetAddressRange), and closes it on destruction.
#pragma once

#include "server/dataplane/buffer_registry.h"

namespace ligerd::dataplane {

class CudaIpcOpener final : public IpcOpener {
 public:
  absl::StatusOr<std::unique_ptr<IpcMapping>> Open(const std::string& handle, int device) override;
};

}  // namespace ligerd::dataplane
