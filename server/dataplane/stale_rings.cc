#include "server/dataplane/stale_rings.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace ligerd::dataplane {
namespace {

std::string MarkerName(uid_t uid, pid_t pid) { return absl::StrCat("ligerd-", uid, "-", pid, ".alive"); }

bool IsHex(absl::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// The pid in "ligerd-<uid>-<pid>-<32 hex>" or "ligerd-<uid>-<pid>.alive"; 0 when `name` is
// neither, for `uid`.
pid_t PidOf(absl::string_view name, uid_t uid, bool* marker) {
  if (!absl::ConsumePrefix(&name, absl::StrCat("ligerd-", uid, "-"))) return 0;
  *marker = absl::ConsumeSuffix(&name, ".alive");
  absl::string_view pid_text = name;
  if (!*marker) {
    const size_t dash = name.find('-');
    if (dash == absl::string_view::npos) return 0;
    const absl::string_view random = name.substr(dash + 1);
    if (random.size() != 32 || !IsHex(random)) return 0;
    pid_text = name.substr(0, dash);
  }
  int64_t pid = 0;
  if (!absl::SimpleAtoi(pid_text, &pid) || pid <= 0 || pid > INT32_MAX) return 0;
  return static_cast<pid_t>(pid);
}

// True when no daemon with this pid can still be using its rings (see the header).
bool DaemonGone(int dir_fd, uid_t uid, pid_t pid) {
  if (pid == ::getpid()) return false;
  if (::kill(pid, 0) == 0 || errno == EPERM) return false;  // EPERM: exists, another user's
  UniqueFd marker(::openat(dir_fd, MarkerName(uid, pid).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!marker) return errno == ENOENT;
  if (::flock(marker.get(), LOCK_EX | LOCK_NB) != 0) return false;  // held: alive elsewhere
  return true;  // closing `marker` releases the probe lock
}

}  // namespace

std::string RingNamePrefix(uid_t uid, pid_t pid) { return absl::StrCat("/ligerd-", uid, "-", pid, "-"); }

absl::StatusOr<LivenessMarker> LivenessMarker::Acquire(const std::filesystem::path& shm_dir) {
  const std::filesystem::path path = shm_dir / MarkerName(::geteuid(), ::getpid());
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd) return absl::InternalError(absl::StrCat("cannot create ", path.string(), ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
    return absl::FailedPreconditionError(absl::StrCat(path.string(), " is not a regular file of ours"));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0)
    return absl::InternalError(absl::StrCat("cannot lock ", path.string(), ": ", std::strerror(errno)));
  return LivenessMarker(path, std::move(fd));
}

absl::StatusOr<std::shared_ptr<LivenessMarker>> LivenessMarker::ForThisProcess() {
  static absl::Mutex mu(absl::kConstInit);
  static auto* current = new std::weak_ptr<LivenessMarker>();
  absl::MutexLock lock(&mu);
  if (std::shared_ptr<LivenessMarker> held = current->lock()) return held;
  absl::StatusOr<LivenessMarker> made = Acquire();
  if (!made.ok()) return made.status();
  auto held = std::make_shared<LivenessMarker>(std::move(*made));
  *current = held;
  return held;
}

LivenessMarker::~LivenessMarker() {
  if (fd_) ::unlink(path_.c_str());  // a moved-from marker has no fd and no file to remove
}

StaleRingReport RemoveStaleRings(const std::filesystem::path& shm_dir) {
  StaleRingReport report;
  UniqueFd dir_fd(::open(shm_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) return report;
  DIR* dir = ::fdopendir(::dup(dir_fd.get()));
  if (dir == nullptr) return report;
  const uid_t uid = ::geteuid();
  while (dirent* de = ::readdir(dir)) {
    bool marker = false;
    const pid_t pid = PidOf(de->d_name, uid, &marker);
    if (pid == 0) continue;
    struct stat st;
    if (::fstatat(dir_fd.get(), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode) || st.st_uid != uid) {
      ++report.kept_foreign;
      continue;
    }
    if (!DaemonGone(dir_fd.get(), uid, pid)) {
      ++report.kept_alive;
      continue;
    }
    if (::unlinkat(dir_fd.get(), de->d_name, 0) == 0) ++report.removed;
  }
  ::closedir(dir);
  return report;
}

}  // namespace ligerd::dataplane
