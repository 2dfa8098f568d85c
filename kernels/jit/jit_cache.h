// The JIT cache: compiled kernel modules in memory and on disk, one compile per key per node.
//
// Key: SHA-256 over the length-prefixed parts of a CompileRequest (op, variant, every source and
// header text and name, options, arch) plus the compiler's version tag and the entry format
// version. The file name carries the human-readable parts: <op>.<variant>.<arch>.<key:32hex>.<kind>.
//
// Layers, fastest first:
//   1. memory: one slot per key in this process; a per-slot mutex makes concurrent callers of
//      the same key wait for the one compile (other keys proceed in parallel).
//   2. disk: an entry = header (magic, format version, kind, full key, payload size, SHA-256 of
//      the payload) + payload. Writers create a temp file in the same directory, fsync, rename
//      (atomic), fsync the directory. A reader that finds a bad magic/version/key/size/checksum,
//      or anything but a regular file within the size cap (a symbolic link, a FIFO, a device: never
//      followed or read), counts a corrupt entry, logs it, deletes it and recompiles.
//   3. compile: under an exclusive flock on locks/<key>.lock, after re-checking the disk, so
//      several processes asking at once compile once.
// The directory is created 0700 and must not be group/other-writable: anyone who can write it
// could plant machine code that we then run. It is used read-write when it is ours and writable,
// read-only when it is ours but not writable (a read-only mount: a complete, precompiled cache)
// or belongs to root or a trusted owner (a job reading the node daemon's cache): a read-only
// cache serves what it holds and compiles misses into this process's memory (logged once).
// A group-readable directory (the node daemon's with --socket_group) gets group-readable entries.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/jit/compile_request.h"
#include "kernels/jit/sha256.h"

namespace ligerd::kernels {

// Bumped when the entry layout or key derivation changes; old entries then simply miss.
inline constexpr uint32_t kJitCacheFormatVersion = 1;

struct JitCacheStats {
  uint64_t memory_hits = 0;       // served from this process's memory
  uint64_t disk_hits = 0;         // loaded from a valid on-disk entry
  uint64_t misses = 0;            // neither: a compile was needed
  uint64_t compiles = 0;          // successful compiles by this process
  uint64_t compile_failures = 0;  // failed compiles (error returned to the caller)
  uint64_t corrupt_entries = 0;   // bad entries found, deleted and recompiled
  uint64_t write_failures = 0;    // compiled but could not be stored (served anyway; logged)
  uint64_t memory_only = 0;       // compiled into memory because the directory is read-only
  double compile_seconds = 0;     // wall time spent compiling
};

Digest256 JitCacheKey(const CompileRequest& request, std::string_view compiler_version);

class JitCache {
 public:
  // Opens (creating it 0700 if needed) a cache directory that compiles with `compiler`;
  // `trusted_owner` is another uid whose directory may be read (OpenCacheDirectory).
  static absl::StatusOr<std::shared_ptr<JitCache>> Open(const std::filesystem::path& dir,
                                                        std::shared_ptr<const Compiler> compiler,
                                                        std::optional<uid_t> trusted_owner = std::nullopt);
  // The process-wide NVRTC-backed cache for `dir` (one instance per directory, so every
  // executor and precompile in a process shares the in-memory layer and its once-per-key).
  static absl::StatusOr<std::shared_ptr<JitCache>> Shared(const std::filesystem::path& dir,
                                                          std::optional<uid_t> trusted_owner = std::nullopt);

  // The compiled module for `request`: from memory, disk, or a fresh compile. Errors are the
  // compiler's (with its log) or file-system errors that prevented even a compile.
  absl::StatusOr<std::shared_ptr<const CompiledModule>> Get(const CompileRequest& request);

  Digest256 KeyFor(const CompileRequest& request) const;
  std::filesystem::path EntryPath(const CompileRequest& request, const Digest256& key) const;
  const std::filesystem::path& dir() const { return dir_; }
  bool read_only() const { return access_.read_only; }
  JitCacheStats stats() const;

  // Forgets the in-memory layer (tests use it to exercise the disk path).
  void DropMemoryLayer();

 private:
  JitCache(std::filesystem::path dir, std::shared_ptr<const Compiler> compiler, CacheDirAccess access);

  struct Slot {
    absl::Mutex mu;
    std::shared_ptr<const CompiledModule> module ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<Slot> SlotFor(const std::string& key_hex);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> LoadOrCompile(
      const CompileRequest& request, const Digest256& key);

  absl::StatusOr<std::shared_ptr<const CompiledModule>> Compile(const CompileRequest& request);

  const std::filesystem::path dir_;
  const std::shared_ptr<const Compiler> compiler_;
  const CacheDirAccess access_;
  std::atomic<bool> read_only_logged_{false};
  const std::string compiler_version_;

  absl::Mutex slots_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(slots_mu_);

  std::atomic<uint64_t> memory_hits_{0}, disk_hits_{0}, misses_{0}, compiles_{0},
      compile_failures_{0}, corrupt_entries_{0}, write_failures_{0}, memory_only_{0}, compile_micros_{0};
};

}  // namespace ligerd::kernels
