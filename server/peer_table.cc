#include "server/peer_table.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ligerd {

void PeerTable::Admit(int fd, const PeerCredentials& peer) {
  absl::MutexLock lock(&mu_);
  by_fd_[fd] = peer;
}

absl::StatusOr<PeerCredentials> PeerTable::Lookup(absl::string_view peer) const {
  int fd;
  if (!absl::ConsumePrefix(&peer, "fd:") || !absl::SimpleAtoi(peer, &fd)) {
    return absl::UnauthenticatedError(absl::StrCat("connection '", peer, "' was not admitted by ligerd's acceptor"));
  }
  absl::MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return absl::UnauthenticatedError(absl::StrCat("unknown connection fd ", fd));
  return it->second;
}

}  // namespace ligerd
