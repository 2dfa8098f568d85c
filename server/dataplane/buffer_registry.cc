#include "server/dataplane/buffer_registry.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

#include "absl/strings/str_cat.h"

namespace ligerd::dataplane {

absl::Status BufferRegistry::Register(uint64_t buffer_id, const std::string& ipc_handle,
                                      uint64_t size_bytes, int device, uint64_t client_base) {
  if (buffer_id == 0) return absl::InvalidArgumentError("RegisterBuffer: buffer_id 0 is reserved for 'no tensor'");
  if (ipc_handle.size() != kIpcHandleBytes) {
    return absl::InvalidArgumentError(absl::StrCat("RegisterBuffer: ipc_handle is ", ipc_handle.size(),
                                                   " bytes, expected ", kIpcHandleBytes));
  }
  if (size_bytes == 0) return absl::InvalidArgumentError("RegisterBuffer: size_bytes is 0");
  if (device != device_) {
    return absl::InvalidArgumentError(absl::StrCat("RegisterBuffer: buffer on device ", device,
                                                   ", but this session serves device ", device_));
  }
  {
    absl::MutexLock lock(&mu_);
    if (buffers_.contains(buffer_id)) {
      return absl::AlreadyExistsError(absl::StrCat("RegisterBuffer: buffer ", buffer_id, " is already registered"));
    }
    if (client_base != 0) {
      // An address range is reused only after its allocation was freed, so overlapping entries
      // are stale; CUDA refuses to map the new allocation while the old mapping is open.
      absl::erase_if(buffers_, [&](const auto& entry) {
        const BufferRef& old = entry.second;
        return old.client_base != 0 && old.client_base < client_base + size_bytes &&
               client_base < old.client_base + old.size_bytes;
      });
    }
    if (buffers_.size() >= max_buffers_) {
      return absl::ResourceExhaustedError(absl::StrCat("RegisterBuffer: this session already has ", max_buffers_,
                                                       " buffers registered; unregister some first"));
    }
  }
  // Open outside the lock: it can take milliseconds, and lookups for running ops must not wait.
  absl::StatusOr<std::unique_ptr<IpcMapping>> mapping = opener_->Open(ipc_handle, device);
  if (!mapping.ok()) {
    return absl::Status(mapping.status().code(),
                        absl::StrCat("RegisterBuffer: cannot open buffer ", buffer_id, ": ", mapping.status().message()));
  }
  if (size_bytes > (*mapping)->size_bytes()) {
    // The mapping closes here (RAII), unlike Triton's leak on the same path.
    return absl::InvalidArgumentError(absl::StrCat("RegisterBuffer: buffer ", buffer_id, " claims ", size_bytes,
                                                   " bytes but the allocation has ", (*mapping)->size_bytes()));
  }
  BufferRef ref{std::shared_ptr<const IpcMapping>(std::move(*mapping)), size_bytes, client_base};
  absl::MutexLock lock(&mu_);
  if (!buffers_.try_emplace(buffer_id, std::move(ref)).second) {
    return absl::AlreadyExistsError(absl::StrCat("RegisterBuffer: buffer ", buffer_id, " is already registered"));
  }
  return absl::OkStatus();
}

absl::Status BufferRegistry::Unregister(uint64_t buffer_id) {
  absl::MutexLock lock(&mu_);
  if (buffers_.erase(buffer_id) == 0) {
    return absl::NotFoundError(absl::StrCat("UnregisterBuffer: buffer ", buffer_id, " is not registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BufferRef> BufferRegistry::Find(uint64_t buffer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = buffers_.find(buffer_id);
  if (it == buffers_.end()) {
    return absl::NotFoundError(absl::StrCat("buffer ", buffer_id,
                                            " is not registered in this session (freed, or never registered)"));
  }
  return it->second;
}

uint64_t BufferRegistry::mapped_bytes() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [id, ref] : buffers_) total += ref.size_bytes;
  return total;
}

size_t BufferRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return buffers_.size();
}

void BufferRegistry::Clear() {
  absl::MutexLock lock(&mu_);
  buffers_.clear();
}

}  // namespace ligerd::dataplane
