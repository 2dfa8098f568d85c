#include "kernels/jit/jit_cache.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/jit/nvrtc_compiler.h"
#include "kernels/status_macros.h"

namespace ligerd::kernels {
namespace {

// Each part is length-prefixed so that ("ab","c") and ("a","bc") hash differently.
void HashPart(Sha256& h, std::string_view s) {
  const uint64_t n = s.size();
  h.Update(&n, sizeof(n));
  h.Update(s);
}

// File names keep only characters that are safe everywhere; the key makes them unique.
std::string Sanitize(std::string_view s) {
  std::string out;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? "_" : out;
}

}  // namespace

Digest256 JitCacheKey(const CompileRequest& r, std::string_view compiler_version) {
  Sha256 h;
  HashPart(h, "ligerd-jit-key");
  HashPart(h, absl::StrCat(kJitCacheFormatVersion));
  HashPart(h, compiler_version);
  HashPart(h, r.op);
  HashPart(h, r.variant);
  HashPart(h, r.arch);
  HashPart(h, r.main.name);
  HashPart(h, r.main.text);
  HashPart(h, absl::StrCat(r.headers.size()));
  for (const SourceFile& f : r.headers) {
    HashPart(h, f.name);
    HashPart(h, f.text);
  }
  HashPart(h, absl::StrCat(r.options.size()));
  for (const std::string& o : r.options) HashPart(h, o);
  return h.Finish();
}

JitCache::JitCache(std::filesystem::path dir, std::shared_ptr<const Compiler> compiler, CacheDirAccess access)
    : dir_(std::move(dir)),
      compiler_(std::move(compiler)),
      access_(std::move(access)),
      compiler_version_(compiler_->VersionTag()) {}

absl::StatusOr<std::shared_ptr<JitCache>> JitCache::Open(const std::filesystem::path& dir,
                                                         std::shared_ptr<const Compiler> compiler,
                                                         std::optional<uid_t> trusted_owner) {
  if (compiler == nullptr) return absl::InvalidArgumentError("JitCache needs a compiler");
  LIGERD_ASSIGN_OR_RETURN(CacheDirAccess access, OpenCacheDirectory(dir, trusted_owner));
  if (!access.read_only) LIGERD_RETURN_IF_ERROR(EnsurePrivateDirectory(dir / "locks"));
  std::filesystem::path abs = std::filesystem::absolute(dir).lexically_normal();
  if (access.read_only)
    CacheLog(absl::StrCat("JIT cache ", abs.string(), " is read-only here (", access.why_read_only,
                          "): its entries are used; kernels missing from it compile into this process's memory"));
  return std::shared_ptr<JitCache>(new JitCache(abs, std::move(compiler), std::move(access)));
}

absl::StatusOr<std::shared_ptr<JitCache>> JitCache::Shared(const std::filesystem::path& dir,
                                                           std::optional<uid_t> trusted_owner) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* caches = new absl::flat_hash_map<std::string, std::shared_ptr<JitCache>>();
  std::error_code ec;
  std::string abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad cache dir ", dir.string()));
  absl::MutexLock lock(&mu);
  auto it = caches->find(abs);
  if (it != caches->end()) return it->second;
  LIGERD_ASSIGN_OR_RETURN(std::shared_ptr<JitCache> cache, Open(abs, NvrtcCompiler(), trusted_owner));
  caches->emplace(abs, cache);
  return cache;
}

Digest256 JitCache::KeyFor(const CompileRequest& request) const {
  return JitCacheKey(request, compiler_version_);
}

std::filesystem::path JitCache::EntryPath(const CompileRequest& r, const Digest256& key) const {
  const bool ptx = r.arch.rfind("compute_", 0) == 0;
  // 128 bits of the key in the name is plenty for uniqueness; the header holds all 256.
  return dir_ / absl::StrCat(Sanitize(r.op), ".", Sanitize(r.variant), ".", Sanitize(r.arch), ".",
                             HexOf(key.data(), 16), ptx ? ".ptx" : ".cubin");
}

std::shared_ptr<JitCache::Slot> JitCache::SlotFor(const std::string& key_hex) {
  absl::MutexLock lock(&slots_mu_);
  std::shared_ptr<Slot>& slot = slots_[key_hex];
  if (slot == nullptr) slot = std::make_shared<Slot>();
  return slot;
}

absl::StatusOr<std::shared_ptr<const CompiledModule>> JitCache::Get(const CompileRequest& request) {
  const Digest256 key = KeyFor(request);
  std::shared_ptr<Slot> slot = SlotFor(HexOf(key.data(), key.size()));
  // Holding the slot's mutex across the disk read and compile is the in-process half of "one
  // compile per key": a second thread asking for the same key waits here, then hits memory.
  absl::MutexLock lock(&slot->mu);
  if (slot->module != nullptr) {
    memory_hits_.fetch_add(1, std::memory_order_relaxed);
    return slot->module;
  }
  LIGERD_ASSIGN_OR_RETURN(slot->module, LoadOrCompile(request, key));
  return slot->module;
}

absl::StatusOr<std::shared_ptr<const CompiledModule>> JitCache::LoadOrCompile(
    const CompileRequest& request, const Digest256& key) {
  const std::filesystem::path path = EntryPath(request, key);
  // Fast path without the file lock: entries appear by atomic rename, so a valid read is final.
  absl::StatusOr<std::string> bytes = ReadWholeFile(path);
  absl::Status bad;  // why an existing entry cannot be used
  if (bytes.ok()) {
    absl::StatusOr<CompiledModule> m = DecodeCacheEntry(*bytes, key);
    if (m.ok()) {
      disk_hits_.fetch_add(1, std::memory_order_relaxed);
      return std::make_shared<const CompiledModule>(*std::move(m));
    }
    bad = m.status();
  } else if (!absl::IsNotFound(bytes.status())) {
    bad = bytes.status();
  }

  if (access_.read_only) {
    // Nothing here may be changed: serve a compile from memory.
    if (!bad.ok()) {
      corrupt_entries_.fetch_add(1, std::memory_order_relaxed);
      CacheLog(absl::StrCat("JIT cache entry ", path.string(), " is unusable (", bad.message(),
                            "); the cache is read-only here, so it is compiled into memory"));
    } else if (!read_only_logged_.exchange(true)) {
      CacheLog(absl::StrCat("JIT cache ", dir_.string(), " (read-only here) lacks ", request.op, " [",
                            request.variant, "] for ", request.arch,
                            ": compiled into memory (further misses are not logged; precompile the cache "
                            "with ligerd --precompile_arch to avoid them)"));
    }
    misses_.fetch_add(1, std::memory_order_relaxed);
    memory_only_.fetch_add(1, std::memory_order_relaxed);
    return Compile(request);
  }

  // The cross-process half of "one compile per key": whoever holds the lock compiles; the
  // others wake up to a valid entry.
  LIGERD_ASSIGN_OR_RETURN(FileLock file_lock,
                          FileLock::Acquire(dir_ / "locks" / (HexOf(key.data(), 16) + ".lock")));
  bytes = ReadWholeFile(path);
  bad = absl::OkStatus();
  if (bytes.ok()) {
    absl::StatusOr<CompiledModule> m = DecodeCacheEntry(*bytes, key);
    if (m.ok()) {
      disk_hits_.fetch_add(1, std::memory_order_relaxed);
      return std::make_shared<const CompiledModule>(*std::move(m));
    }
    bad = m.status();
  } else if (!absl::IsNotFound(bytes.status())) {
    bad = bytes.status();
  }
  if (!bad.ok()) {
    // Corrupt, truncated, a link, a FIFO, a device, oversized: never trusted. unlink removes a
    // link itself (not what it points to); a directory in the way stays and the store fails.
    corrupt_entries_.fetch_add(1, std::memory_order_relaxed);
    const bool removed = ::unlink(path.c_str()) == 0;
    CacheLog(absl::StrCat("JIT cache entry ", path.string(), " is unusable (", bad.message(), "); ",
                          removed ? "removed; " : "could not remove it; ", "recompiling"));
  }

  misses_.fetch_add(1, std::memory_order_relaxed);
  LIGERD_ASSIGN_OR_RETURN(std::shared_ptr<const CompiledModule> compiled, Compile(request));
  // A full disk must not stop the op: serve the module, count and log the failed store.
  if (absl::Status stored = AtomicWriteFile(path, EncodeCacheEntry(key, *compiled), access_.file_mode,
                                                access_.group);
      !stored.ok()) {
    write_failures_.fetch_add(1, std::memory_order_relaxed);
    CacheLog(absl::StrCat("cannot store JIT cache entry ", path.string(), ": ", stored.message(),
                          " (served from memory)"));
  }
  return compiled;
}

absl::StatusOr<std::shared_ptr<const CompiledModule>> JitCache::Compile(const CompileRequest& request) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CompiledModule> compiled = compiler_->Compile(request);
  compile_micros_.fetch_add(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count(),
                            std::memory_order_relaxed);
  if (!compiled.ok()) {
    compile_failures_.fetch_add(1, std::memory_order_relaxed);
    return compiled.status();
  }
  compiles_.fetch_add(1, std::memory_order_relaxed);
  return std::make_shared<const CompiledModule>(*std::move(compiled));
}

JitCacheStats JitCache::stats() const {
  JitCacheStats s;
  s.memory_hits = memory_hits_.load(std::memory_order_relaxed);
  s.disk_hits = disk_hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.compiles = compiles_.load(std::memory_order_relaxed);
  s.compile_failures = compile_failures_.load(std::memory_order_relaxed);
  s.corrupt_entries = corrupt_entries_.load(std::memory_order_relaxed);
  s.write_failures = write_failures_.load(std::memory_order_relaxed);
  s.memory_only = memory_only_.load(std::memory_order_relaxed);
  s.compile_seconds = compile_micros_.load(std::memory_order_relaxed) * 1e-6;
  return s;
}

void JitCache::DropMemoryLayer() {
  absl::MutexLock lock(&slots_mu_);
  slots_.clear();
}

}  // namespace ligerd::kernels
