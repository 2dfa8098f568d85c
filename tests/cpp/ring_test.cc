// The ring end to end on the CPU: daemon-side ShmRing + RingReader, client-side RingWriter.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <thread>

#include "client/ring_writer.h"
#include "server/dataplane/ring_reader.h"
#include "server/dataplane/shm_ring.h"

namespace ligerd {
namespace {
using dataplane::RingReader;
using dataplane::ShmRing;
using namespace std::chrono_literals;

TEST(ShmRing, OwnerOnlyUnguessableAndUnlinkedOnDestruction) {
  std::string name;
  {
    auto ring = ShmRing::Create(1, 16);
    ASSERT_TRUE(ring.ok()) << ring.status();
    name = ring->name();
    EXPECT_GE(name.size(), 32u);
    const int fd = shm_open(name.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    struct stat st {};
    fstat(fd, &st);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(static_cast<size_t>(st.st_size), ring::RingBytes(16));
    close(fd);
    auto other = ShmRing::Create(1, 16);
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->name(), name);
  }
  EXPECT_LT(shm_open(name.c_str(), O_RDONLY, 0), 0) << "the ring must be unlinked with its session";
}

TEST(ShmRing, RejectsBadCapacity) {
  EXPECT_EQ(ShmRing::Create(1, 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShmRing::Create(1, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RingWriter, RefusesMismatchedSessionOrCapacity) {
  auto ring = ShmRing::Create(7, 16);
  ASSERT_TRUE(ring.ok());
  EXPECT_FALSE(RingWriter::Open(ring->name(), 8, 16).ok());
  EXPECT_FALSE(RingWriter::Open(ring->name(), 7, 32).ok());
  EXPECT_FALSE(RingWriter::Open("/ligerd-no-such-ring", 7, 16).ok());
  EXPECT_TRUE(RingWriter::Open(ring->name(), 7, 16).ok());
}

TEST(Ring, ManyRecordsThroughASmallRingArriveInOrderWithBackpressure) {
  auto ring = ShmRing::Create(3, 16);
  ASSERT_TRUE(ring.ok());
  auto writer = RingWriter::Open(ring->name(), 3, 16);
  ASSERT_TRUE(writer.ok()) << writer.status();
  constexpr uint64_t kOps = 100000;
  std::thread producer([&] {
    for (uint64_t i = 0; i < kOps; ++i) {
      ring::OpRecord r{};
      r.op_id = static_cast<uint32_t>(i % 7);
      r.scalars[0] = static_cast<double>(i);
      auto seq = writer->Push(r, 5s);
      ASSERT_TRUE(seq.ok()) << seq.status();
      ASSERT_EQ(*seq, i);
    }
  });
  RingReader reader(&*ring);
  uint64_t received = 0;
  while (received < kOps) {
    auto next = reader.Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) continue;
    ASSERT_EQ((*next)->sequence, received);
    ASSERT_EQ((*next)->op_id, received % 7);
    ASSERT_EQ((*next)->scalars[0], static_cast<double>(received));
    ++received;
  }
  producer.join();
}

TEST(Ring, FullRingWithNoConsumerTimesOutInsteadOfDroppingOrHanging) {
  auto ring = ShmRing::Create(4, 16);
  auto writer = RingWriter::Open(ring->name(), 4, 16);
  ASSERT_TRUE(writer.ok());
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(writer->Push({}, 1s).ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto seq = writer->Push({}, 100ms);
  EXPECT_EQ(seq.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(writer->Push({}, 10s, [] { return false; }).status().code(), absl::StatusCode::kUnavailable)
      << "a dead daemon ends the wait at once";
}

TEST(Ring, CorruptedHeadIsDetected) {
  auto ring = ShmRing::Create(5, 16);
  RingReader reader(&*ring);
  ring->header()->head.store(1000);  // a hostile or broken client
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST(Ring, SessionErrorReachesTheClient) {
  auto ring = ShmRing::Create(6, 16);
  auto writer = RingWriter::Open(ring->name(), 6, 16);
  EXPECT_TRUE(writer->SessionError().ok());
  const std::string msg = "rms_norm_fwd: tensor 'W' has 3 elements, expected 4";
  std::memcpy(ring->status()->message, msg.data(), msg.size());
  ring->status()->message_bytes = msg.size();
  ring->status()->error_code.store(static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(writer->SessionError(), absl::InvalidArgumentError(msg));
}

}  // namespace
}  // namespace ligerd
