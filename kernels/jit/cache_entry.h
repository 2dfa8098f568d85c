// On-disk JIT cache entries and the file-system primitives the cache needs (atomic write,
// exclusive lock file, safe directory creation). Encoding and decoding are pure functions so
// corruption handling is testable byte by byte.
//
// Entry layout (host byte order; entries never leave the node):
//   0  char[8]  magic "LGRDJIT\n"
//   8  u32      format version (kJitCacheFormatVersion)
//   12 u32      kind (BinaryKind)
//   16 u8[32]   key (SHA-256, see jit_cache.h)
//   48 u64      payload size
//   56 u8[32]   SHA-256 of the payload
//   88 ...      payload
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "kernels/jit/compile_request.h"
#include "kernels/jit/sha256.h"

namespace ligerd::kernels {

inline constexpr size_t kCacheEntryHeaderBytes = 88;

std::string EncodeCacheEntry(const Digest256& key, const CompiledModule& module);

// DATA_LOSS naming what is wrong (magic, version, key, size, checksum) if `bytes` is not a
// complete, intact entry for `key`.
absl::StatusOr<CompiledModule> DecodeCacheEntry(std::string_view bytes, const Digest256& key);

// Creates `dir` and missing parents with mode 0700, then checks that it is a directory owned
// by the effective user and not writable by group or others.
absl::Status EnsurePrivateDirectory(const std::filesystem::path& dir);

// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync
// of the directory. Readers see the old file, no file, or the whole new file.
absl::Status AtomicWriteFile(const std::filesystem::path& path, std::string_view bytes);

// NOT_FOUND if the file does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::filesystem::path& path);

// An exclusive flock(2) on a lock file, held until destruction. Blocks until acquired.
class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::filesystem::path& path);
  FileLock(FileLock&& other) noexcept = default;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing the only descriptor releases the flock
};

}  // namespace ligerd::kernels
