#include "server/dataplane/ring_reader.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ligerd::dataplane {

absl::StatusOr<std::optional<ring::OpRecord>> RingReader::Next() {
  const uint64_t head = ring_->header()->head.load(std::memory_order_acquire);
  if (head == tail_) return std::optional<ring::OpRecord>();
  if (head < tail_ || head - tail_ > ring_->capacity()) {
    return absl::DataLossError(absl::StrCat("ring index corrupted: head ", head, ", tail ", tail_,
                                            ", capacity ", ring_->capacity()));
  }
  ring::OpRecord copy;
  // A plain copy out of shared memory: from here on only `copy` is read, so a client rewriting
  // the slot cannot change a field between its check and its use.
  std::memcpy(&copy, const_cast<const ring::OpRecord*>(ring_->slot(tail_)), sizeof(copy));
  ++tail_;
  ring_->header()->tail.store(tail_, std::memory_order_release);
  return std::optional<ring::OpRecord>(copy);
}

}  // namespace ligerd::dataplane
