// Kernel time of one remote op in `every`, measured with a pair of CUDA events around its launch
// and read later, when the GPU has passed them (never a CPU wait). Sampling, not every launch:
// an event pair costs two records on the stream. At most kMaxPending samples are in flight; when
// that many are still running, the next sample is skipped. Used by the runner thread only.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "server/telemetry/store.h"

namespace ligerd::dataplane {

class GpuTimeSampler {
 public:
  static constexpr size_t kMaxPending = 8;

  // `store` null or `every` 0: never samples.
  GpuTimeSampler(telemetry::Store* store, std::string dispatch, uint32_t every);
  ~GpuTimeSampler();  // destroys its events (the caller has synchronised the stream)

  // True when the next launch should be timed (then call Begin before it and End after it).
  bool Due();
  void Begin(CUstream stream);
  void End(CUstream stream, const std::string& op, uint64_t bytes);
  // Hands finished samples to the store.
  void Poll();

 private:
  struct Pending {
    CUevent start = nullptr;
    CUevent end = nullptr;
    std::string op;
    uint64_t bytes = 0;
  };
  CUevent Take();

  telemetry::Store* store_;
  std::string dispatch_;
  uint32_t every_;
  uint64_t calls_ = 0;
  CUevent begun_ = nullptr;  // between Begin and End
  std::deque<Pending> pending_;
  std::vector<CUevent> free_;
};

}  // namespace ligerd::dataplane
