// Which process is behind each connection the daemon admitted. gRPC serves connections handed to
// it by fd and names them "fd:<n>" in ServerContext::peer(), so the acceptor records the peer
// credentials it checked under that fd, and RPC handlers look them up (gRPC C++ has no API for
// peer credentials: grpc/grpc#15511).
//
// The table also enforces the connection caps. gRPC does not say when it closes a connection, so
// each entry remembers its socket's inode: an entry whose fd is closed or now names another file
// is a connection gRPC has closed, and is forgotten (Sweep(), and before refusing on a cap).
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/peer_credentials.h"

namespace ligerd {

struct ConnectionLimits {
  size_t max_connections = 8192;  // all peers together
  size_t max_per_uid = 1024;
  size_t max_per_pid = 64;
};

class PeerTable {
 public:
  explicit PeerTable(ConnectionLimits limits = ConnectionLimits{}) : limits_(limits) {}

  // Records the connection on `fd` (a new connection replaces whatever an earlier, closed one with
  // the same number left). RESOURCE_EXHAUSTED, naming the cap and its flag, when the peer's pid,
  // its uid or all peers together already hold as many connections as allowed; then nothing is
  // recorded and the caller closes `fd`.
  absl::Status Admit(int fd, const PeerCredentials& peer);
  // `peer` as gRPC reports it ("fd:12"). UNAUTHENTICATED when it is not an admitted connection.
  absl::StatusOr<PeerCredentials> Lookup(absl::string_view peer) const;
  // Forgets connections gRPC has closed; returns how many remain open.
  size_t Sweep();
  size_t open_connections() const;

 private:
  struct Entry {
    PeerCredentials peer;
    dev_t dev = 0;
    ino_t ino = 0;
  };
  static bool StillOpen(int fd, const Entry& entry);
  void ForgetLocked(int fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckCapsLocked(const PeerCredentials& peer) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ConnectionLimits limits_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, Entry> by_fd_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<pid_t, size_t> per_pid_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uid_t, size_t> per_uid_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd
