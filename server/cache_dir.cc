#include "server/cache_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/tuning/tuning_db.h"
#include "server/logging.h"

namespace ligerd {
namespace {

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::FailedPreconditionError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Sets group and mode of a directory of ours (never follows a link in its place).
absl::Status Share(const std::string& path, std::optional<gid_t> group, mode_t mode) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return Errno("cannot stat", path);
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory of this user"));
  if (group && st.st_gid != *group && lchown(path.c_str(), static_cast<uid_t>(-1), *group) != 0)
    return Errno("cannot set the group of", path);
  if ((st.st_mode & 07777) != mode && chmod(path.c_str(), mode) != 0) return Errno("cannot chmod", path);
  return absl::OkStatus();
}

// Regular files of ours directly in `dir`: group `group`, mode 0640 (entries written before the
// directory was shared). Links and other files are left alone: readers never follow or read them.
void ShareEntries(const std::string& dir, gid_t group) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* de = readdir(d)) {
    const std::string path = absl::StrCat(dir, "/", de->d_name);
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) continue;
    if (st.st_gid != group) lchown(path.c_str(), static_cast<uid_t>(-1), group);
    if ((st.st_mode & 0777) != 0640) chmod(path.c_str(), 0640);
  }
  closedir(d);
}

}  // namespace

absl::StatusOr<kernels::CacheDirAccess> PrepareCacheDir(const std::string& dir, std::optional<gid_t> group) {
  absl::StatusOr<kernels::CacheDirAccess> access = kernels::OpenCacheDirectory(dir);
  if (!access.ok()) return access.status();
  if (access->read_only) {
    LIGERD_LOG(kWarning) << "cache dir " << dir << " is read-only for ligerd (" << access->why_read_only
                         << "): its kernels and tuned configs are used, missing kernels compile into memory, "
                         << "tuning results are not stored";
    return access;
  }
  const std::string tuning = kernels::TuningDb::DirFor(dir).string();
  std::error_code ec;
  const bool has_tuning = std::filesystem::is_directory(tuning, ec);
  if (!group) {
    if (absl::Status s = Share(dir, std::nullopt, 0700); !s.ok()) return s;
    access->file_mode = 0600;
    access->dir_mode = 0700;
    return access;
  }
  if (absl::Status s = Share(dir, group, 0750); !s.ok()) return s;
  ShareEntries(dir, *group);
  if (has_tuning) {
    if (absl::Status s = Share(tuning, group, 0750); !s.ok()) return s;
    ShareEntries(tuning, *group);
  }
  access->file_mode = 0640;
  access->dir_mode = 0750;
  access->group = *group;
  return access;
}

}  // namespace ligerd
