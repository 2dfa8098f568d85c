// A remote runner's op counts, kept on its own thread and handed to the Store in batches (every
// kFlushOps ops or kFlushInterval, whichever first, and when the runner stops), so counting costs
// the hot path an array increment, not a lock and a map lookup per op.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/tensor_view.h"
#include "server/telemetry/store.h"

namespace ligerd::telemetry {

// Bytes of the call's present tensors (each read or written once): the minimal byte model.
uint64_t CallBytes(const std::vector<kernels::TensorView>& tensors);
// The dtype label of a call: its first present tensor's ("bfloat16", ...), "none" without one.
const char* CallDType(const std::vector<kernels::TensorView>& tensors);

class OpTally {
 public:
  static constexpr uint64_t kFlushOps = 256;
  static constexpr std::chrono::milliseconds kFlushInterval{250};

  // `store` may be null (telemetry off): then every call is a no-op.
  OpTally(Store* store, std::string job, std::string dispatch, const std::vector<std::string>* op_names);
  ~OpTally() { Flush(); }

  void Count(uint32_t op_id, const char* dtype, uint64_t bytes, bool failed);
  // Flushes when enough ops or time have gone by since the last flush.
  void MaybeFlush();
  void Flush();

 private:
  struct Cell {
    const char* dtype = nullptr;
    OpTotals totals;
  };
  Store* store_;
  std::string job_;
  std::string dispatch_;
  const std::vector<std::string>* op_names_;
  std::vector<std::vector<Cell>> cells_;  // [op_id] -> one cell per dtype seen
  uint64_t pending_ = 0;
  std::chrono::steady_clock::time_point last_flush_ = std::chrono::steady_clock::now();
};

}  // namespace ligerd::telemetry
