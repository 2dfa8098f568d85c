// Minimal leveled logging to stderr (Debian's abseil 20220623 predates absl/log). One line per
// event, with a timestamp and level, so journald and `kubectl logs` show what the daemon did.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

}  // namespace ligerd

// LIGERD_LOG(kInfo) << "serving on " << path;  — the stream is not evaluated when disabled.
#define LIGERD_LOG(level)                                         \
  if (!::ligerd::LogEnabled(::ligerd::LogLevel::level)) {         \
  } else                                                          \
    ::ligerd::LogLine(::ligerd::LogLevel::level).stream()
