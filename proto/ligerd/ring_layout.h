// The shared-memory op ring: the data-plane wire format between a trainer (producer) and ligerd
// (consumer). One ring per session, in a shm object only the user can open. Everything here is
// plain, fixed-size and versioned, so a C++ client, the Python extension and the daemon agree
// byte for byte; the static_asserts below and tests/cpp/ring_layout_test.cc pin the layout.
//
// Shared memory written by a client is hostile input (see daemon-anchors.md §0.3): the daemon
// copies a record out of the ring before it reads any field, validates every field against the
// session's registry, and keeps its own copy of the consumer index. No process-shared mutex lives
// here, so no peer can die holding one.
//
// Memory map of a ring of `capacity` records:
//   [RingHeader: 3 cache lines][SessionStatus: 4 cache lines][OpRecord x capacity]
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ligerd::ring {

// Bump kLayoutVersion on any change to the structs below; the daemon refuses rings whose header
// carries another version.
inline constexpr uint32_t kMagic = 0x474E524C;  // "LRNG" little-endian
inline constexpr uint32_t kLayoutVersion = 2;  // 2: 12 tensors per record (cross-entropy needs 9)

inline constexpr size_t kCacheLine = 64;  // x86-64 and Grace both use 64-byte lines
inline constexpr int kMaxTensors = 12;    // cross_entropy_fwd takes 9 (logits, target, weight, ...)
inline constexpr int kMaxDims = 4;        // ops take 1-D to 4-D tensors
inline constexpr int kMaxScalars = 8;     // e.g. CE: ignore_index, smoothing, z-loss scale, softcap
// Capacity is a power of two (index = sequence & (capacity - 1)) within these limits: 32K records
// of 1152 bytes is 36 MiB, far more in flight than a trainer ever queues.
inline constexpr uint32_t kMinCapacity = 16;
inline constexpr uint32_t kMaxCapacity = 1u << 15;

// Same values as ligerd::kernels::DType.
enum class RingDType : uint8_t {
  kInvalid = 0,
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kInt32 = 4,
  kInt64 = 5,
};

// A tensor named by the registered allocation that holds it. Sizes and strides in elements.
struct TensorRef {
  uint64_t buffer_id;    // CU_POINTER_ATTRIBUTE_BUFFER_ID of a registered allocation; 0 = absent
  uint64_t byte_offset;  // of element [0,...,0] from the allocation's base
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
  uint8_t dtype;         // RingDType
  uint8_t ndim;          // 1..kMaxDims; 0 when absent
  uint8_t reserved[6];   // zero
};
static_assert(std::is_standard_layout_v<TensorRef> && std::is_trivially_copyable_v<TensorRef>);
static_assert(sizeof(TensorRef) == 88);
static_assert(offsetof(TensorRef, sizes) == 16 && offsetof(TensorRef, strides) == 48 &&
              offsetof(TensorRef, dtype) == 80);

// One op. The producer fills every field, then publishes it by advancing RingHeader::head.
struct alignas(kCacheLine) OpRecord {
  uint64_t sequence;     // the producer's op number; equals the value its stream flag is set to
  uint32_t op_id;        // index into the daemon's catalogue (Info.ops order)
  uint32_t stream_slot;  // which of the session's flag pages orders this op
  uint32_t num_tensors;  // <= kMaxTensors
  uint32_t num_scalars;  // <= kMaxScalars
  uint32_t flags;        // reserved, zero
  uint32_t reserved0;    // zero
  TensorRef tensors[kMaxTensors];
  double scalars[kMaxScalars];  // integers are carried exactly (|x| < 2^53)
};
static_assert(std::is_standard_layout_v<OpRecord> && std::is_trivially_copyable_v<OpRecord>);
static_assert(offsetof(OpRecord, tensors) == 32);
static_assert(offsetof(OpRecord, scalars) == 32 + kMaxTensors * sizeof(TensorRef));
static_assert(sizeof(OpRecord) == 1152 && sizeof(OpRecord) % kCacheLine == 0);

// Indices live on their own cache lines so producer and consumer do not false-share.
struct RingHeader {
  alignas(kCacheLine) uint32_t magic;  // kMagic
  uint32_t layout_version;             // kLayoutVersion
  uint32_t record_bytes;               // sizeof(OpRecord)
  uint32_t capacity;                   // records; power of two
  uint64_t session_id;                 // the session this ring belongs to
  alignas(kCacheLine) std::atomic<uint64_t> head;  // next sequence the producer will write
  alignas(kCacheLine) std::atomic<uint64_t> tail;  // next sequence the consumer will read
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "ring indices must be lock-free");
static_assert(std::is_standard_layout_v<RingHeader>);
static_assert(sizeof(RingHeader) == 3 * kCacheLine);
static_assert(offsetof(RingHeader, head) == kCacheLine && offsetof(RingHeader, tail) == 2 * kCacheLine);

// Errors are asynchronous, like CUDA's: the daemon records the first failure here (and still
// releases the op's done flag so nothing waits forever); the client raises it at its next check.
struct SessionStatus {
  alignas(kCacheLine) std::atomic<uint32_t> error_code;  // absl::StatusCode of the first failure; 0 = OK
  uint32_t reserved0;
  uint64_t failed_sequence;  // the op that failed
  uint32_t failed_op_id;
  uint32_t message_bytes;    // valid bytes of message (not NUL-terminated)
  char message[232];         // "rms_norm_fwd: tensor 'W' ..." truncated to fit
};
static_assert(std::is_standard_layout_v<SessionStatus>);
static_assert(sizeof(SessionStatus) == 4 * kCacheLine);

inline constexpr size_t kRecordsOffset = sizeof(RingHeader) + sizeof(SessionStatus);

constexpr bool IsValidCapacity(uint32_t capacity) {
  return capacity >= kMinCapacity && capacity <= kMaxCapacity && (capacity & (capacity - 1)) == 0;
}

// Total bytes of the shm object; 0 for an invalid capacity (so no caller maps a bad size).
constexpr size_t RingBytes(uint32_t capacity) {
  return IsValidCapacity(capacity) ? kRecordsOffset + size_t{capacity} * sizeof(OpRecord) : 0;
}
static_assert(RingBytes(kMaxCapacity) < (size_t{64} << 20));

// Stream flags order ring ops against the client's CUDA streams without a CPU wait. The client
// allocates one StreamFlags per stream slot in device memory (at most kMaxStreamSlots), zeroes
// them and hands the allocation to the daemon by CUDA IPC (AttachStreamFlags); a record's
// stream_slot names its pair. For the op with sequence s: the client's stream writes ready = s + 1
// once the op's inputs are ready and then waits for done >= s + 1; the daemon's stream waits for
// ready >= s + 1, runs the op and writes done = s + 1 (also when the op failed).
inline constexpr uint32_t kMaxStreamSlots = 64;
struct StreamFlags {
  uint64_t ready;  // written by the client's stream
  uint64_t done;   // written by the daemon's stream
};
static_assert(std::is_standard_layout_v<StreamFlags>);
inline constexpr uint32_t kStreamFlagBytes = sizeof(StreamFlags);
inline constexpr size_t kReadyFlagOffset = offsetof(StreamFlags, ready);
inline constexpr size_t kDoneFlagOffset = offsetof(StreamFlags, done);
static_assert(kStreamFlagBytes == 16 && kReadyFlagOffset == 0 && kDoneFlagOffset == 8);

// "Release every waiter": a side that gives up (a client whose daemon died, a daemon whose client
// died or whose record was unusable) writes last sequence + kReleaseAhead into the flags the other
// side's stream may wait on. Stream waits compare (int64)(*flag - value) >= 0, so this must be a
// positive distance ahead of any sequence either side can have issued, not UINT64_MAX.
inline constexpr uint64_t kReleaseAhead = uint64_t{1} << 40;

}  // namespace ligerd::ring
