#include "server/dataplane/buffer_registry.h"

#include <gtest/gtest.h>

#include "tests/cpp/fake_ipc.h"

namespace ligerd::dataplane {
namespace {
using testing::FakeIpcOpener;

TEST(BufferRegistry, RegisterFindUnregister) {
  FakeIpcOpener opener;
  BufferRegistry registry(&opener, 0, 8);
  ASSERT_TRUE(registry.Register(7, FakeIpcOpener::Handle(4096), 4096, 0).ok());
  EXPECT_EQ(opener.open_mappings(), 1);
  auto ref = registry.Find(7);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->size_bytes, 4096u);
  ref = absl::StatusOr<BufferRef>();
  ASSERT_TRUE(registry.Unregister(7).ok());
  EXPECT_EQ(opener.open_mappings(), 0);
  EXPECT_EQ(registry.Find(7).status().code(), absl::StatusCode::kNotFound) << "a stale id is an error";
}

TEST(BufferRegistry, UnregisterWhileAnOpHoldsItDefersTheClose) {
  FakeIpcOpener opener;
  BufferRegistry registry(&opener, 0, 8);
  ASSERT_TRUE(registry.Register(1, FakeIpcOpener::Handle(64), 64, 0).ok());
  auto in_flight = registry.Find(1);
  ASSERT_TRUE(registry.Unregister(1).ok());
  EXPECT_EQ(opener.open_mappings(), 1) << "the running op still uses the mapping";
  in_flight = absl::NotFoundError("op done");
  EXPECT_EQ(opener.open_mappings(), 0);
}

TEST(BufferRegistry, ANewAllocationAtAFreedOnesAddressEvictsTheStaleMapping) {
  FakeIpcOpener opener;
  BufferRegistry registry(&opener, 0, 8);
  ASSERT_TRUE(registry.Register(1, FakeIpcOpener::Handle(4096), 4096, 0, 0x10000).ok());
  ASSERT_TRUE(registry.Register(2, FakeIpcOpener::Handle(4096), 4096, 0, 0x20000).ok());
  // The client freed buffer 1 and its allocator reused part of that range for buffer 3.
  ASSERT_TRUE(registry.Register(3, FakeIpcOpener::Handle(1024), 1024, 0, 0x10400).ok());
  EXPECT_EQ(registry.Find(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry.Find(2).ok()) << "a buffer that does not overlap is kept";
  EXPECT_TRUE(registry.Find(3).ok());
  EXPECT_EQ(opener.open_mappings(), 2);
}

TEST(BufferRegistry, RejectsBadRegistrations) {
  FakeIpcOpener opener;
  BufferRegistry registry(&opener, 1, 2);
  EXPECT_EQ(registry.Register(0, FakeIpcOpener::Handle(64), 64, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(1, "short", 64, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(1, FakeIpcOpener::Handle(64), 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(1, FakeIpcOpener::Handle(64), 64, 0).code(), absl::StatusCode::kInvalidArgument);
  auto lie = registry.Register(1, FakeIpcOpener::Handle(64), 65, 1);
  EXPECT_EQ(lie.code(), absl::StatusCode::kInvalidArgument) << "claimed size larger than the allocation";
  EXPECT_EQ(opener.open_mappings(), 0) << "a refused registration must not leak its mapping";
  ASSERT_TRUE(registry.Register(1, FakeIpcOpener::Handle(64), 64, 1).ok());
  EXPECT_EQ(registry.Register(1, FakeIpcOpener::Handle(64), 64, 1).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.Register(2, FakeIpcOpener::Handle(64), 32, 1).ok());
  EXPECT_EQ(registry.Register(3, FakeIpcOpener::Handle(64), 64, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(registry.Unregister(99).code(), absl::StatusCode::kNotFound);
  registry.Clear();
  EXPECT_EQ(opener.open_mappings(), 0);
}

}  // namespace
}  // namespace ligerd::dataplane
