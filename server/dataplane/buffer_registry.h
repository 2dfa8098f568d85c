// A session's registered buffers: client allocations opened once through CUDA IPC and cached,
// keyed by the client's CU_POINTER_ATTRIBUTE_BUFFER_ID (so a freed-and-reused address arrives as
// a new id, never as a stale mapping). Ops hold a reference to each mapping they use, so a buffer
// unregistered mid-op is closed only when its last op finishes (Triton's deferred unregister,
// done with ownership instead of a flag).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ligerd::dataplane {

// An open mapping of another process's allocation; closes it on destruction (RAII).
class IpcMapping {
 public:
  virtual ~IpcMapping() = default;
  virtual void* base() const = 0;
  virtual uint64_t size_bytes() const = 0;  // as measured after opening, not as claimed
};

// Opens IPC handles. The CUDA implementation lives with the executor; tests use a fake.
class IpcOpener {
 public:
  virtual ~IpcOpener() = default;
  virtual absl::StatusOr<std::unique_ptr<IpcMapping>> Open(const std::string& handle, int device) = 0;
};

struct BufferRef {
  std::shared_ptr<const IpcMapping> mapping;  // keeps the mapping open while held
  uint64_t size_bytes = 0;                     // min(claimed, measured)
  uint64_t client_base = 0;                    // the allocation's address in the client (0: unknown)
};

class BufferRegistry {
 public:
  // `max_buffers` bounds what one session can make the daemon map (each mapping costs the daemon
  // address space and a driver object).
  BufferRegistry(IpcOpener* opener, int device, size_t max_buffers)
      : opener_(opener), device_(device), max_buffers_(max_buffers) {}

  // INVALID_ARGUMENT: id 0, a handle that is not 64 bytes, size 0, another device, or a claimed
  // size larger than the allocation; ALREADY_EXISTS: id registered; RESOURCE_EXHAUSTED: too many.
  // Buffers whose client range [client_base, +size) overlaps the new one were freed by the client:
  // they are dropped first (their mappings close once no running op holds them).
  absl::Status Register(uint64_t buffer_id, const std::string& ipc_handle, uint64_t size_bytes, int device,
                        uint64_t client_base = 0);
  // NOT_FOUND for an unknown id. In-flight ops keep their mapping until they finish.
  absl::Status Unregister(uint64_t buffer_id);
  // NOT_FOUND naming the id when unknown or unregistered (a stale id).
  absl::StatusOr<BufferRef> Find(uint64_t buffer_id) const;

  size_t size() const;
  // Bytes of the mappings registered now (what the daemon has mapped for this session).
  uint64_t mapped_bytes() const;
  // Drops every mapping this registry holds (session teardown).
  void Clear();

 private:
  IpcOpener* opener_;
  int device_;
  size_t max_buffers_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, BufferRef> buffers_ ABSL_GUARDED_BY(mu_);
};

inline constexpr size_t kIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t) / CUipcMemHandle

}  // namespace ligerd::dataplane
