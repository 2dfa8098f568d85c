#include "proto/ligerd/ring_layout.h"

#include <gtest/gtest.h>

#include "kernels/tensor_view.h"

namespace ligerd::ring {
namespace {

TEST(RingLayout, CapacityMustBeAPowerOfTwoWithinLimits) {
  EXPECT_TRUE(IsValidCapacity(kMinCapacity));
  EXPECT_TRUE(IsValidCapacity(1024));
  EXPECT_TRUE(IsValidCapacity(kMaxCapacity));
  EXPECT_FALSE(IsValidCapacity(0));
  EXPECT_FALSE(IsValidCapacity(kMinCapacity / 2));
  EXPECT_FALSE(IsValidCapacity(1000));
  EXPECT_FALSE(IsValidCapacity(kMaxCapacity * 2));
  EXPECT_FALSE(IsValidCapacity(0xFFFFFFFFu));
}

TEST(RingLayout, BytesAreHeaderStatusAndRecords) {
  EXPECT_EQ(RingBytes(1000), 0u);
  EXPECT_EQ(RingBytes(16), 3 * 64 + 4 * 64 + 16 * 1152u);
  EXPECT_EQ(kRecordsOffset % kCacheLine, 0u);
}

TEST(RingLayout, RecordsStayCacheLineAlignedInTheMapping) {
  EXPECT_EQ(alignof(OpRecord), kCacheLine);
  EXPECT_EQ(alignof(RingHeader), kCacheLine);
  EXPECT_EQ(sizeof(OpRecord) % alignof(OpRecord), 0u);
}

TEST(RingLayout, DTypeValuesMatchTheExecutor) {
  using kernels::DType;
  EXPECT_EQ(static_cast<int>(RingDType::kFloat32), static_cast<int>(DType::kFloat32));
  EXPECT_EQ(static_cast<int>(RingDType::kFloat16), static_cast<int>(DType::kFloat16));
  EXPECT_EQ(static_cast<int>(RingDType::kBFloat16), static_cast<int>(DType::kBFloat16));
  EXPECT_EQ(static_cast<int>(RingDType::kInt32), static_cast<int>(DType::kInt32));
  EXPECT_EQ(static_cast<int>(RingDType::kInt64), static_cast<int>(DType::kInt64));
  EXPECT_EQ(kMaxDims, kernels::kMaxDims);
}

TEST(RingLayout, StreamFlagsReleaseDistanceStaysPositive) {
  // Stream waits compare signed differences: the release distance must stay positive past any
  // sequence a session can reach (2^63 - 2^40 ops).
  EXPECT_GT(static_cast<int64_t>(kReleaseAhead), 0);
  EXPECT_GT(static_cast<int64_t>(kReleaseAhead), int64_t{kMaxCapacity});
}

TEST(RingLayout, StatusMessageFitsItsField) {
  SessionStatus status{};
  EXPECT_EQ(sizeof(status.message) + offsetof(SessionStatus, message), sizeof(SessionStatus));
}

}  // namespace
}  // namespace ligerd::ring
