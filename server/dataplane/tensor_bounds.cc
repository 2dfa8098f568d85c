#include "server/dataplane/tensor_bounds.h"

#include "absl/strings/str_cat.h"

namespace ligerd::dataplane {

int RingDTypeBytes(uint8_t dtype) {
  switch (static_cast<ring::RingDType>(dtype)) {
    case ring::RingDType::kFloat32: return 4;
    case ring::RingDType::kFloat16: return 2;
    case ring::RingDType::kBFloat16: return 2;
    case ring::RingDType::kInt32: return 4;
    case ring::RingDType::kInt64: return 8;
    case ring::RingDType::kInvalid: return 0;
  }
  return 0;
}

absl::StatusOr<uint64_t> TensorSpanBytes(int ndim, const int64_t* sizes, const int64_t* strides,
                                         int element_bytes) {
  if (ndim < 1 || ndim > ring::kMaxDims) {
    return absl::InvalidArgumentError(absl::StrCat("ndim ", ndim, " is outside 1..", ring::kMaxDims));
  }
  if (element_bytes <= 0) return absl::InvalidArgumentError("invalid dtype");
  uint64_t last = 0;  // element index of the last reachable element
  bool empty = false;
  // Every dim is checked, whatever comes before it: an empty dim must not let the others through.
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] < 0) return absl::InvalidArgumentError(absl::StrCat("size[", d, "] = ", sizes[d], " is negative"));
    if (strides[d] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("stride[", d, "] = ", strides[d], " is negative"));
    }
    empty = empty || sizes[d] == 0;
  }
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 0) continue;
    uint64_t step;
    if (__builtin_mul_overflow(static_cast<uint64_t>(sizes[d] - 1), static_cast<uint64_t>(strides[d]), &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return absl::InvalidArgumentError("sizes and strides overflow 64-bit arithmetic");
    }
  }
  if (empty) return uint64_t{0};  // an empty tensor touches nothing
  uint64_t span;
  if (__builtin_add_overflow(last, uint64_t{1}, &span) ||
      __builtin_mul_overflow(span, static_cast<uint64_t>(element_bytes), &span)) {
    return absl::InvalidArgumentError("sizes and strides overflow 64-bit arithmetic");
  }
  return span;
}

absl::Status CheckTensorInBuffer(const ring::TensorRef& ref, uint64_t buffer_bytes, absl::string_view what) {
  const int element_bytes = RingDTypeBytes(ref.dtype);
  if (element_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unknown dtype code ", ref.dtype));
  }
  absl::StatusOr<uint64_t> span = TensorSpanBytes(ref.ndim, ref.sizes, ref.strides, element_bytes);
  if (!span.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", span.status().message()));
  if (ref.byte_offset % element_bytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": byte offset ", ref.byte_offset,
                                                   " is not aligned to its ", element_bytes, "-byte elements"));
  }
  uint64_t end;
  if (__builtin_add_overflow(ref.byte_offset, *span, &end) || end > buffer_bytes || ref.byte_offset > buffer_bytes) {
    return absl::OutOfRangeError(absl::StrCat(what, ": bytes [", ref.byte_offset, ", ", ref.byte_offset,
                                              " + ", *span, ") fall outside its buffer of ", buffer_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace ligerd::dataplane
