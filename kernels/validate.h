// Checks shared by ops' plan functions: tensor geometry helpers with error messages that name
// the op and the tensor.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/catalogue.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

int64_t NumElements(const TensorView& t);

// Bytes from t.data to one past its last element (0 for an empty tensor); false on overflow.
bool ByteExtent(const TensorView& t, uint64_t* bytes);

// Generic checks of a call against a spec (count, required, dtype, rank, sizes, strides,
// device, overflow, overlap of outputs with anything else).
absl::Status CheckCall(const OpSpec& spec, const OpCall& call, const DeviceInfo& device);

// A tensor seen as a matrix of rows: the last dim is the row, the leading dims flatten into the
// row index with one stride. Requires a contiguous last dim and leading dims that collapse
// (dim i's stride == dim i+1's stride * size, ignoring dims of size 1); the message asks the
// caller to make the tensor contiguous otherwise.
struct RowMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements between consecutive rows
};
absl::StatusOr<RowMatrix> AsRows(std::string_view op, std::string_view name, const TensorView& t);

// True when the tensor is laid out contiguously (row-major), size-1 dims ignored.
bool IsContiguous(const TensorView& t);

bool SameView(const TensorView& a, const TensorView& b);

// True when no two elements of `t` share an address (strides sorted, each dim's stride exceeds
// the span of the smaller ones; size-1 dims ignored). False for e.g. expanded (stride 0) views:
// an output must not be one.
bool NoInternalOverlap(const TensorView& t);

std::string ShapeString(const TensorView& t);

// OK when `t` has the shape and dtype of `ref`; otherwise INVALID_ARGUMENT naming the op, both
// tensors and what differs (sizes only: strides are the op's business).
absl::Status CheckSameShape(absl::string_view op, absl::string_view name, const TensorView& t,
                            absl::string_view ref_name, const TensorView& ref);

}  // namespace ligerd::kernels
