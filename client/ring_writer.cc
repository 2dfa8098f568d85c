#include "client/ring_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"

namespace ligerd {

absl::StatusOr<RingWriter> RingWriter::Open(const std::string& name, uint64_t session_id, uint32_t capacity) {
  const size_t bytes = ring::RingBytes(capacity);
  if (bytes == 0) return absl::InvalidArgumentError(absl::StrCat("ring capacity ", capacity, " is invalid"));
  UniqueFd fd(shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd) return absl::NotFoundError(absl::StrCat("cannot open ring ", name, ": ", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0 ||
      static_cast<size_t>(st.st_size) != bytes) {
    return absl::PermissionDeniedError(absl::StrCat("ring ", name, " is not an owner-only object of ", bytes,
                                                    " bytes belonging to us; refusing it"));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return absl::InternalError(absl::StrCat("mmap ", name, ": ", std::strerror(errno)));
  fd.reset();  // the mapping keeps the object alive
  RingWriter writer(base, bytes, capacity);
  const ring::RingHeader* h = writer.header();
  if (h->magic != ring::kMagic || h->layout_version != ring::kLayoutVersion ||
      h->record_bytes != sizeof(ring::OpRecord) || h->capacity != capacity || h->session_id != session_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ring ", name, " has layout version ", h->layout_version, ", record size ", h->record_bytes,
        "; this client speaks version ", ring::kLayoutVersion, " with ", sizeof(ring::OpRecord), "-byte records"));
  }
  writer.head_ = h->head.load(std::memory_order_relaxed);
  return writer;
}

RingWriter::RingWriter(RingWriter&& other) noexcept
    : base_(other.base_), bytes_(other.bytes_), capacity_(other.capacity_), head_(other.head_) {
  other.base_ = nullptr;
}

RingWriter::~RingWriter() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

absl::StatusOr<uint64_t> RingWriter::Push(ring::OpRecord record, std::chrono::milliseconds timeout,
                                          const std::function<bool()>& still_alive) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Spin briefly (the daemon usually frees a slot within microseconds), then sleep-poll.
  for (int spins = 0; head_ - header()->tail.load(std::memory_order_acquire) >= capacity_; ++spins) {
    if (spins < 1000) continue;
    if (std::chrono::steady_clock::now() > deadline || (still_alive && !still_alive())) {
      return absl::UnavailableError(absl::StrCat("op ring full for ", timeout.count(),
                                                 " ms: ligerd is not consuming (dead or stuck)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  record.sequence = head_;
  auto* slots = reinterpret_cast<ring::OpRecord*>(static_cast<char*>(base_) + ring::kRecordsOffset);
  std::memcpy(&slots[head_ & (capacity_ - 1)], &record, sizeof(record));
  ++head_;
  header()->head.store(head_, std::memory_order_release);  // publishes the record
  return record.sequence;
}

absl::Status RingWriter::SessionError() const {
  const auto* status = reinterpret_cast<const ring::SessionStatus*>(static_cast<char*>(base_) + sizeof(ring::RingHeader));
  const uint32_t code = status->error_code.load(std::memory_order_acquire);
  if (code == 0) return absl::OkStatus();
  const uint32_t n = std::min<uint32_t>(status->message_bytes, sizeof(status->message));
  return absl::Status(static_cast<absl::StatusCode>(code), std::string(status->message, n));
}

}  // namespace ligerd
