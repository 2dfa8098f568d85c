// A short history of the node for the dashboard's charts: a HistoryPoint every few seconds,
// the last `capacity` kept (a page opened late still shows the last minutes). Thread-safe.
#pragma once

#include <cstddef>
#include <deque>

#include "absl/synchronization/mutex.h"
#include "ligerd/v1/telemetry.pb.h"

namespace ligerd::telemetry {

// The chart-relevant part of a snapshot.
ligerd::v1::HistoryPoint ToHistoryPoint(const ligerd::v1::SnapshotResponse& snapshot);

class History {
 public:
  explicit History(size_t capacity = 300) : capacity_(capacity) {}
  void Add(ligerd::v1::HistoryPoint point);
  ligerd::v1::HistoryResponse Read() const;

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<ligerd::v1::HistoryPoint> points_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ligerd::telemetry
