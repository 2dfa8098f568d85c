// Turns a ring record (already copied out of shared memory) into an op the executor can run, or
// into an error for that op alone. Every field is checked: sequence, op id, stream slot, counts,
// reserved bytes, and each tensor's dtype, shape and bounds inside a registered buffer.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"
#include "proto/ligerd/ring_layout.h"
#include "server/dataplane/buffer_registry.h"

namespace ligerd::dataplane {

struct RecordLimits {
  uint32_t num_ops = 0;           // catalogue size: op ids are indices below it
  uint32_t num_stream_slots = 0;  // flag pages the session has
  int device = 0;                 // device of the session (TensorView::device)
};

struct ValidatedOp {
  uint64_t sequence = 0;
  uint32_t op_id = 0;
  uint32_t stream_slot = 0;
  std::vector<kernels::TensorView> tensors;  // absent tensors have data == nullptr
  std::vector<double> scalars;
  std::vector<BufferRef> holds;  // keep the op's buffers mapped until it has run
};

absl::StatusOr<ValidatedOp> ValidateRecord(const ring::OpRecord& record, uint64_t expected_sequence,
                                           const RecordLimits& limits, const BufferRegistry& buffers);

}  // namespace ligerd::dataplane
