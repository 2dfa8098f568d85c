#include "server/config.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <map>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"

ABSL_DECLARE_FLAG(std::string, socket);
ABSL_DECLARE_FLAG(std::string, socket_group);
ABSL_DECLARE_FLAG(std::string, devices);
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, cache_dir);
ABSL_DECLARE_FLAG(std::string, metrics_address);
ABSL_DECLARE_FLAG(int64_t, telemetry_sample_every);

namespace ligerd {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ParseDevices, AllAndLists) {
  EXPECT_TRUE(ParseDevices("all")->empty());
  EXPECT_TRUE(ParseDevices("")->empty());
  EXPECT_EQ(*ParseDevices("0,2, 3"), (std::vector<int>{0, 2, 3}));
}

TEST(ParseDevices, RejectsJunkNegativesAndDuplicates) {
  for (const char* bad : {"x", "-1", "0,,1", "1,1", "0;1", "1.5"}) {
    auto parsed = ParseDevices(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(parsed.status().message().find("--devices"), absl::string_view::npos);
  }
}

TEST(LogLevel, ParsesKnownNamesOnly) {
  EXPECT_EQ(*ParseLogLevel("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarning);
  EXPECT_FALSE(ParseLogLevel("loud").ok());
}

class ConfigFromFlagsTest : public ::testing::Test {
 protected:
  absl::FlagSaver saver_;  // restores every flag after each test
};

TEST_F(ConfigFromFlagsTest, DefaultsComeFromEnvironment) {
  const EnvLookup env = FakeEnv({{"XDG_RUNTIME_DIR", "/run/user/9"}, {"HOME", "/home/u"}});
  auto config = ConfigFromFlags(env);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->socket_path, "/run/user/9/ligerd/ligerd.sock");
  EXPECT_EQ(config->cache_dir, "/home/u/.cache/ligerd");
  // The daemon has no rule of its own: its defaults are common/default_paths.h's.
  EXPECT_EQ(config->socket_path, DefaultSocketPath(env, geteuid()));
  EXPECT_EQ(config->cache_dir, DefaultCacheDir(env, geteuid()));
  EXPECT_TRUE(config->devices.empty());
  EXPECT_EQ(config->log_level, LogLevel::kInfo);
  EXPECT_FALSE(config->socket_gid.has_value());
}

TEST_F(ConfigFromFlagsTest, FlagsOverrideTheEnvironment) {
  absl::SetFlag(&FLAGS_socket, "/s/flag.sock");
  absl::SetFlag(&FLAGS_cache_dir, "/c/flag");
  auto config = ConfigFromFlags(FakeEnv({{"LIGERD_SOCKET", "/s/env.sock"}, {"LIGERD_CACHE_DIR", "/c/env"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->socket_path, "/s/flag.sock");
  EXPECT_EQ(config->cache_dir, "/c/flag");
}

TEST_F(ConfigFromFlagsTest, ARelativeSocketFromTheEnvironmentIsRefusedAsSuch) {
  auto config = ConfigFromFlags(FakeEnv({{"LIGERD_SOCKET", "relative.sock"}}));
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("$LIGERD_SOCKET"), absl::string_view::npos) << config.status();
}

TEST_F(ConfigFromFlagsTest, RejectsRelativeAndOverlongSocketPaths) {
  absl::SetFlag(&FLAGS_socket, "relative.sock");
  EXPECT_EQ(ConfigFromFlags(FakeEnv({})).status().code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_socket, "/" + std::string(200, 'a'));
  auto config = ConfigFromFlags(FakeEnv({}));
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("must be under"), absl::string_view::npos);
}

TEST_F(ConfigFromFlagsTest, ResolvesGroupsByNameAndNumber) {
  absl::SetFlag(&FLAGS_socket_group, "0");
  auto config = ConfigFromFlags(FakeEnv({}));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->socket_gid, gid_t{0});
  absl::SetFlag(&FLAGS_socket_group, "no-such-group-ligerd");
  EXPECT_EQ(ConfigFromFlags(FakeEnv({})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConfigFromFlagsTest, BadDevicesAndLogLevelNameTheFlag) {
  absl::SetFlag(&FLAGS_devices, "gpu0");
  EXPECT_NE(ConfigFromFlags(FakeEnv({})).status().message().find("--devices"), absl::string_view::npos);
  absl::SetFlag(&FLAGS_devices, "all");
  absl::SetFlag(&FLAGS_log_level, "chatty");
  EXPECT_NE(ConfigFromFlags(FakeEnv({})).status().message().find("--log_level"), absl::string_view::npos);
}

TEST_F(ConfigFromFlagsTest, MetricsAddressDefaultsToLoopbackAndIsCheckedAtStart) {
  const std::string saved = absl::GetFlag(FLAGS_metrics_address);
  auto config = ConfigFromFlags(FakeEnv({}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics_address, kDefaultMetricsAddress);
  EXPECT_TRUE(config->metrics_address_is_default);
  absl::SetFlag(&FLAGS_metrics_address, "off");
  config = ConfigFromFlags(FakeEnv({}));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->metrics_address, "");
  absl::SetFlag(&FLAGS_metrics_address, "[::1]:0");
  config = ConfigFromFlags(FakeEnv({}));
  ASSERT_TRUE(config.ok());
  EXPECT_FALSE(config->metrics_address_is_default);
  absl::SetFlag(&FLAGS_metrics_address, "nonsense");
  EXPECT_NE(ConfigFromFlags(FakeEnv({})).status().message().find("--metrics_address"), absl::string_view::npos);
  absl::SetFlag(&FLAGS_metrics_address, saved);
  absl::SetFlag(&FLAGS_telemetry_sample_every, -1);
  EXPECT_NE(ConfigFromFlags(FakeEnv({})).status().message().find("--telemetry_sample_every"), absl::string_view::npos);
  absl::SetFlag(&FLAGS_telemetry_sample_every, 64);
}

}  // namespace
}  // namespace ligerd
