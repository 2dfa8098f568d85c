#include "server/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/logging.h"

namespace ligerd {
namespace {
absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(errno)));
}
// The pending-connection backlog: trainers connect once per process, so a few hundred ranks
// starting together is the worst case.
constexpr int kListenBacklog = 512;
}  // namespace

absl::Status PrepareSocketDirectory(const std::string& socket_path, std::optional<gid_t> group) {
  const std::string dir = std::filesystem::path(socket_path).parent_path().string();
  const mode_t wanted = group ? 0710 : 0700;
  std::error_code ec;
  // Parents other than the last are created with the umask; only the last one is ours to lock.
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path(), ec);
  const bool created = mkdir(dir.c_str(), wanted) == 0;
  if (!created && errno != EEXIST) return Errno("cannot create directory", dir);
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return Errno("cannot stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory '", dir, "' is not a directory (a symlink?); refusing it"));
  }
  const uid_t us = geteuid();
  if (created) {
    // Ours: set its group and mode (mkdir applied the umask).
    if (st.st_uid != us) {
      return absl::FailedPreconditionError(
          absl::StrCat("socket directory '", dir, "' was replaced while being created; refusing it"));
    }
    if (group && chown(dir.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      return Errno("cannot give the group", dir);
    }
    if ((st.st_mode & 07777) != wanted && chmod(dir.c_str(), wanted) != 0) return Errno("cannot chmod", dir);
    return absl::OkStatus();
  }
  // Existing (e.g. /tmp, or systemd's RuntimeDirectory): used as it is, never chmodded, since
  // others may rely on its mode. Safe when only we or root can replace the socket in it.
  if (st.st_uid != us && st.st_uid != 0) {
    return absl::FailedPreconditionError(absl::StrCat("socket directory '", dir, "' belongs to uid ",
                                                      st.st_uid, ", not to us (uid ", us,
                                                      ") or root; refusing it"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory '", dir, "' (mode ", mode,
        ") is writable by its group or others without the sticky bit, so they could replace the "
        "socket; refusing it (remove that write permission, or use a directory ligerd creates)"));
  }
  if (group && (st.st_mode & (S_IXGRP | S_IXOTH)) == 0) {
    LIGERD_LOG(kWarning) << "socket directory " << dir << " is not searchable by its group or others, so "
                         << "members of --socket_group cannot reach the socket; it is used as it is";
  }
  return absl::OkStatus();
}

absl::StatusOr<ListeningSocket> ListeningSocket::Bind(const std::string& path,
                                                      std::optional<gid_t> group) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: '", path, "'"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Errno("socket() for", path);
  // Bind under a umask that leaves the socket owner-only from its first instant; chmod after.
  const mode_t old_umask = umask(0177);
  const int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old_umask);
  if (rc != 0) return Errno("cannot bind", path);
  if (group) {
    if (chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) return Errno("cannot chgrp", path);
    if (chmod(path.c_str(), 0660) != 0) return Errno("cannot chmod", path);
  }
  if (listen(fd.get(), kListenBacklog) != 0) return Errno("cannot listen on", path);
  return ListeningSocket(std::move(fd));
}

}  // namespace ligerd
