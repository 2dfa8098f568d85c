#include "server/dataplane/shm_ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "server/dataplane/stale_rings.h"

namespace ligerd::dataplane {

absl::StatusOr<ShmRing> ShmRing::Create(uint64_t session_id, uint32_t capacity) {
  const size_t bytes = ring::RingBytes(capacity);
  if (bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring capacity ", capacity, " is not a power of two in [",
                                                   ring::kMinCapacity, ", ", ring::kMaxCapacity, "]"));
  }
  // Random so that nobody can pre-create the name and have the daemon use their object.
  unsigned char random[16];
  if (getrandom(random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
    return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
  }
  // The pid names the daemon, so that a later one can tell this ring is stale once we are gone
  // (stale_rings.h).
  std::string name = absl::StrCat(RingNamePrefix(geteuid(), getpid()),
                                  absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(random), 16)));
  UniqueFd fd(shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) return absl::InternalError(absl::StrCat("shm_open ", name, ": ", std::strerror(errno)));
  // shm_open applies the umask, which can only remove bits; fchmod pins 0600 regardless.
  if (fchmod(fd.get(), 0600) != 0 || ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    shm_unlink(name.c_str());
    return absl::InternalError(absl::StrCat("sizing ", name, ": ", std::strerror(err)));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    shm_unlink(name.c_str());
    return absl::InternalError(absl::StrCat("mmap ", name, ": ", std::strerror(err)));
  }
  fd.reset();  // the mapping keeps the object alive
  // ftruncate zero-filled the object; construct the atomics in place, then the fixed fields.
  auto* header = new (base) ring::RingHeader{};
  header->magic = ring::kMagic;
  header->layout_version = ring::kLayoutVersion;
  header->record_bytes = sizeof(ring::OpRecord);
  header->capacity = capacity;
  header->session_id = session_id;
  header->head.store(0, std::memory_order_relaxed);
  header->tail.store(0, std::memory_order_relaxed);
  new (static_cast<char*>(base) + sizeof(ring::RingHeader)) ring::SessionStatus{};
  std::atomic_thread_fence(std::memory_order_release);
  return ShmRing(std::move(name), base, bytes, capacity);
}

ShmRing::ShmRing(ShmRing&& other) noexcept
    : name_(std::move(other.name_)), base_(other.base_), bytes_(other.bytes_), capacity_(other.capacity_) {
  other.base_ = nullptr;
  other.name_.clear();
}

ShmRing::~ShmRing() {
  if (base_ != nullptr) munmap(base_, bytes_);
  if (!name_.empty()) shm_unlink(name_.c_str());
}

}  // namespace ligerd::dataplane
