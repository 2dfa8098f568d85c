// A telemetry snapshot as Prometheus metric families (prometheus-cpp's data model) and as the
// Prometheus text format (prometheus-cpp's TextSerializer). docs/telemetry.md lists every family;
// tests/python/test_telemetry_metrics.py parses the text with prometheus_client's parser.
//
// Naming: the `ligerd_` prefix, base units (`_seconds`, `_bytes`), `_total` on counters. Per-GPU
// series carry DCGM exporter's labels so PromQL joins on `UUID` work: `gpu` (the NVML index),
// `UUID`, `modelName`, `Hostname`.
#pragma once

#include <string>
#include <vector>

#include "ligerd/v1/telemetry.pb.h"
#include "prometheus/metric_family.h"

namespace ligerd::telemetry {

struct BuildLabels {
  std::string version;
  std::string git_sha;
  std::string cuda;
};

std::vector<prometheus::MetricFamily> ToFamilies(const ligerd::v1::SnapshotResponse& snapshot,
                                                 const BuildLabels& build);
std::string PrometheusText(const ligerd::v1::SnapshotResponse& snapshot, const BuildLabels& build);

}  // namespace ligerd::telemetry
