// Bounds arithmetic for tensors that clients name inside their registered buffers. Every value
// here came from shared memory a client wrote, so every step is checked for overflow: a tensor
// passes only if each byte it can touch lies inside the buffer.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/ligerd/ring_layout.h"

namespace ligerd::dataplane {

// Bytes of a ring dtype; 0 for an invalid one.
int RingDTypeBytes(uint8_t dtype);

// Bytes from the tensor's first element to one past its last element reachable through
// sizes/strides (0 for an empty tensor). INVALID_ARGUMENT on negative sizes or strides, ndim
// outside 1..kMaxDims, or any overflow of 64-bit arithmetic.
absl::StatusOr<uint64_t> TensorSpanBytes(int ndim, const int64_t* sizes, const int64_t* strides,
                                         int element_bytes);

// OK when [byte_offset, byte_offset + span) lies inside a buffer of `buffer_bytes` and the offset
// is aligned to the element size. Messages name `what` (e.g. "rms_norm_fwd: tensor 2").
absl::Status CheckTensorInBuffer(const ring::TensorRef& ref, uint64_t buffer_bytes, absl::string_view what);

}  // namespace ligerd::dataplane
