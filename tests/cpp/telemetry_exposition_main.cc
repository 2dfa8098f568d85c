// Prints the Prometheus text of the simulated workload (telemetry_workload.h), for
// tests/python/test_telemetry_metrics.py to parse with prometheus_client's parser.
#include <iostream>

#include "server/telemetry/exposition.h"
#include "tests/cpp/telemetry_workload.h"

int main() {
  ligerd::telemetry::NodeTelemetry node(ligerd::testing::FakeSources());
  ligerd::testing::SimulateWorkload(node.store());
  std::cout << ligerd::telemetry::PrometheusText(node.Snapshot(), {"0.1.0", "abcdef", "13.0"});
  return 0;
}
