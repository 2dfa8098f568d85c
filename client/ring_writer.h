// The producer side of a session's op ring (client process). Shared by C++ clients and the Python
// extension. Single producer: one writer per ring, used from one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "proto/ligerd/ring_layout.h"

namespace ligerd {

class RingWriter {
 public:
  // Maps the ring the daemon created for `session_id`; checks the object is ours, its size, and
  // the header's magic, layout version, record size and capacity.
  static absl::StatusOr<RingWriter> Open(const std::string& name, uint64_t session_id, uint32_t capacity);

  RingWriter(RingWriter&& other) noexcept;
  RingWriter& operator=(RingWriter&&) = delete;
  RingWriter(const RingWriter&) = delete;
  ~RingWriter();

  // Publishes `record` with the next sequence number (filled in here) and returns it. When the
  // ring is full it waits for the daemon (backpressure) up to `timeout`, calling `still_alive`
  // between waits so that a dead daemon is an error (UNAVAILABLE), never a hang.
  absl::StatusOr<uint64_t> Push(ring::OpRecord record, std::chrono::milliseconds timeout,
                                const std::function<bool()>& still_alive = {});

  // The first asynchronous error the daemon recorded for this session, or OK.
  absl::Status SessionError() const;

  uint64_t next_sequence() const { return head_; }
  uint32_t capacity() const { return capacity_; }

 private:
  RingWriter(void* base, size_t bytes, uint32_t capacity) : base_(base), bytes_(bytes), capacity_(capacity) {}
  ring::RingHeader* header() const { return static_cast<ring::RingHeader*>(base_); }

  void* base_ = nullptr;
  size_t bytes_ = 0;
  uint32_t capacity_ = 0;
  uint64_t head_ = 0;  // our copy of the producer index
};

}  // namespace ligerd
