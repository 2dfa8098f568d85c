// libFuzzer target over ring-record validation and planning (tests/fuzz/README.md): each input is
// one ring OpRecord (format: ring_record_input.h), handled as a remote session's runner handles a
// record up to the launch. Built with -fsanitize=fuzzer,address,undefined when the compiler is
// clang (LIGERD_BUILD_FUZZERS); ctest runs it bounded over a copy of tests/fuzz/corpus/ring_record.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/ring_record_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ligerd::fuzz::Session* session = new ligerd::fuzz::Session();  // one session, like a runner's
  ligerd::fuzz::RunRecord(*session, data, size);
  return 0;
}
