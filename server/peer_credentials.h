// Who is on the other end of a Unix socket, and whether they may use this daemon. gRPC C++ does
// not expose peer credentials (grpc/grpc#15511), so the daemon accepts connections itself, asks
// the kernel (SO_PEERCRED), and hands only admitted connections to gRPC.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace ligerd {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

absl::StatusOr<PeerCredentials> GetPeerCredentials(int fd);

// Admitted: the daemon's own uid, root, and (when configured) members of `group`, by primary or
// supplementary group (read from /proc/<pid>/status, since SO_PEERCRED carries only the primary).
struct PeerPolicy {
  uid_t daemon_uid = 0;
  std::optional<gid_t> group;
};

// OK when admitted; PERMISSION_DENIED with the reason otherwise.
absl::Status CheckPeer(const PeerCredentials& peer, const PeerPolicy& policy);

}  // namespace ligerd
