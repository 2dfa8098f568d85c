// One ligerd per socket path. An flock on "<socket>.lock" is held for the daemon's lifetime; the
// kernel drops it when the process dies however it dies, so a killed daemon never blocks the next
// one, and the next one can tell a stale socket file (nobody holds the lock) from a live one.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace ligerd {

class InstanceLock {
 public:
  // ALREADY_EXISTS naming the holder's pid when another instance serves `socket_path`. On success
  // a stale socket file left by a killed instance is removed (`removed_stale` says so).
  static absl::StatusOr<InstanceLock> Acquire(const std::string& socket_path);

  InstanceLock(InstanceLock&& other) noexcept;
  InstanceLock& operator=(InstanceLock&&) = delete;
  InstanceLock(const InstanceLock&) = delete;
  ~InstanceLock();  // removes the socket file, then releases the lock

  bool removed_stale() const { return removed_stale_; }
  const std::string& lock_path() const { return lock_path_; }

 private:
  InstanceLock(UniqueFd fd, std::string socket_path, std::string lock_path, bool removed_stale)
      : fd_(std::move(fd)), socket_path_(std::move(socket_path)), lock_path_(std::move(lock_path)),
        removed_stale_(removed_stale) {}
  UniqueFd fd_;  // holds the flock; empty once moved from
  std::string socket_path_;
  std::string lock_path_;
  bool removed_stale_ = false;
};

}  // namespace ligerd
