#include "server/logging.h"

#include <utility>

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ligerd {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning" || lower == "warn") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", name, "' (use debug, info, warning or error)"));
}

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void WriteLogLine(LogLevel level, absl::string_view message) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm utc;
  gmtime_r(&tv.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  // One fprintf per line so concurrent lines do not interleave.
  std::fprintf(stderr, "%c %s.%06ldZ ligerd[%d] %.*s\n", kLetters[static_cast<int>(level)], stamp,
               static_cast<long>(tv.tv_usec), static_cast<int>(getpid()),
               static_cast<int>(message.size()), message.data());
}

uint64_t LogRateLimiter::Note() {
  const auto now = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu_);
  ++pending_;
  if (logged_ && now - last_ < interval_) return 0;
  logged_ = true;
  last_ = now;
  return std::exchange(pending_, 0);
}

}  // namespace ligerd
