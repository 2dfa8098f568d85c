// Rings left in /dev/shm by a ligerd that died without unlinking them (SIGKILL, a crash, an OOM
// kill). Each ring is named "/ligerd-<uid>-<pid>-<32 hex>" (ShmRing::Create) after the daemon
// that made it, and each daemon holds an exclusive flock on its marker "/ligerd-<uid>-<pid>.alive"
// for its whole life (LivenessMarker). A daemon at start removes a ring only when all of these
// hold, so it never touches another's live ring or anyone else's file:
//   - the name has our prefix and our uid, and the object is a regular file owned by us;
//   - its pid is not this process and no such process exists in our pid namespace;
//   - nobody holds that pid's marker (a daemon with the same pid number in another pid
//     namespace sharing /dev/shm, as MPS pods do, holds its own).
// Stale markers are removed the same way.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace ligerd::dataplane {

// "/ligerd-<uid>-<pid>-" : the shm name prefix of `pid`'s rings.
std::string RingNamePrefix(uid_t uid, pid_t pid);

// This process's marker, locked until destruction.
class LivenessMarker {
 public:
  // The process's one marker in /dev/shm, shared by every Daemon of the process (tests run
  // several) and removed when the last one lets go.
  static absl::StatusOr<std::shared_ptr<LivenessMarker>> ForThisProcess();
  // Creates (or reuses) and locks "<shm_dir>/ligerd-<euid>-<pid>.alive".
  static absl::StatusOr<LivenessMarker> Acquire(const std::filesystem::path& shm_dir = "/dev/shm");
  LivenessMarker(LivenessMarker&&) noexcept = default;
  LivenessMarker& operator=(LivenessMarker&&) noexcept = default;
  ~LivenessMarker();

 private:
  LivenessMarker(std::filesystem::path path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::filesystem::path path_;
  UniqueFd fd_;
};

struct StaleRingReport {
  size_t removed = 0;       // rings and markers of dead daemons, unlinked
  size_t kept_alive = 0;    // ours by name, but their daemon is alive
  size_t kept_foreign = 0;  // our prefix and uid in the name, but not a regular file owned by us
};

// Scans `shm_dir` (where shm_open puts objects on Linux) once; see the header comment.
StaleRingReport RemoveStaleRings(const std::filesystem::path& shm_dir = "/dev/shm");

}  // namespace ligerd::dataplane
