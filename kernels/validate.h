// Checks shared by ops' plan functions: tensor geometry helpers with error messages that name
// the op and the tensor.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// The most elements one tensor may describe, and (halved) the most bytes it may span: every
// product and sum of element counts, row counts, extents and byte sizes that planning forms from
// a checked call then stays inside int64. An empty tensor counts its other dims: {0, 2^62, 2^62}
// is refused like {2^62, 2^62}, not waved through because it has no element.
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 62;

// The product of the sizes: 0 when a dim is empty, INT64_MAX when the product overflows or a
// size is negative (CheckCall refuses both, so on a checked call it is exact).
int64_t NumElements(const TensorView& t);

// Bytes from t.data to one past its last element (0 for an empty tensor). False, whatever the
// order of the dims, when ndim is out of range, any size or stride is negative, the product of
// the non-empty sizes exceeds kMaxTensorElements or the span of the non-empty dims exceeds
// INT64_MAX / 2 bytes: an empty dim does not end the checks of the dims after it.
bool ByteExtent(const TensorView& t, uint64_t* bytes);

// The smallest power of two >= v (1 for v <= 1); INT64_MAX for v > 2^62, whose power of two
// int64 cannot hold. Terminates for any input.
int64_t NextPow2Saturating(int64_t v);

// Generic checks of a call against a spec (count, required, dtype, rank, sizes, strides,
// device, overflow, address ranges, overlap of outputs with anything else).
absl::Status CheckCall(const OpSpec& spec, const OpCall& call, const DeviceInfo& device);

// The part of CheckCall that depends on the tensors' addresses rather than their geometry: each
// present tensor aligned to its element size, its bytes [data, data + extent) not wrapping
// around the address space, no output overlapping another tensor except the exact alias its
// spec declares. `extents[i]` is ByteExtent of tensors[i] (0 when absent or empty). The plan
// cache runs it on every hit: its key fixes the geometry, not where the tensors are.
absl::Status CheckAddresses(const OpSpec& spec, std::span<const TensorView> tensors,
                            std::span<const uint64_t> extents);

// A tensor seen as a matrix of rows: the last dim is the row, the leading dims flatten into the
// row index with one stride. Requires a contiguous last dim and leading dims that collapse
// (dim i's stride == dim i+1's stride * size, ignoring dims of size 1); the message asks the
// caller to make the tensor contiguous otherwise. INVALID_ARGUMENT naming the op and tensor for
// a rank out of 1..kMaxDims, a negative size or a row count that overflows int64.
struct RowMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements between consecutive rows
};
absl::StatusOr<RowMatrix> AsRows(std::string_view op, std::string_view name, const TensorView& t);

// True when the tensor is laid out contiguously (row-major), size-1 dims ignored (false when the
// expected strides overflow int64).
bool IsContiguous(const TensorView& t);

bool SameView(const TensorView& a, const TensorView& b);

// True when no two elements of `t` share an address (strides sorted, each dim's stride exceeds
// the span of the smaller ones; size-1 dims ignored). False for e.g. expanded (stride 0) views:
// an output must not be one; false too when the span overflows int64.
bool NoInternalOverlap(const TensorView& t);

std::string ShapeString(const TensorView& t);

// OK when `t` has the shape and dtype of `ref`; otherwise INVALID_ARGUMENT naming the op, both
// tensors and what differs (sizes only: strides are the op's business).
absl::Status CheckSameShape(absl::string_view op, absl::string_view name, const TensorView& t,
                            absl::string_view ref_name, const TensorView& ref);

}  // namespace ligerd::kernels
