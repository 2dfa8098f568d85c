#include "kernels/jit/cache_entry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/jit/jit_cache.h"

namespace ligerd::kernels {
namespace {

constexpr char kMagic[8] = {'L', 'G', 'R', 'D', 'J', 'I', 'T', '\n'};

absl::Status ErrnoError(std::string_view what, const std::filesystem::path& path, int err) {
  std::string msg = absl::StrCat(std::string(what), " ", path.string(), ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

template <typename T>
void Put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
template <typename T>
T Get(std::string_view bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(v));
  return v;
}

absl::Mutex g_log_mu(absl::kConstInit);
std::function<void(std::string_view)>* g_log_sink ABSL_GUARDED_BY(g_log_mu) = nullptr;

const char* FileTypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

int RetryEintr(int (*fn)(int), int fd) {
  int r;
  do r = fn(fd); while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

std::string EncodeCacheEntry(const Digest256& key, const CompiledModule& module) {
  std::string out;
  out.reserve(kCacheEntryHeaderBytes + module.image.size());
  out.append(kMagic, sizeof(kMagic));
  Put(out, kJitCacheFormatVersion);
  Put(out, static_cast<uint32_t>(module.kind));
  out.append(reinterpret_cast<const char*>(key.data()), key.size());
  Put(out, static_cast<uint64_t>(module.image.size()));
  Digest256 sum = Sha256Of(module.image);
  out.append(reinterpret_cast<const char*>(sum.data()), sum.size());
  out.append(module.image);
  return out;
}

absl::StatusOr<CompiledModule> DecodeCacheEntry(std::string_view bytes, const Digest256& key) {
  if (bytes.size() < kCacheEntryHeaderBytes) {
    return absl::DataLossError(absl::StrCat("entry truncated: ", bytes.size(),
                                            " bytes, header alone is ", kCacheEntryHeaderBytes));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return absl::DataLossError("entry has a bad magic number");
  const auto version = Get<uint32_t>(bytes, 8);
  if (version != kJitCacheFormatVersion)
    return absl::DataLossError(absl::StrCat("entry format version ", version, ", expected ",
                                            kJitCacheFormatVersion));
  const auto kind = Get<uint32_t>(bytes, 12);
  if (kind != static_cast<uint32_t>(BinaryKind::kCubin) &&
      kind != static_cast<uint32_t>(BinaryKind::kPtx))
    return absl::DataLossError(absl::StrCat("entry has unknown binary kind ", kind));
  if (std::memcmp(bytes.data() + 16, key.data(), key.size()) != 0)
    return absl::DataLossError("entry key does not match its file name");
  const auto size = Get<uint64_t>(bytes, 48);
  if (size != bytes.size() - kCacheEntryHeaderBytes)
    return absl::DataLossError(absl::StrCat("entry payload is ",
                                            bytes.size() - kCacheEntryHeaderBytes,
                                            " bytes, header says ", size));
  std::string_view payload = bytes.substr(kCacheEntryHeaderBytes);
  Digest256 sum = Sha256Of(payload);
  if (std::memcmp(bytes.data() + 56, sum.data(), sum.size()) != 0)
    return absl::DataLossError("entry payload checksum mismatch");
  CompiledModule m;
  m.kind = static_cast<BinaryKind>(kind);
  m.image = std::string(payload);
  return m;
}

void SetCacheLogSink(std::function<void(std::string_view)> sink) {
  absl::MutexLock lock(&g_log_mu);
  delete g_log_sink;
  g_log_sink = sink ? new std::function<void(std::string_view)>(std::move(sink)) : nullptr;
}

void CacheLog(std::string_view message) {
  absl::MutexLock lock(&g_log_mu);
  if (g_log_sink != nullptr) {
    (*g_log_sink)(message);
    return;
  }
  std::fprintf(stderr, "ligerd cache: %.*s\n", static_cast<int>(message.size()), message.data());
}

absl::Status EnsurePrivateDirectory(const std::filesystem::path& dir, mode_t mode, std::optional<gid_t> group) {
  if (dir.empty()) return absl::InvalidArgumentError("cache directory path is empty");
  std::filesystem::path abs = std::filesystem::absolute(dir).lexically_normal();
  // mkdir each missing level with `mode` (what create_directories would make 0777 & ~umask).
  std::filesystem::path partial;
  for (const auto& part : abs) {
    partial /= part;
    if (partial == partial.root_path()) continue;
    if (::mkdir(partial.c_str(), 0700) != 0) {
      if (errno != EEXIST) return ErrnoError("cannot create cache directory", partial, errno);
    } else if (partial == abs) {  // ours, just made: its group, then its mode (mkdir applied the umask)
      if (group && ::chown(partial.c_str(), static_cast<uid_t>(-1), *group) != 0)
        return ErrnoError("cannot set the group of", partial, errno);
      if (mode != 0700 && ::chmod(partial.c_str(), mode) != 0) return ErrnoError("cannot chmod", partial, errno);
    }
  }
  struct stat st;
  if (::stat(abs.c_str(), &st) != 0) return ErrnoError("cannot stat", abs, errno);
  if (!S_ISDIR(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(abs.string(), " is not a directory"));
  if (st.st_uid != ::geteuid())
    return absl::FailedPreconditionError(absl::StrCat(
        "cache directory ", abs.string(), " is owned by uid ", st.st_uid,
        ", not by this process (uid ", ::geteuid(), "); refusing to load code from it"));
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "cache directory ", abs.string(),
        " is writable by group or others; refusing to load code from it (chmod 700 it)"));
  return absl::OkStatus();
}

absl::StatusOr<CacheDirAccess> OpenCacheDirectory(const std::filesystem::path& dir,
                                                  std::optional<uid_t> trusted_owner) {
  if (dir.empty()) return absl::InvalidArgumentError("cache directory path is empty");
  const std::filesystem::path abs = std::filesystem::absolute(dir).lexically_normal();
  struct stat st;
  // stat, not lstat: a cache directory may well be a link (~/.cache -> /scratch/...); what is
  // checked is the directory it names. Entries inside are never followed (ReadWholeFile).
  if (::stat(abs.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoError("cannot stat cache directory", abs, errno);
    if (absl::Status made = EnsurePrivateDirectory(abs); !made.ok()) return made;
    CacheDirAccess made;
    made.owner = ::geteuid();
    return made;
  }
  if (!S_ISDIR(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(abs.string(), " is not a directory"));
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "cache directory ", abs.string(),
        " is writable by group or others; refusing to load code from it (chmod 700 it)"));
  const uid_t me = ::geteuid();
  const bool trusted = st.st_uid == me || st.st_uid == 0 || (trusted_owner && st.st_uid == *trusted_owner);
  if (!trusted)
    return absl::FailedPreconditionError(absl::StrCat(
        "cache directory ", abs.string(), " is owned by uid ", st.st_uid, ", not by this process (uid ", me,
        ")", trusted_owner ? absl::StrCat(", root or the node daemon's uid ", *trusted_owner) : std::string(),
        "; refusing to load code from it"));
  CacheDirAccess access;
  access.owner = st.st_uid;
  if ((st.st_mode & (S_IRGRP | S_IXGRP)) == (S_IRGRP | S_IXGRP)) {
    access.file_mode = 0640;
    access.dir_mode = 0750;
    access.group = st.st_gid;
  }
  if (::faccessat(AT_FDCWD, abs.c_str(), W_OK | X_OK, AT_EACCESS) == 0 && st.st_uid == me) return access;
  const int write_err = errno;
  if (::faccessat(AT_FDCWD, abs.c_str(), R_OK | X_OK, AT_EACCESS) != 0)
    return ErrnoError("cannot read cache directory", abs, errno);
  access.read_only = true;
  access.why_read_only = st.st_uid != me ? absl::StrCat("owned by uid ", st.st_uid)
                                         : absl::StrCat("not writable (", std::strerror(write_err), ")");
  return access;
}

absl::Status AtomicWriteFile(const std::filesystem::path& path, std::string_view bytes, mode_t mode,
                             std::optional<gid_t> group) {
  std::string tmpl = (path.parent_path() / (".tmp-" + path.filename().string() + "-XXXXXX")).string();
  UniqueFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));  // mode 0600
  if (!fd) return ErrnoError("cannot create temp file", tmpl, errno);
  auto fail = [&](std::string_view what, int err) {
    fd.reset();
    ::unlink(tmpl.c_str());
    return ErrnoError(what, tmpl, err);
  };
  if (group && *group != ::getegid() && ::fchown(fd.get(), static_cast<uid_t>(-1), *group) != 0)
    return fail("cannot set the group of", errno);
  if (mode != 0600 && ::fchmod(fd.get(), mode) != 0) return fail("cannot chmod", errno);
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("cannot write", errno);
    done += static_cast<size_t>(n);
  }
  if (RetryEintr(::fsync, fd.get()) != 0) return fail("cannot fsync", errno);
  // close() can report a deferred write error; such a file must not be renamed into place.
  if (fd.Close() != 0) return fail("cannot close", errno);
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    return ErrnoError("cannot rename temp file to", path, err);
  }
  // Make the rename itself durable; failure here loses only durability, not correctness.
  UniqueFd dir(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) RetryEintr(::fsync, dir.get());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::filesystem::path& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP)
      return absl::FailedPreconditionError(absl::StrCat(path.string(), " is a symbolic link; not followed"));
    return ErrnoError("cannot open", path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(path.string(), " is ", FileTypeName(st.st_mode),
                                                      ", not a regular file"));
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return absl::OutOfRangeError(absl::StrCat(path.string(), " is ", st.st_size, " bytes, above the cap of ",
                                              max_bytes));
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("cannot read", path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes)  // it grew while we read
      return absl::OutOfRangeError(absl::StrCat(path.string(), " is above the cap of ", max_bytes, " bytes"));
  }
  return out;
}

absl::StatusOr<FileLock> FileLock::Acquire(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == ELOOP)
      return absl::FailedPreconditionError(absl::StrCat("lock file ", path.string(), " is a symbolic link"));
    return ErrnoError("cannot open lock file", path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat lock file", path, errno);
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat("lock file ", path.string(), " is ",
                                                      FileTypeName(st.st_mode), ", not a regular file"));
  int r;
  do r = ::flock(fd.get(), LOCK_EX); while (r != 0 && errno == EINTR);
  if (r != 0) return ErrnoError("cannot lock", path, errno);
  return FileLock(std::move(fd));
}

}  // namespace ligerd::kernels
