#include "server/peer_table.h"

#include <sys/stat.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ligerd {

bool PeerTable::StillOpen(int fd, const Entry& entry) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == entry.dev && st.st_ino == entry.ino;
}

void PeerTable::ForgetLocked(int fd) {
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return;
  const PeerCredentials& peer = it->second.peer;
  if (--per_pid_[peer.pid] == 0) per_pid_.erase(peer.pid);
  if (--per_uid_[peer.uid] == 0) per_uid_.erase(peer.uid);
  by_fd_.erase(it);
}

void PeerTable::SweepLocked() {
  std::vector<int> closed;
  for (const auto& [fd, entry] : by_fd_) {
    if (!StillOpen(fd, entry)) closed.push_back(fd);
  }
  for (int fd : closed) ForgetLocked(fd);
}

absl::Status PeerTable::CheckCapsLocked(const PeerCredentials& peer) const {
  if (by_fd_.size() >= limits_.max_connections) {
    return absl::ResourceExhaustedError(absl::StrCat("connection limit: ", by_fd_.size(),
                                                     " connections open (--max_connections=",
                                                     limits_.max_connections, ")"));
  }
  auto uid = per_uid_.find(peer.uid);
  if (uid != per_uid_.end() && uid->second >= limits_.max_per_uid) {
    return absl::ResourceExhaustedError(absl::StrCat("connection limit: uid ", peer.uid, " has ", uid->second,
                                                     " connections open (--max_connections_per_uid=",
                                                     limits_.max_per_uid, ")"));
  }
  auto pid = per_pid_.find(peer.pid);
  if (pid != per_pid_.end() && pid->second >= limits_.max_per_pid) {
    return absl::ResourceExhaustedError(absl::StrCat("connection limit: pid ", peer.pid, " has ", pid->second,
                                                     " connections open (--max_connections_per_pid=",
                                                     limits_.max_per_pid, ")"));
  }
  return absl::OkStatus();
}

absl::Status PeerTable::Admit(int fd, const PeerCredentials& peer) {
  Entry entry{peer};
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::InternalError(absl::StrCat("fstat of connection fd ", fd, " failed"));
  entry.dev = st.st_dev;
  entry.ino = st.st_ino;
  absl::MutexLock lock(&mu_);
  ForgetLocked(fd);  // the number was reused: its old connection is closed
  if (!CheckCapsLocked(peer).ok()) SweepLocked();  // count only connections still open
  if (absl::Status caps = CheckCapsLocked(peer); !caps.ok()) return caps;
  by_fd_[fd] = entry;
  ++per_pid_[peer.pid];
  ++per_uid_[peer.uid];
  return absl::OkStatus();
}

absl::StatusOr<PeerCredentials> PeerTable::Lookup(absl::string_view peer) const {
  int fd;
  if (!absl::ConsumePrefix(&peer, "fd:") || !absl::SimpleAtoi(peer, &fd)) {
    return absl::UnauthenticatedError(absl::StrCat("connection '", peer, "' was not admitted by ligerd's acceptor"));
  }
  absl::MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return absl::UnauthenticatedError(absl::StrCat("unknown connection fd ", fd));
  return it->second.peer;
}

size_t PeerTable::Sweep() {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  return by_fd_.size();
}

size_t PeerTable::open_connections() const {
  absl::MutexLock lock(&mu_);
  return by_fd_.size();
}

}  // namespace ligerd
