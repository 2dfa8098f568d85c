// `ligerctl telemetry [--json]` and `ligerctl top`: the daemon's Telemetry/Snapshot for scripts,
// and a live terminal view of it (GPUs and their memory, jobs with tokens/s, step time, loss and
// peak memory, ops per second with their sampled GPU time and bandwidth, JIT cache, tuning,
// errors). RenderTop is a pure function of two snapshots, so tests check the screen exactly.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "client/control_client.h"
#include "ligerd/v1/telemetry.pb.h"

namespace ligerd {

absl::StatusOr<ligerd::v1::SnapshotResponse> FetchSnapshot(const ControlClient& client, int timeout_ms);

// The screen for `now`; rates (ops/s, GPU time per op, GB/s) are over the interval since
// `before` (null: the first screen, which shows totals only).
std::string RenderTop(const ligerd::v1::SnapshotResponse& now, const ligerd::v1::SnapshotResponse* before);

// ligerctl telemetry: a summary, or with `json` the whole snapshot as JSON. Exit codes as
// ligerctl's (3: no daemon).
int TelemetryCommand(const ControlClient& client, bool json, int timeout_ms);
// ligerctl top: refreshes every `interval_ms` until interrupted, or `iterations` screens (> 0).
// On a terminal the screen is redrawn in place; otherwise screens follow each other.
int TopCommand(const ControlClient& client, int interval_ms, int iterations, int timeout_ms);

}  // namespace ligerd
