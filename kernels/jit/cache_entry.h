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

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
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

// Creates `dir` and missing parents with mode `mode` (0700 by default; the last level also gets
// group `group` when given), then checks that it is a directory owned by the effective user and
// not writable by group or others.
absl::Status EnsurePrivateDirectory(const std::filesystem::path& dir, mode_t mode = 0700,
                                    std::optional<gid_t> group = std::nullopt);

// How this process may use a cache directory (OpenCacheDirectory).
struct CacheDirAccess {
  bool read_only = false;  // entries are read, never written (misses compile into memory)
  uid_t owner = 0;
  // Modes of what a writer creates in it: 0600/0700, or 0640/0750 and the directory's group when
  // the directory is group-readable (a node daemon sharing its cache with --socket_group: the
  // group reads it). No setgid bit: systemd's RestrictSUIDSGID= forbids making one.
  mode_t file_mode = 0600;
  mode_t dir_mode = 0700;
  std::optional<gid_t> group = std::nullopt;
  std::string why_read_only = "";  // for the log line
};

// Decides how `dir` may be used, without changing anything that exists:
//   - missing: created 0700 (EnsurePrivateDirectory), read-write;
//   - owned by this user and writable by it: read-write;
//   - owned by this user, root or `trusted_owner` (the node daemon's user, for a job sharing
//     the node's cache) and not writable by this process (another owner, a read-only mount,
//     chmod a-w): read-only, as long as we can read it.
// In every case it must be a directory (a symbolic link to one counts as that directory) that
// no one but its owner can write: anyone who could write it could plant machine code that we then run.
absl::StatusOr<CacheDirAccess> OpenCacheDirectory(const std::filesystem::path& dir,
                                                  std::optional<uid_t> trusted_owner = std::nullopt);

// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync
// of the directory. Readers see the old file, no file, or the whole new file. The file gets
// `mode` (0600 by default) and, when given, group `group` (set before it is renamed into place).
absl::Status AtomicWriteFile(const std::filesystem::path& path, std::string_view bytes, mode_t mode = 0600,
                             std::optional<gid_t> group = std::nullopt);

// The default cap of ReadWholeFile: far above any cache entry or tuning DB.
inline constexpr uint64_t kMaxCacheFileBytes = uint64_t{256} << 20;

// Reads a regular file, never following a symbolic link at `path` (O_NOFOLLOW) and never
// blocking on a FIFO (O_NONBLOCK): NOT_FOUND if it does not exist; FAILED_PRECONDITION naming
// what it is when it is a symbolic link or not a regular file (FIFO, device, socket, directory);
// OUT_OF_RANGE when it is larger than `max_bytes`.
absl::StatusOr<std::string> ReadWholeFile(const std::filesystem::path& path,
                                          uint64_t max_bytes = kMaxCacheFileBytes);

// Where the cache's log lines go (default: stderr, "ligerd cache: ..."); the daemon routes them to
// its log. Corrupt or unusable entries and read-only directories are logged, never silent.
void SetCacheLogSink(std::function<void(std::string_view)> sink);
void CacheLog(std::string_view message);

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
