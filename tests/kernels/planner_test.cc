// Planner (kernels/planner.h), the executor's planning without CUDA: with a tuning DB it plans a
// call with the config stored for its bucket (OpPlan::tuned), falls back to the default plan when
// the op refuses a stored config (logged once per bucket and config), and leaves the DB out when
// asked to or when given an explicit config.
#include "kernels/planner.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/tuning/tuning_db.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Addr;
using testing::FakeDevice;
using testing::Tensor;

struct RmsNormBwd {
  std::vector<TensorView> t;
  std::vector<double> s{0.0, 0.0};
  explicit RmsNormBwd(int64_t rows, int64_t n) {
    const DType dt = DType::kBFloat16;
    t = {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}), Tensor(Addr(2), dt, {n}),
         Tensor(Addr(3), DType::kFloat32, {rows}), Tensor(Addr(4), dt, {rows, n}), Tensor(Addr(5), dt, {n})};
  }
};

TEST(PlannerTest, UsesTheStoredConfigAndFallsBackWhenTheOpRefusesIt) {
  testing::TempDir dir;
  DeviceInfo device = FakeDevice();
  device.name = "planner test GPU";
  auto db = std::make_shared<TuningDb>(dir.path() / "t.tunedb", GpuIdentityOf(device));
  LaunchConfig stored;  // legal and not the default: 512 threads x 1 vector, one row per block
  stored.threads_per_row = 512;
  stored.rows_per_block = 1;
  stored.iters = 1;
  stored.grid = 132;
  TuningEntry good;
  good.key = MakeTuningKey("rms_norm_bwd", {DType::kBFloat16, 16384, 4096});
  good.config = stored;
  TuningEntry refused;  // 8 threads cannot hold a 4096-wide row in registers
  refused.key = MakeTuningKey("rms_norm_bwd", {DType::kBFloat16, 1024, 4096});
  refused.config = stored;
  refused.config.threads_per_row = 8;
  ASSERT_TRUE(db->Store({good, refused}).ok());
  std::vector<std::string> logged;
  SetTuningLogSink([&](std::string_view m) { logged.emplace_back(m); });
  Planner planner(device, db);

  const RmsNormBwd big(16384, 4096);
  const void* ws = Addr(9);
  auto ask = planner.Plan("rms_norm_bwd", big.t, big.s, nullptr, 0, {.check_workspace = false});
  ASSERT_TRUE(ask.ok()) << ask.status();
  EXPECT_TRUE(ask->tuned);
  EXPECT_TRUE(SameLaunchConfig(ask->config, stored)) << FormatLaunchConfig(ask->config);
  auto launch = planner.Plan("rms_norm_bwd", big.t, big.s, const_cast<void*>(ws), ask->workspace_bytes, {});
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_TRUE(launch->tuned);
  // Without the DB: the default plan, another config.
  auto plain = planner.Plan("rms_norm_bwd", big.t, big.s, nullptr, 0, {.use_tuning_db = false, .check_workspace = false});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->tuned);
  EXPECT_FALSE(SameLaunchConfig(plain->config, stored));
  // An explicit config (the tuner's) wins over the DB.
  LaunchConfig other = stored;
  other.grid = 264;
  auto explicit_plan = planner.Plan("rms_norm_bwd", big.t, big.s, nullptr, 0, {.config = &other, .check_workspace = false});
  ASSERT_TRUE(explicit_plan.ok()) << explicit_plan.status();
  EXPECT_TRUE(SameLaunchConfig(explicit_plan->config, other));

  // The refused config: the default plan, one log line naming the bucket, however many calls.
  const RmsNormBwd small(1024, 4096);
  for (int i = 0; i < 3; ++i) {
    auto p = planner.Plan("rms_norm_bwd", small.t, small.s, nullptr, 0, {.check_workspace = false});
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_FALSE(p->tuned);
  }
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find("rms_norm_bwd bf16 1024x4096"), std::string::npos) << logged[0];
  SetTuningLogSink(nullptr);
}

}  // namespace
}  // namespace ligerd::kernels
