#include "server/dataplane/record_validation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "tests/cpp/fake_ipc.h"

namespace ligerd::dataplane {
namespace {
using testing::FakeIpcOpener;

constexpr uint64_t kBuffer = 42;
constexpr uint64_t kBufferBytes = 1 << 16;

class RecordValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.Register(kBuffer, FakeIpcOpener::Handle(kBufferBytes), kBufferBytes, 0).ok());
  }
  // rms_norm_fwd-shaped record: X (8x16 bf16), W absent, Y, RSTD.
  ring::OpRecord Good(uint64_t seq = 5) {
    ring::OpRecord r{};
    r.sequence = seq;
    r.op_id = 1;
    r.stream_slot = 0;
    r.num_tensors = 3;
    r.num_scalars = 2;
    auto& x = r.tensors[0];
    x.buffer_id = kBuffer;
    x.byte_offset = 256;
    x.dtype = static_cast<uint8_t>(ring::RingDType::kBFloat16);
    x.ndim = 2;
    x.sizes[0] = 8;
    x.sizes[1] = 16;
    x.strides[0] = 16;
    x.strides[1] = 1;
    r.tensors[2] = x;
    r.tensors[2].byte_offset = 1024;
    r.scalars[0] = 1e-6;
    r.scalars[1] = 0.0;
    return r;
  }
  absl::StatusOr<ValidatedOp> Validate(const ring::OpRecord& r, uint64_t seq = 5) {
    return ValidateRecord(r, seq, limits_, registry_);
  }
  FakeIpcOpener opener_;
  BufferRegistry registry_{&opener_, 0, 16};
  RecordLimits limits_{4, 2, 0};
};

TEST_F(RecordValidationTest, GoodRecordResolvesPointersInsideTheMapping) {
  auto op = Validate(Good());
  ASSERT_TRUE(op.ok()) << op.status();
  ASSERT_EQ(op->tensors.size(), 3u);
  auto base = static_cast<char*>(registry_.Find(kBuffer)->mapping->base());
  EXPECT_EQ(op->tensors[0].data, base + 256);
  EXPECT_EQ(op->tensors[1].data, nullptr) << "buffer id 0 is an absent optional tensor";
  EXPECT_EQ(op->tensors[2].data, base + 1024);
  EXPECT_EQ(op->tensors[0].dtype, kernels::DType::kBFloat16);
  EXPECT_EQ(op->scalars, (std::vector<double>{1e-6, 0.0}));
  EXPECT_EQ(op->holds.size(), 2u);
}

TEST_F(RecordValidationTest, EachBadFieldIsRefused) {
  struct Case {
    const char* name;
    void (*mutate)(ring::OpRecord&);
    absl::StatusCode code;
  };
  const Case cases[] = {
      {"op id", [](ring::OpRecord& r) { r.op_id = 4; }, absl::StatusCode::kInvalidArgument},
      {"stream slot", [](ring::OpRecord& r) { r.stream_slot = 2; }, absl::StatusCode::kInvalidArgument},
      {"tensor count", [](ring::OpRecord& r) { r.num_tensors = ring::kMaxTensors + 1; }, absl::StatusCode::kInvalidArgument},
      {"scalar count", [](ring::OpRecord& r) { r.num_scalars = 9; }, absl::StatusCode::kInvalidArgument},
      {"flags", [](ring::OpRecord& r) { r.flags = 1; }, absl::StatusCode::kInvalidArgument},
      {"reserved", [](ring::OpRecord& r) { r.tensors[0].reserved[3] = 1; }, absl::StatusCode::kInvalidArgument},
      {"unknown buffer", [](ring::OpRecord& r) { r.tensors[0].buffer_id = 43; }, absl::StatusCode::kNotFound},
      {"dtype", [](ring::OpRecord& r) { r.tensors[0].dtype = 9; }, absl::StatusCode::kInvalidArgument},
      {"ndim", [](ring::OpRecord& r) { r.tensors[0].ndim = 5; }, absl::StatusCode::kInvalidArgument},
      {"out of bounds", [](ring::OpRecord& r) { r.tensors[2].byte_offset = kBufferBytes - 2; }, absl::StatusCode::kOutOfRange},
      {"huge stride", [](ring::OpRecord& r) { r.tensors[0].strides[0] = int64_t{1} << 62; }, absl::StatusCode::kInvalidArgument},
      {"negative size", [](ring::OpRecord& r) { r.tensors[0].sizes[1] = -16; }, absl::StatusCode::kInvalidArgument},
      {"nan scalar", [](ring::OpRecord& r) { r.scalars[0] = std::nan(""); }, absl::StatusCode::kInvalidArgument},
      {"inf scalar", [](ring::OpRecord& r) { r.scalars[1] = INFINITY; }, absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    ring::OpRecord r = Good();
    c.mutate(r);
    auto op = Validate(r);
    ASSERT_FALSE(op.ok()) << c.name;
    EXPECT_EQ(op.status().code(), c.code) << c.name << ": " << op.status();
    EXPECT_NE(op.status().message().find("op record 5"), absl::string_view::npos) << op.status();
  }
}

TEST_F(RecordValidationTest, OutOfOrderSequenceIsRefused) {
  EXPECT_FALSE(Validate(Good(6), 5).ok());
  EXPECT_TRUE(Validate(Good(6), 6).ok());
}

TEST_F(RecordValidationTest, UnregisteredBufferBecomesStale) {
  ASSERT_TRUE(registry_.Unregister(kBuffer).ok());
  EXPECT_EQ(Validate(Good()).status().code(), absl::StatusCode::kNotFound);
}

// Fuzz-style: random bytes and random mutations of a good record never crash, and whatever passes
// has every tensor inside its buffer.
TEST_F(RecordValidationTest, RandomRecordsNeverEscapeTheBuffer) {
  std::mt19937_64 rng(20261123);
  const char* base = static_cast<const char*>(registry_.Find(kBuffer)->mapping->base());
  int accepted = 0;
  for (int iter = 0; iter < 200000; ++iter) {
    ring::OpRecord r = Good();
    auto* bytes = reinterpret_cast<unsigned char*>(&r);
    if (iter % 4 == 0) {
      for (size_t i = 0; i < sizeof(r); ++i) bytes[i] = static_cast<unsigned char>(rng());
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        // Bias toward the tensor fields, where the bounds logic lives.
        const size_t at = 32 + rng() % (2 * sizeof(ring::TensorRef) + 16);
        bytes[at % sizeof(r)] = static_cast<unsigned char>(rng() % 4 == 0 ? rng() : bytes[at % sizeof(r)] ^ (1u << (rng() % 8)));
      }
    }
    auto op = ValidateRecord(r, r.sequence, limits_, registry_);
    if (!op.ok()) continue;
    ++accepted;
    for (const auto& t : op->tensors) {
      if (t.data == nullptr) continue;
      int64_t last = 0;
      bool empty = false;
      for (int d = 0; d < t.ndim; ++d) {
        if (t.sizes[d] == 0) empty = true;
        else last += (t.sizes[d] - 1) * t.strides[d];
      }
      if (empty) continue;
      const char* first = static_cast<const char*>(t.data);
      const char* end = first + (last + 1) * kernels::DTypeBytes(t.dtype);
      ASSERT_GE(first, base);
      ASSERT_LE(end, base + kBufferBytes);
    }
  }
  EXPECT_GT(accepted, 100) << "the mutations should leave some records valid, or the test proves nothing";
}

}  // namespace
}  // namespace ligerd::dataplane
