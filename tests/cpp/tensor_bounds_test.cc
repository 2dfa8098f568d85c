#include "server/dataplane/tensor_bounds.h"

#include <gtest/gtest.h>

#include <limits>

namespace ligerd::dataplane {
namespace {

ring::TensorRef Ref(uint64_t offset, std::initializer_list<int64_t> sizes, std::initializer_list<int64_t> strides,
                    ring::RingDType dtype = ring::RingDType::kBFloat16) {
  ring::TensorRef ref{};
  ref.byte_offset = offset;
  ref.dtype = static_cast<uint8_t>(dtype);
  ref.ndim = static_cast<uint8_t>(sizes.size());
  int d = 0;
  for (int64_t s : sizes) ref.sizes[d++] = s;
  d = 0;
  for (int64_t s : strides) ref.strides[d++] = s;
  return ref;
}

TEST(TensorSpan, ContiguousAndStrided) {
  int64_t sizes[] = {4, 8}, strides[] = {8, 1};
  EXPECT_EQ(*TensorSpanBytes(2, sizes, strides, 2), 64u);
  int64_t padded[] = {16, 1};  // rows padded to 16 elements: last row needs only 8
  EXPECT_EQ(*TensorSpanBytes(2, sizes, padded, 2), (3 * 16 + 7 + 1) * 2u);
  int64_t broadcast[] = {0, 1};  // stride 0 (expand) reads one row
  EXPECT_EQ(*TensorSpanBytes(2, sizes, broadcast, 4), 8 * 4u);
}

TEST(TensorSpan, EmptyTensorTouchesNothing) {
  int64_t sizes[] = {0, 1 << 30}, strides[] = {1 << 30, 1};
  EXPECT_EQ(*TensorSpanBytes(2, sizes, strides, 4), 0u);
}

TEST(TensorSpan, AnEmptyDimDoesNotSkipTheChecksOfTheOthers) {
  // Issue 17: an empty dimension used to end the checks, so what came after it was never looked at.
  const int64_t neg_after[] = {0, -3}, neg_stride_after[] = {1, -1}, ok_strides[] = {4, 1};
  EXPECT_FALSE(TensorSpanBytes(2, neg_after, ok_strides, 2).ok()) << "negative size after an empty dim";
  const int64_t sizes[] = {0, 4};
  EXPECT_FALSE(TensorSpanBytes(2, sizes, neg_stride_after, 2).ok()) << "negative stride after an empty dim";
  const int64_t huge[] = {0, int64_t{1} << 62, int64_t{1} << 62}, huge_strides[] = {1, int64_t{1} << 62, 1};
  EXPECT_FALSE(TensorSpanBytes(3, huge, huge_strides, 2).ok()) << "overflowing dims after an empty one";
  const int64_t fine[] = {0, 3, 5}, fine_strides[] = {15, 5, 1};
  EXPECT_EQ(*TensorSpanBytes(3, fine, fine_strides, 2), 0u) << "a well-formed empty tensor touches nothing";
}

TEST(TensorSpan, RejectsNegativeBadNdimAndOverflow) {
  int64_t sizes[] = {2, 2}, neg[] = {-1, 1};
  EXPECT_FALSE(TensorSpanBytes(2, sizes, neg, 2).ok());
  int64_t neg_size[] = {-2, 2}, ok_strides[] = {2, 1};
  EXPECT_FALSE(TensorSpanBytes(2, neg_size, ok_strides, 2).ok());
  EXPECT_FALSE(TensorSpanBytes(0, sizes, ok_strides, 2).ok());
  EXPECT_FALSE(TensorSpanBytes(5, sizes, ok_strides, 2).ok());
  const int64_t big = std::numeric_limits<int64_t>::max();
  int64_t huge[] = {big, big}, huge_strides[] = {big, 1};
  auto span = TensorSpanBytes(2, huge, huge_strides, 8);
  ASSERT_FALSE(span.ok());
  EXPECT_NE(span.status().message().find("overflow"), absl::string_view::npos);
  int64_t one[] = {big}, unit[] = {1};
  EXPECT_FALSE(TensorSpanBytes(1, one, unit, 8).ok()) << "element count fits, bytes do not";
}

TEST(TensorInBuffer, ExactFitPassesOneByteOverFails) {
  EXPECT_TRUE(CheckTensorInBuffer(Ref(0, {4, 8}, {8, 1}), 64, "t").ok());
  EXPECT_TRUE(CheckTensorInBuffer(Ref(64, {4, 8}, {8, 1}), 128, "t").ok());
  auto status = CheckTensorInBuffer(Ref(66, {4, 8}, {8, 1}), 128, "rms_norm_fwd: tensor 0");
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("rms_norm_fwd: tensor 0"), absl::string_view::npos);
}

TEST(TensorInBuffer, OffsetOverflowAndMisalignmentAreCaught) {
  EXPECT_FALSE(CheckTensorInBuffer(Ref(std::numeric_limits<uint64_t>::max() - 1, {4}, {1}), 1 << 20, "t").ok());
  EXPECT_FALSE(CheckTensorInBuffer(Ref(1, {4}, {1}), 1 << 20, "t").ok());
  EXPECT_FALSE(CheckTensorInBuffer(Ref(2, {4}, {1}, ring::RingDType::kFloat32), 1 << 20, "t").ok());
  EXPECT_FALSE(CheckTensorInBuffer(Ref(0, {4}, {1}, ring::RingDType::kInvalid), 1 << 20, "t").ok());
}

}  // namespace
}  // namespace ligerd::dataplane
