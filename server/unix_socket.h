// The control socket's file-system side: a private directory, a socket file with owner-only (or
// group) permissions, and removal on shutdown.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace ligerd {

// Creates the socket's parent directory if needed (0700, or 0710 and that group with `group`).
// An existing directory is used as it is, never chmodded (e.g. /tmp): it must be a directory, not
// a symlink, owned by us or root, and not writable by group or others unless sticky; otherwise
// FAILED_PRECONDITION (another user could swap the socket).
absl::Status PrepareSocketDirectory(const std::string& socket_path, std::optional<gid_t> group);

// An owned listening socket fd; closes on destruction. The socket file is not removed here
// (the instance lock's owner does that, so a second instance never unlinks a live socket).
class ListeningSocket {
 public:
  // Binds and listens on `path` (which must not exist), mode 0600 (0660 + chgrp with `group`).
  static absl::StatusOr<ListeningSocket> Bind(const std::string& path, std::optional<gid_t> group);
  ListeningSocket(ListeningSocket&&) noexcept = default;
  ListeningSocket& operator=(ListeningSocket&&) noexcept = default;

  int fd() const { return fd_.get(); }

 private:
  explicit ListeningSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace ligerd
