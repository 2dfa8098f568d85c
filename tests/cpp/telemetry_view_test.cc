// ligerctl top's screen over the simulated node (telemetry_workload.h): every section, the rates
// between two snapshots, and the empty node.
#include "client/telemetry_view.h"

#include <gtest/gtest.h>

#include "tests/cpp/telemetry_workload.h"

namespace ligerd {
namespace {

bool Has(const std::string& screen, const std::string& text) { return screen.find(text) != std::string::npos; }

TEST(TelemetryView, ShowsGpusJobsOpsJitTuningErrors) {
  telemetry::NodeTelemetry node(testing::FakeSources());
  testing::SimulateWorkload(node.store());
  const std::string screen = RenderTop(node.Snapshot(), nullptr);
  EXPECT_TRUE(Has(screen, "ligerd 0.1.0 on node-1   sessions 1 (remote 1)")) << screen;
  EXPECT_TRUE(Has(screen, "NVIDIA H100 80GB HBM3"));
  EXPECT_TRUE(Has(screen, "30.0 GiB / 80.0 GiB (38%)"));
  EXPECT_TRUE(Has(screen, "2.0 GiB"));  // ligerd's IPC mappings on the served GPU
  EXPECT_TRUE(Has(screen, "train-llama"));
  EXPECT_TRUE(Has(screen, "12000"));     // tokens/s
  EXPECT_TRUE(Has(screen, "680.00 ms")); // step time
  EXPECT_TRUE(Has(screen, "2.7500"));    // loss
  EXPECT_TRUE(Has(screen, "rms_norm_fwd"));
  EXPECT_TRUE(Has(screen, "90.0 us"));   // (30 + 150) us / 2 samples
  EXPECT_TRUE(Has(screen, "remote 1000"));
  EXPECT_TRUE(Has(screen, "JIT cache: 58 hits, 5 misses, 4 compiles (1 failed, 3.2 s)"));
  EXPECT_TRUE(Has(screen, "tuning: 1 improved, 1 kept default, 1 failed"));
  EXPECT_TRUE(Has(screen, "remote_op_invalid_argument 2"));
}

TEST(TelemetryView, RatesAreOverTheInterval) {
  telemetry::NodeTelemetry node(testing::FakeSources());
  testing::SimulateWorkload(node.store());
  ligerd::v1::SnapshotResponse before = node.Snapshot();
  node.store().AddOps({"rms_norm_fwd", "forward", "bfloat16", "remote", "train-llama"}, {500, 0, 0});
  ligerd::v1::SnapshotResponse now = node.Snapshot();
  now.set_time_unix_seconds(before.time_unix_seconds() + 2.0);
  const std::string screen = RenderTop(now, &before);
  EXPECT_TRUE(Has(screen, "rms_norm_fwd              250.0")) << screen;  // 500 ops in 2 s
  EXPECT_TRUE(Has(screen, "rms_norm_bwd              0.0"));
}

TEST(TelemetryView, EmptyNode) {
  telemetry::NodeTelemetry node(telemetry::LiveSources{});
  const std::string screen = RenderTop(node.Snapshot(), nullptr);
  EXPECT_TRUE(Has(screen, "NVML: NVML not used"));
  EXPECT_TRUE(Has(screen, "errors: none"));
  EXPECT_EQ(std::count(screen.begin(), screen.end(), '\n') > 8, true);
}

}  // namespace
}  // namespace ligerd
