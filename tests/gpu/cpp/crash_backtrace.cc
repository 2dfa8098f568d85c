// Linked into the C++ GPU tests: on SIGSEGV/SIGBUS/SIGABRT, print a native backtrace to stderr
// before dying, so a crash on the GPU machine (which has no debugger) says where it happened.
#include <execinfo.h>
#include <initializer_list>
#include <signal.h>
#include <unistd.h>

namespace {
void PrintBacktrace(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  const char header[] = "\n*** fatal signal; native backtrace:\n";
  [[maybe_unused]] ssize_t w = write(STDERR_FILENO, header, sizeof(header) - 1);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  signal(sig, SIG_DFL);
  raise(sig);
}
const bool installed = [] {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE}) signal(sig, PrintBacktrace);
  return true;
}();
}  // namespace
