#include "server/dataplane/record_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/dataplane/tensor_bounds.h"

namespace ligerd::dataplane {
namespace {

bool AllZero(const uint8_t* bytes, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

absl::Status Invalid(uint64_t sequence, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("op record ", sequence, ": ", what));
}

}  // namespace

absl::StatusOr<ValidatedOp> ValidateRecord(const ring::OpRecord& record, uint64_t expected_sequence,
                                           const RecordLimits& limits, const BufferRegistry& buffers) {
  const uint64_t seq = record.sequence;
  if (seq != expected_sequence) {
    return Invalid(seq, absl::StrCat("sequence ", seq, " where ", expected_sequence, " was due"));
  }
  if (record.op_id >= limits.num_ops) {
    return Invalid(seq, absl::StrCat("op id ", record.op_id, " is not in the catalogue (", limits.num_ops, " ops)"));
  }
  if (record.stream_slot >= limits.num_stream_slots) {
    return Invalid(seq, absl::StrCat("stream slot ", record.stream_slot, " does not exist (",
                                     limits.num_stream_slots, " slots)"));
  }
  if (record.num_tensors > ring::kMaxTensors || record.num_scalars > ring::kMaxScalars) {
    return Invalid(seq, absl::StrCat(record.num_tensors, " tensors and ", record.num_scalars,
                                     " scalars exceed the record's ", ring::kMaxTensors, " and ", ring::kMaxScalars));
  }
  if (record.flags != 0 || record.reserved0 != 0) return Invalid(seq, "reserved fields are not zero");

  ValidatedOp op;
  op.sequence = seq;
  op.op_id = record.op_id;
  op.stream_slot = record.stream_slot;
  for (uint32_t i = 0; i < record.num_tensors; ++i) {
    const ring::TensorRef& ref = record.tensors[i];
    const std::string what = absl::StrCat("op record ", seq, ": tensor ", i);
    if (!AllZero(ref.reserved, sizeof(ref.reserved))) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": reserved bytes are not zero"));
    }
    kernels::TensorView view;
    view.device = limits.device;
    if (ref.buffer_id == 0) {  // an optional tensor the caller left out
      op.tensors.push_back(view);
      continue;
    }
    absl::StatusOr<BufferRef> buffer = buffers.Find(ref.buffer_id);
    if (!buffer.ok()) return absl::NotFoundError(absl::StrCat(what, ": ", buffer.status().message()));
    if (absl::Status s = CheckTensorInBuffer(ref, buffer->size_bytes, what); !s.ok()) return s;
    view.dtype = static_cast<kernels::DType>(ref.dtype);
    view.ndim = ref.ndim;
    for (int d = 0; d < ref.ndim; ++d) {
      view.sizes[d] = ref.sizes[d];
      view.strides[d] = ref.strides[d];
    }
    view.data = static_cast<char*>(buffer->mapping->base()) + ref.byte_offset;
    op.tensors.push_back(view);
    op.holds.push_back(std::move(*buffer));
  }
  for (uint32_t i = 0; i < record.num_scalars; ++i) {
    // Scalars are eps, scales, indices: a NaN or infinity is never meaningful and would poison
    // the op silently, so it is refused here.
    if (!std::isfinite(record.scalars[i])) {
      return Invalid(seq, absl::StrCat("scalar ", i, " is not finite"));
    }
    op.scalars.push_back(record.scalars[i]);
  }
  return op;
}

}  // namespace ligerd::dataplane
