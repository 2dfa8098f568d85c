// Replays the ring-record fuzzer's corpus through the same harness with any compiler (no
// libFuzzer needed), and writes the seed corpus.
//   ring_record_replay FILE|DIR...        run every input once (a finding aborts, naming the file)
//   ring_record_replay --write_seeds DIR  write the seed inputs (tests/fuzz/README.md)
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/ring_record_seeds.h"

namespace {

ligerd::fuzz::Session& TheSession() {
  static ligerd::fuzz::Session* session = new ligerd::fuzz::Session();
  return *session;
}
int outcomes[4] = {};

int Replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "ring_record_replay: cannot read %s\n", file.c_str());
    return 1;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::fprintf(stderr, "ring_record_replay: %s (%zu bytes)\n", file.c_str(), bytes.size());
  ++outcomes[static_cast<int>(ligerd::fuzz::RunRecord(TheSession(), bytes.data(), bytes.size()))];
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--write_seeds") == 0) {
    return ligerd::fuzz::WriteSeeds(argv[2]);
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: ring_record_replay FILE|DIR... | --write_seeds DIR\n");
    return 2;
  }
  int failed = 0, inputs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) failed += Replay(f), ++inputs;
    } else {
      failed += Replay(p);
      ++inputs;
    }
  }
  std::fprintf(stderr,
               "ring_record_replay: %d inputs: %d refused by record validation, %d by planning, %d at the "
               "launch's plan, %d planned; %d unreadable\n",
               inputs, outcomes[0], outcomes[1], outcomes[2], outcomes[3], failed);
  return failed == 0 && inputs > 0 ? 0 : 1;
}
