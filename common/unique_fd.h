// An owned file descriptor: closed exactly once, by whoever owns it last, on every path out of a
// function (early error returns included), so no code closes a descriptor by hand.
#pragma once

#include <unistd.h>

#include <utility>

namespace ligerd {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership (e.g. to gRPC, which closes it) and returns the descriptor.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }
  // Closes the held descriptor, if any, and takes `fd` instead. close()'s result is ignored: after
  // close() the descriptor is gone either way (Linux never leaves it open), so there is nothing to
  // retry; a caller that must know whether buffered writes failed uses Close().
  void reset(int fd = -1) {
    const int old = std::exchange(fd_, fd);
    if (old >= 0 && old != fd) ::close(old);
  }
  // Closes now and returns close()'s result (0, or -1 with errno set): for a written file whose
  // close can report a deferred write error (NFS, quota). Leaves this empty either way.
  int Close() {
    const int old = std::exchange(fd_, -1);
    return old >= 0 ? ::close(old) : 0;
  }

 private:
  int fd_ = -1;
};

}  // namespace ligerd
