// See tuning_db.h.
#include "kernels/tuning/tuning_db.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/jit/sha256.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

constexpr absl::string_view kMagicLine = "ligerd-tuning-db";
constexpr absl::string_view kSumPrefix = "sha256 ";
constexpr int kEntryFields = 15;  // "entry" + 14

absl::Mutex g_sink_mu;
std::function<void(std::string_view)>* g_sink ABSL_GUARDED_BY(g_sink_mu) = nullptr;

std::string ChecksumOf(absl::string_view body) {
  const Digest256 d = Sha256Of(std::string_view(body.data(), body.size()));
  return HexOf(d.data(), d.size());
}

template <typename T>
bool ParseInt(absl::string_view s, T* out) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return false;
  *out = static_cast<T>(v);
  return true;
}

}  // namespace

void SetTuningLogSink(std::function<void(std::string_view)> sink) {
  absl::MutexLock lock(&g_sink_mu);
  delete g_sink;
  g_sink = sink ? new std::function<void(std::string_view)>(std::move(sink)) : nullptr;
}

void TuningLog(std::string_view message) {
  absl::MutexLock lock(&g_sink_mu);
  if (g_sink != nullptr) {
    (*g_sink)(message);
    return;
  }
  std::fprintf(stderr, "ligerd tuning: %.*s\n", static_cast<int>(message.size()), message.data());
}

GpuIdentity GpuIdentityOf(const DeviceInfo& device) {
  return {device.name, device.sm_count, device.compute_capability};
}

std::string GpuFileStem(const GpuIdentity& gpu) {
  std::string name = gpu.name.empty() ? std::string("unknown-gpu") : gpu.name;
  for (char& c : name)
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  return absl::StrCat(name, ".sm", gpu.compute_capability, ".", gpu.sm_count, "sm");
}

TuningKey MakeTuningKey(std::string_view op, const TuningShape& shape) {
  return {std::string(op), TuningDTypeName(shape.dtype), shape.rows <= 0 ? 0 : NextPow2Saturating(shape.rows),
          shape.cols};
}

std::string KeyString(const TuningKey& key) {
  return absl::StrCat(key.op, " ", key.dtype, " ", key.rows_bucket, "x", key.cols);
}

std::string TuningDTypeName(DType dtype) { return ShortName(dtype); }

absl::StatusOr<DType> ParseTuningDType(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "f32" || n == "fp32" || n == "float32" || n == "float") return DType::kFloat32;
  if (n == "bf16" || n == "bfloat16") return DType::kBFloat16;
  if (n == "f16" || n == "fp16" || n == "float16" || n == "half") return DType::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", std::string(name), "' (expected bf16, f16 or f32)"));
}

// Cluster and shared memory only when set, so configs of ops that use neither read as before.
bool HasClusterFields(const LaunchConfig& c) { return c.cluster != 1 || c.shared_bytes != 0; }

std::string FormatLaunchConfig(const LaunchConfig& c) {
  std::string s = absl::StrCat("tpr=", c.threads_per_row, " rpb=", c.rows_per_block, " iters=", c.iters,
                               " vec=", c.vectorized ? 1 : 0, " grid=", c.grid);
  if (HasClusterFields(c)) absl::StrAppend(&s, " cluster=", c.cluster, " smem=", c.shared_bytes);
  return s;
}

bool SameLaunchConfig(const LaunchConfig& a, const LaunchConfig& b) {
  return a.threads_per_row == b.threads_per_row && a.rows_per_block == b.rows_per_block &&
         a.iters == b.iters && a.vectorized == b.vectorized && a.grid == b.grid &&
         a.cluster == b.cluster && a.shared_bytes == b.shared_bytes;
}

std::string EncodeTuningDb(const GpuIdentity& gpu, const std::vector<TuningEntry>& entries) {
  std::vector<TuningEntry> sorted = entries;
  std::sort(sorted.begin(), sorted.end(), [](const TuningEntry& a, const TuningEntry& b) {
    return std::tie(a.key.op, a.key.dtype, a.key.cols, a.key.rows_bucket) <
           std::tie(b.key.op, b.key.dtype, b.key.cols, b.key.rows_bucket);
  });
  std::string body = absl::StrCat(kMagicLine, "\nversion ", kTuningDbVersion, "\ngpu ", gpu.name,
                                  "\nsm_count ", gpu.sm_count, "\ncc ", gpu.compute_capability, "\n");
  for (const TuningEntry& e : sorted) {
    const LaunchConfig& c = e.config;
    absl::StrAppend(&body, "entry ", e.key.op, " ", e.key.dtype, " ", e.key.rows_bucket, " ", e.key.cols, " ",
                    c.threads_per_row, " ", c.rows_per_block, " ", c.iters, " ", c.vectorized ? 1 : 0, " ",
                    c.grid, " ", absl::StrFormat("%.6f %.6f", e.default_ms, e.tuned_ms), " ", e.tuned_rows,
                    " ", e.candidates, " ", e.unix_time);
    // Two more fields only for a config with a cluster or shared memory: files without such
    // entries stay readable by builds that predate them.
    if (HasClusterFields(c)) absl::StrAppend(&body, " ", c.cluster, " ", c.shared_bytes);
    absl::StrAppend(&body, "\n");
  }
  absl::StrAppend(&body, "end\n");
  return absl::StrCat(body, kSumPrefix, ChecksumOf(body), "\n");
}

absl::StatusOr<std::vector<TuningEntry>> DecodeTuningDb(std::string_view raw, const GpuIdentity* gpu,
                                                        GpuIdentity* found_gpu) {
  const absl::string_view bytes(raw.data(), raw.size());
  // Checksum first: nothing in a damaged file is looked at.
  const size_t sum_at = bytes.rfind(absl::StrCat("\n", kSumPrefix));
  if (sum_at == absl::string_view::npos) return absl::DataLossError("no checksum line (truncated?)");
  const absl::string_view body = bytes.substr(0, sum_at + 1);
  absl::string_view sum = bytes.substr(sum_at + 1 + kSumPrefix.size());
  if (!absl::ConsumeSuffix(&sum, "\n") || sum != ChecksumOf(body))
    return absl::DataLossError("checksum mismatch (the file was damaged or edited)");
  std::vector<absl::string_view> lines = absl::StrSplit(body, '\n', absl::SkipEmpty());
  if (lines.size() < 6 || lines[0] != kMagicLine) return absl::DataLossError("not a ligerd tuning DB");
  uint32_t version = 0;
  if (!absl::ConsumePrefix(&lines[1], "version ") || !ParseInt(lines[1], &version))
    return absl::DataLossError("no version line");
  if (version != kTuningDbVersion)
    return absl::FailedPreconditionError(
        absl::StrCat("tuning DB version ", version, ", this build reads version ", kTuningDbVersion));
  GpuIdentity g;
  if (!absl::ConsumePrefix(&lines[2], "gpu ")) return absl::DataLossError("no gpu line");
  g.name = std::string(lines[2]);
  if (!absl::ConsumePrefix(&lines[3], "sm_count ") || !ParseInt(lines[3], &g.sm_count) ||
      !absl::ConsumePrefix(&lines[4], "cc ") || !ParseInt(lines[4], &g.compute_capability))
    return absl::DataLossError("bad GPU description");
  if (found_gpu != nullptr) *found_gpu = g;
  if (gpu != nullptr && !(g == *gpu))
    return absl::FailedPreconditionError(absl::StrCat("tuning DB is for '", g.name, "' (", g.sm_count, " SMs, sm_",
                                                      g.compute_capability, "), not this GPU '", gpu->name, "'"));
  if (lines.back() != "end") return absl::DataLossError("no end line");
  std::vector<TuningEntry> out;
  for (size_t i = 5; i + 1 < lines.size(); ++i) {
    std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    TuningEntry e;
    int vec = 0;
    const bool cluster_fields = f.size() == kEntryFields + 2;
    if ((f.size() != kEntryFields && !cluster_fields) || f[0] != "entry" || !ParseInt(f[3], &e.key.rows_bucket) ||
        !ParseInt(f[4], &e.key.cols) || !ParseInt(f[5], &e.config.threads_per_row) ||
        !ParseInt(f[6], &e.config.rows_per_block) || !ParseInt(f[7], &e.config.iters) || !ParseInt(f[8], &vec) ||
        !ParseInt(f[9], &e.config.grid) || !absl::SimpleAtod(f[10], &e.default_ms) ||
        !absl::SimpleAtod(f[11], &e.tuned_ms) || !ParseInt(f[12], &e.tuned_rows) ||
        !ParseInt(f[13], &e.candidates) || !ParseInt(f[14], &e.unix_time) || (vec != 0 && vec != 1) ||
        (cluster_fields && (!ParseInt(f[15], &e.config.cluster) || !ParseInt(f[16], &e.config.shared_bytes))))
      return absl::DataLossError(absl::StrCat("bad entry on line ", i + 1));
    e.key.op = std::string(f[1]);
    e.key.dtype = std::string(f[2]);
    e.config.vectorized = vec == 1;
    out.push_back(std::move(e));
  }
  return out;
}

// ---- TuningDb -----------------------------------------------------------------------------

std::filesystem::path TuningDb::DirFor(const std::filesystem::path& cache_dir) { return cache_dir / "tuning"; }

absl::StatusOr<std::shared_ptr<TuningDb>> TuningDb::Shared(const std::filesystem::path& cache_dir,
                                                           const GpuIdentity& gpu,
                                                           std::optional<uid_t> trusted_owner) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* dbs = new absl::flat_hash_map<std::string, std::weak_ptr<TuningDb>>();
  const std::filesystem::path dir = DirFor(cache_dir);
  const std::filesystem::path file = dir / (GpuFileStem(gpu) + ".tunedb");
  absl::MutexLock lock(&mu);
  auto it = dbs->find(file.string());
  if (it != dbs->end())
    if (std::shared_ptr<TuningDb> db = it->second.lock()) return db;
  absl::StatusOr<CacheDirAccess> parent = OpenCacheDirectory(cache_dir, trusted_owner);
  if (!parent.ok()) return parent.status();
  if (!parent->read_only) {
    if (absl::Status s = EnsurePrivateDirectory(dir, parent->dir_mode, parent->group); !s.ok()) return s;
  }
  CacheDirAccess access = *parent;
  if (!parent->read_only || ::access(dir.c_str(), F_OK) == 0) {
    absl::StatusOr<CacheDirAccess> own = OpenCacheDirectory(dir, trusted_owner);
    if (!own.ok()) return own.status();
    access = *own;
  }
  auto db = std::make_shared<TuningDb>(file, gpu, access);
  (*dbs)[file.string()] = db;
  return db;
}

TuningDb::TuningDb(std::filesystem::path file, GpuIdentity gpu, CacheDirAccess access)
    : file_(std::move(file)), gpu_(std::move(gpu)), access_(std::move(access)) {}

TuningDb::FileStamp TuningDb::Stamp() const {
  struct stat st;
  FileStamp s;
  if (::stat(file_.c_str(), &st) != 0) return s;
  s.exists = true;
  s.ino = st.st_ino;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

std::vector<TuningEntry> TuningDb::ReadFile(bool locked) {
  absl::StatusOr<std::string> bytes = ReadWholeFile(file_, kMaxTuningDbBytes);
  if (absl::IsNotFound(bytes.status())) return {};
  absl::StatusOr<std::vector<TuningEntry>> entries =
      bytes.ok() ? DecodeTuningDb(*bytes, &gpu_) : absl::StatusOr<std::vector<TuningEntry>>(bytes.status());
  if (entries.ok()) return *std::move(entries);
  if (access_.read_only) {  // not ours to move: say so, use nothing from it
    TuningLog(absl::StrCat("tuning DB ", file_.string(), " not used: ", entries.status().message(),
                           " (read-only here, left as it is)"));
    return {};
  }
  // Never trusted: move it aside (keeping it for a post-mortem) so the next store rebuilds it.
  std::optional<FileLock> lock;
  if (!locked) {
    absl::StatusOr<FileLock> l = FileLock::Acquire(file_.string() + ".lock");
    if (l.ok()) lock.emplace(std::move(*l));
  }
  // Under the lock, only if it is still the same bad file (a writer may have replaced it).
  absl::StatusOr<std::string> again = ReadWholeFile(file_, kMaxTuningDbBytes);
  const bool same = bytes.ok() ? (again.ok() && *again == *bytes)
                               : (!again.ok() && again.status().code() == bytes.status().code());
  if (same) {
    const std::string aside = absl::StrCat(file_.string(), ".corrupt-", std::time(nullptr));
    if (std::rename(file_.c_str(), aside.c_str()) == 0) {
      TuningLog(absl::StrCat("tuning DB ", file_.string(), " not used: ", entries.status().message(),
                             "; moved aside to ", aside, ", it will be rebuilt by the next tune"));
      absl::MutexLock m(&mu_);
      ++rebuilt_;
    } else {
      TuningLog(absl::StrCat("tuning DB ", file_.string(), " not used: ", entries.status().message()));
    }
    return {};
  }
  if (again.ok()) {  // replaced meanwhile: read the new one (once; no recursion on a second failure)
    absl::StatusOr<std::vector<TuningEntry>> fresh = DecodeTuningDb(*again, &gpu_);
    if (fresh.ok()) return *std::move(fresh);
  }
  return {};
}

void TuningDb::MaybeRefresh() {
  const auto now = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&mu_);
    if (now < next_check_) return;
    next_check_ = now + kRefreshInterval;
    next_check_ticks_.store(next_check_.time_since_epoch().count(), std::memory_order_relaxed);
  }
  const FileStamp stamp = Stamp();
  {
    absl::MutexLock lock(&mu_);
    if (stamp == stamp_) return;
  }
  std::vector<TuningEntry> entries = ReadFile(/*locked=*/false);
  absl::flat_hash_map<TuningKey, TuningEntry> map;
  for (TuningEntry& e : entries) map[e.key] = std::move(e);
  absl::MutexLock lock(&mu_);
  entries_ = std::move(map);
  stamp_ = stamp;
  ++reloads_;
  generation_.fetch_add(1, std::memory_order_release);
}

uint64_t TuningDb::Generation() {
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  if (now >= next_check_ticks_.load(std::memory_order_relaxed)) MaybeRefresh();
  return generation_.load(std::memory_order_acquire);
}

std::optional<TuningEntry> TuningDb::Lookup(const TuningKey& key) {
  MaybeRefresh();
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

absl::Status TuningDb::Store(const std::vector<TuningEntry>& entries) {
  if (access_.read_only)
    return absl::FailedPreconditionError(absl::StrCat(
        "tuning DB ", file_.string(), " is read-only for this process (", access_.why_read_only,
        "); tune through the daemon that owns it (ligerctl tune)"));
  absl::StatusOr<FileLock> lock = FileLock::Acquire(file_.string() + ".lock");
  if (!lock.ok()) return lock.status();
  absl::flat_hash_map<TuningKey, TuningEntry> merged;
  for (TuningEntry& e : ReadFile(/*locked=*/true)) merged[e.key] = std::move(e);
  for (const TuningEntry& e : entries) merged[e.key] = e;
  std::vector<TuningEntry> all;
  all.reserve(merged.size());
  for (auto& [k, e] : merged) all.push_back(e);
  if (absl::Status s = AtomicWriteFile(file_, EncodeTuningDb(gpu_, all), access_.file_mode, access_.group); !s.ok()) return s;
  const FileStamp stamp = Stamp();
  absl::MutexLock m(&mu_);
  entries_ = std::move(merged);
  stamp_ = stamp;
  generation_.fetch_add(1, std::memory_order_release);
  return absl::OkStatus();
}

std::vector<TuningEntry> TuningDb::Entries() {
  {
    absl::MutexLock lock(&mu_);
    next_check_ = {};
    next_check_ticks_.store(0, std::memory_order_relaxed);
  }
  MaybeRefresh();
  absl::MutexLock lock(&mu_);
  std::vector<TuningEntry> out;
  for (const auto& [k, e] : entries_) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const TuningEntry& a, const TuningEntry& b) {
    return std::tie(a.key.op, a.key.dtype, a.key.cols, a.key.rows_bucket) <
           std::tie(b.key.op, b.key.dtype, b.key.cols, b.key.rows_bucket);
  });
  return out;
}

uint64_t TuningDb::reloads() const {
  absl::MutexLock lock(&mu_);
  return reloads_;
}
uint64_t TuningDb::rebuilt() const {
  absl::MutexLock lock(&mu_);
  return rebuilt_;
}

std::vector<TuningDbListing> ListTuningDbs(const std::filesystem::path& cache_dir) {
  std::vector<TuningDbListing> out;
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator(TuningDb::DirFor(cache_dir), ec)) {
    if (de.path().extension() != ".tunedb") continue;
    TuningDbListing l;
    l.file = de.path();
    absl::StatusOr<std::string> bytes = ReadWholeFile(de.path(), kMaxTuningDbBytes);
    if (!bytes.ok()) {
      l.status = bytes.status();
    } else {
      absl::StatusOr<std::vector<TuningEntry>> e = DecodeTuningDb(*bytes, nullptr, &l.gpu);
      if (e.ok()) l.entries = *std::move(e); else l.status = e.status();
    }
    out.push_back(std::move(l));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.file < b.file; });
  return out;
}

}  // namespace ligerd::kernels
