#include "server/peer_credentials.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ligerd {

absl::StatusOr<PeerCredentials> GetPeerCredentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED: ", std::strerror(errno)));
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

namespace {
// True when /proc/<pid>/status lists `gid` among the process's supplementary groups.
bool HasSupplementaryGroup(pid_t pid, gid_t gid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    for (absl::string_view token : absl::StrSplit(line.substr(7), absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
      uint32_t value;
      if (absl::SimpleAtoi(token, &value) && value == gid) return true;
    }
    return false;
  }
  return false;
}
}  // namespace

absl::Status CheckPeer(const PeerCredentials& peer, const PeerPolicy& policy) {
  if (peer.uid == policy.daemon_uid || peer.uid == 0) return absl::OkStatus();
  if (policy.group && (peer.gid == *policy.group || HasSupplementaryGroup(peer.pid, *policy.group))) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "peer pid ", peer.pid, " uid ", peer.uid, " gid ", peer.gid, " is not uid ",
      policy.daemon_uid, ", root",
      policy.group ? absl::StrCat(" or a member of gid ", *policy.group) : std::string()));
}

}  // namespace ligerd
