// The shared-memory object that holds a session's ring (proto/ligerd/ring_layout.h). The daemon
// creates it owner-only with an unguessable name, the client maps it by that name, and the daemon
// unlinks and unmaps it when the session ends.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "proto/ligerd/ring_layout.h"

namespace ligerd::dataplane {

class ShmRing {
 public:
  // Creates "/ligerd-<uid>-<pid>-<128 random bits>" (O_EXCL, 0600) sized for `capacity` records and
  // writes the header. INVALID_ARGUMENT for a capacity that is not a power of two in range.
  static absl::StatusOr<ShmRing> Create(uint64_t session_id, uint32_t capacity);

  ShmRing(ShmRing&& other) noexcept;
  ShmRing& operator=(ShmRing&&) = delete;
  ShmRing(const ShmRing&) = delete;
  ~ShmRing();  // unmaps and unlinks

  const std::string& name() const { return name_; }
  uint32_t capacity() const { return capacity_; }
  ring::RingHeader* header() const { return reinterpret_cast<ring::RingHeader*>(base_); }
  ring::SessionStatus* status() const {
    return reinterpret_cast<ring::SessionStatus*>(static_cast<char*>(base_) + sizeof(ring::RingHeader));
  }
  // The shared slot of `sequence` (read it only by copying: the client may rewrite it any time).
  const volatile ring::OpRecord* slot(uint64_t sequence) const {
    return reinterpret_cast<const volatile ring::OpRecord*>(static_cast<char*>(base_) + ring::kRecordsOffset) +
           (sequence & (capacity_ - 1));
  }

 private:
  ShmRing(std::string name, void* base, size_t bytes, uint32_t capacity)
      : name_(std::move(name)), base_(base), bytes_(bytes), capacity_(capacity) {}
  std::string name_;
  void* base_ = nullptr;
  size_t bytes_ = 0;
  uint32_t capacity_ = 0;
};

}  // namespace ligerd::dataplane
