// The consumer side of a session's ring. It keeps its own copy of the consumer index, reads the
// producer's head with acquire ordering, copies each record out before looking at it, and
// publishes progress (the tail) only after the copy, which is what gives the producer
// backpressure: a full ring makes the producer wait, nothing is dropped.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "server/dataplane/shm_ring.h"

namespace ligerd::dataplane {

class RingReader {
 public:
  explicit RingReader(const ShmRing* ring) : ring_(ring) {}

  // The next record copied out, nullopt when the ring is empty, or an error when the client has
  // corrupted the shared indices (head behind tail or more than a ring ahead): the session must
  // then be failed, since nothing further in its ring can be trusted.
  absl::StatusOr<std::optional<ring::OpRecord>> Next();

  uint64_t next_sequence() const { return tail_; }

 private:
  const ShmRing* ring_;
  uint64_t tail_ = 0;  // our own copy; the shared tail is only ever written from it
};

}  // namespace ligerd::dataplane
