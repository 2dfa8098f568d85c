// The node-wide tuning DB: the launch config the autotuner measured fastest, per shape bucket,
// one file per GPU model under <cache_dir>/tuning/. Read by every executor on the node (ligerd's
// for remote sessions, the Python extension's for local dispatch: both resolve the same cache
// dir), written by the tuner (kernels/tuning/tuner.h) in whichever process tunes.
//
// Bucket key: (op, dtype, rows rounded up to a power of two, exact cols) inside the file of one
// GPU identity (model name + SM count + compute capability). Rows are bucketed because the best
// config moves slowly with the row count (it sets the grid and the waves); cols are exact because
// they decide the row-group shape (threads per row x vectors per thread) and vectorisation.
// A config stored for a bucket may still be rejected by the op for a particular call (e.g. a
// misaligned tensor cannot take the vector kernel): the executor then plans with the default and
// logs it once.
//
// File: <cache_dir>/tuning/<gpu stem>.tunedb, text, e.g.
//   ligerd-tuning-db
//   version 1
//   gpu NVIDIA H100 80GB HBM3
//   sm_count 132
//   cc 90
//   entry rms_norm_fwd bf16 16384 4096 512 2 1 1 0 0.1043 0.0951 16384 35 1718000000
//         (op dtype rows_bucket cols | threads_per_row rows_per_block iters vectorized grid |
//          default_ms tuned_ms tuned_rows candidates unix_time [| cluster shared_bytes])
//         (the last two only when the config has cluster != 1 or shared_bytes != 0)
//   end
//   sha256 <hex of every byte above this line>
// Writers take an exclusive flock on <file>.lock, re-read the file (merging other processes'
// entries), and replace it atomically (temp + fsync + rename). A reader that finds a corrupt file
// (bad checksum, truncated, unparsable, a symbolic link, not a regular file, above
// kMaxTuningDbBytes) or another version or GPU logs it, renames it aside
// (<file>.corrupt-<unix time>) under the lock and starts empty: the next tune rebuilds it. Never
// trusted. A read-only cache directory (another user's, e.g. the node daemon's read by a job of
// its --socket_group, or a read-only mount) gives a read-only DB: lookups work, Store fails
// saying why, and a bad file is logged and ignored, not moved. Readers re-read the file when its inode, size or mtime change (checked with one stat
// at most every kRefreshInterval, so the launch path stays cheap).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/catalogue.h"
#include "kernels/jit/cache_entry.h"

namespace ligerd::kernels {

inline constexpr uint32_t kTuningDbVersion = 1;
// A tuning DB is a few hundred bytes per entry; anything this large is not one.
inline constexpr uint64_t kMaxTuningDbBytes = uint64_t{16} << 20;

struct GpuIdentity {
  std::string name;  // cuDeviceGetName, e.g. "NVIDIA H100 80GB HBM3"
  int sm_count = 0;
  int compute_capability = 0;  // 90
  bool operator==(const GpuIdentity&) const = default;
};
GpuIdentity GpuIdentityOf(const DeviceInfo& device);

// File name stem: the name with every character outside [A-Za-z0-9.-] as '_', then
// ".sm<cc>.<sms>sm", e.g. "NVIDIA_H100_80GB_HBM3.sm90.132sm".
std::string GpuFileStem(const GpuIdentity& gpu);

struct TuningKey {
  std::string op;
  std::string dtype;        // ShortName: "f32", "bf16", "f16", ...
  int64_t rows_bucket = 0;  // rows rounded up to a power of two (0 stays 0; INT64_MAX above 2^62)
  int64_t cols = 0;
  bool operator==(const TuningKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const TuningKey& k) {
    return H::combine(std::move(h), k.op, k.dtype, k.rows_bucket, k.cols);
  }
};
TuningKey MakeTuningKey(std::string_view op, const TuningShape& shape);
std::string KeyString(const TuningKey& key);  // "rms_norm_fwd bf16 16384x4096"
// "f32" | "bf16" | "f16" and their long forms ("float32", "bfloat16", "float16", "fp32", ...).
absl::StatusOr<DType> ParseTuningDType(std::string_view name);
std::string TuningDTypeName(DType dtype);

struct TuningEntry {
  TuningKey key;
  LaunchConfig config;
  double default_ms = 0;  // the default config's median time when tuned
  double tuned_ms = 0;    // this config's median time when tuned
  int64_t tuned_rows = 0; // the exact rows it was tuned at
  int candidates = 0;     // how many configs were timed
  int64_t unix_time = 0;  // when
};

// "tpr=256 rpb=1 iters=4 vec=1 grid=0"
std::string FormatLaunchConfig(const LaunchConfig& c);
bool SameLaunchConfig(const LaunchConfig& a, const LaunchConfig& b);

std::string EncodeTuningDb(const GpuIdentity& gpu, const std::vector<TuningEntry>& entries);
// DATA_LOSS for a damaged file (names what is wrong); FAILED_PRECONDITION for a valid file of
// another version or another GPU. `gpu` may be null to accept any GPU (listing).
absl::StatusOr<std::vector<TuningEntry>> DecodeTuningDb(std::string_view bytes, const GpuIdentity* gpu,
                                                        GpuIdentity* found_gpu = nullptr);

// Where log lines of the tuning code go (default: stderr, "ligerd tuning: ..."). The daemon
// routes them to its log.
void SetTuningLogSink(std::function<void(std::string_view)> sink);
void TuningLog(std::string_view message);

class TuningDb {
 public:
  static constexpr std::chrono::milliseconds kRefreshInterval{250};

  // The process-wide DB for this cache dir and GPU (one per file, shared by executors).
  // Creates <cache_dir>/tuning (0700, ours; 0750 and the cache dir's group in a group-readable one) if needed and
  // the cache dir is writable; `trusted_owner` as for JitCache::Open (read-only use).
  static absl::StatusOr<std::shared_ptr<TuningDb>> Shared(const std::filesystem::path& cache_dir,
                                                          const GpuIdentity& gpu,
                                                          std::optional<uid_t> trusted_owner = std::nullopt);
  static std::filesystem::path DirFor(const std::filesystem::path& cache_dir);

  TuningDb(std::filesystem::path file, GpuIdentity gpu, CacheDirAccess access = {});

  // The stored config for `key`, if any. Cheap: a hash lookup, plus a stat of the file at most
  // every kRefreshInterval (and a re-read when it changed).
  std::optional<TuningEntry> Lookup(const TuningKey& key);

  // A number that changes whenever the entries this process sees change (a re-read of a changed
  // file, a Store). For caches of decisions made from Lookup(): read it first, and a result
  // cached under generation g is current while Generation() still returns g. It stats the file
  // at the same pace as Lookup (at most every kRefreshInterval), so a config another process
  // tunes is seen as soon as a Lookup would see it; between those checks it is a clock read and
  // two atomic loads, no lock.
  uint64_t Generation();

  // Adds or replaces entries, merged with what the file holds now, under the lock; atomic.
  absl::Status Store(const std::vector<TuningEntry>& entries);

  // Every entry, re-read from the file now.
  std::vector<TuningEntry> Entries();

  const std::filesystem::path& file() const { return file_; }
  bool read_only() const { return access_.read_only; }
  const GpuIdentity& gpu() const { return gpu_; }
  uint64_t reloads() const;
  uint64_t rebuilt() const;  // corrupt or mismatched files renamed aside by this process

 private:
  struct FileStamp {
    bool exists = false;
    uint64_t ino = 0, size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };
  FileStamp Stamp() const;
  // Reads the file; a bad one is logged and renamed aside (taking the lock unless `locked`).
  std::vector<TuningEntry> ReadFile(bool locked);
  void MaybeRefresh();

  const std::filesystem::path file_;
  const GpuIdentity gpu_;
  const CacheDirAccess access_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<TuningKey, TuningEntry> entries_ ABSL_GUARDED_BY(mu_);
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point next_check_ ABSL_GUARDED_BY(mu_);
  // next_check_ for the lock-free test in Generation() (steady_clock ticks since its epoch).
  std::atomic<int64_t> next_check_ticks_{0};
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) whenever entries_ is replaced
  uint64_t reloads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rebuilt_ ABSL_GUARDED_BY(mu_) = 0;
};

// Every DB file under <cache_dir>/tuning (for `ligerctl tune --show`): its GPU and entries, or
// why it cannot be read.
struct TuningDbListing {
  std::filesystem::path file;
  GpuIdentity gpu;
  std::vector<TuningEntry> entries;
  absl::Status status;
};
std::vector<TuningDbListing> ListTuningDbs(const std::filesystem::path& cache_dir);

}  // namespace ligerd::kernels
