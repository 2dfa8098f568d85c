#include "server/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ligerd {

absl::StatusOr<InstanceLock> InstanceLock::Acquire(const std::string& socket_path) {
  std::string lock_path = socket_path + ".lock";
  // The lock file is never unlinked: unlinking a held lock file lets two later instances lock two
  // different inodes of the same name.
  UniqueFd fd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) {
    return absl::InternalError(absl::StrCat("cannot open lock file '", lock_path, "': ", std::strerror(errno)));
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = pread(fd.get(), buf, sizeof(buf) - 1, 0);
    if (err == EWOULDBLOCK) {
      int pid = 0;
      const bool known = n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(buf), &pid);
      return absl::AlreadyExistsError(absl::StrCat(
          "another ligerd", known ? absl::StrCat(" (pid ", pid, ")") : std::string(),
          " is already serving ", socket_path));
    }
    return absl::InternalError(absl::StrCat("cannot lock '", lock_path, "': ", std::strerror(err)));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd.get(), 0) != 0 ||
      pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return absl::InternalError(absl::StrCat("cannot write lock file '", lock_path, "'"));
  }
  // We hold the lock, so whatever sits at the socket path was left by an instance that died.
  bool removed_stale = false;
  struct stat st;
  if (lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", socket_path, "' exists and is not a socket; remove it or choose another --socket"));
    }
    if (unlink(socket_path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot remove stale socket '", socket_path,
                                              "': ", std::strerror(errno)));
    }
    removed_stale = true;
  }
  return InstanceLock(std::move(fd), socket_path, std::move(lock_path), removed_stale);
}

InstanceLock::InstanceLock(InstanceLock&& other) noexcept
    : fd_(std::move(other.fd_)), socket_path_(std::move(other.socket_path_)),
      lock_path_(std::move(other.lock_path_)), removed_stale_(other.removed_stale_) {}

InstanceLock::~InstanceLock() {
  if (!fd_) return;
  unlink(socket_path_.c_str());
  fd_.reset();  // releases the flock, after the socket file is gone
}

}  // namespace ligerd
