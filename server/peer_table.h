// Which process is behind each connection the daemon admitted. gRPC serves connections handed to
// it by fd and names them "fd:<n>" in ServerContext::peer(), so the acceptor records the peer
// credentials it checked under that fd, and RPC handlers look them up (gRPC C++ has no API for
// peer credentials: grpc/grpc#15511).
#pragma once

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/peer_credentials.h"

namespace ligerd {

class PeerTable {
 public:
  // A new connection on `fd` replaces whatever an earlier, closed connection with the same number
  // left: fds are reused only after gRPC closed the old one.
  void Admit(int fd, const PeerCredentials& peer);
  // `peer` as gRPC reports it ("fd:12"). UNAUTHENTICATED when it is not an admitted connection.
  absl::StatusOr<PeerCredentials> Lookup(absl::string_view peer) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, PeerCredentials> by_fd_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd
