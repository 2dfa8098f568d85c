// Minimal leveled logging to stderr (Debian's abseil 20220623 predates absl/log). One line per
// event, with a timestamp and level, so journald and `kubectl logs` show what the daemon did.
#pragma once

#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace ligerd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
absl::string_view LogLevelName(LogLevel level);

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
bool LogEnabled(LogLevel level);
void WriteLogLine(LogLevel level, absl::string_view message);

// Collects one line and writes it on destruction.
class LogLine {
 public:
  explicit LogLine(LogLevel level) : level_(level) {}
  ~LogLine() { WriteLogLine(level_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// For an event that can recur thousands of times a second (refused connections, accept failing
// with EMFILE): at most one log line per `interval`, carrying how many events it stands for.
class LogRateLimiter {
 public:
  explicit LogRateLimiter(std::chrono::milliseconds interval = std::chrono::seconds(1)) : interval_(interval) {}
  // Counts one event. Returns how many events the caller's line should report (this one and those
  // suppressed since the last line), or 0 when the caller should not log now.
  uint64_t Note();

 private:
  const std::chrono::milliseconds interval_;
  absl::Mutex mu_;
  std::chrono::steady_clock::time_point last_ ABSL_GUARDED_BY(mu_){};
  uint64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool logged_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ligerd

// LIGERD_LOG(kInfo) << "serving on " << path;  — the stream is not evaluated when disabled.
#define LIGERD_LOG(level)                                         \
  if (!::ligerd::LogEnabled(::ligerd::LogLevel::level)) {         \
  } else                                                          \
    ::ligerd::LogLine(::ligerd::LogLevel::level).stream()
