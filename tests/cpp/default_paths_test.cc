// The default socket and cache paths (common/default_paths.h). tests/python/test_paths.py runs
// the same cases through `ligerctl paths` against ligerd/_paths.py.
#include "common/default_paths.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace ligerd {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(DefaultSocketPath, ExplicitThenXdgRuntimeDirThenPrivateTmpDir) {
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"LIGERD_SOCKET", "/x/y.sock"}, {"XDG_RUNTIME_DIR", "/run/user/5"}}), 5),
            "/x/y.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"XDG_RUNTIME_DIR", "/run/user/1000"}}), 1000),
            "/run/user/1000/ligerd/ligerd.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({}), 1234), "/tmp/ligerd-1234/ligerd.sock");
}

TEST(DefaultSocketPath, BlankRelativeAndPaddedValues) {
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"XDG_RUNTIME_DIR", ""}}), 7), "/tmp/ligerd-7/ligerd.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"XDG_RUNTIME_DIR", "  "}, {"LIGERD_SOCKET", "\t"}}), 7),
            "/tmp/ligerd-7/ligerd.sock");
  // XDG_* must be absolute (XDG Base Directory spec); LIGERD_SOCKET is taken as given.
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"XDG_RUNTIME_DIR", "run/user/5"}}), 7), "/tmp/ligerd-7/ligerd.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"LIGERD_SOCKET", "rel.sock"}}), 7), "rel.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"LIGERD_SOCKET", " /x/y.sock\n"}}), 7), "/x/y.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"XDG_RUNTIME_DIR", "/run/user/5/"}}), 7), "/run/user/5/ligerd/ligerd.sock");
  EXPECT_EQ(DefaultSocketPath(FakeEnv({{"LIGERD_SOCKET", "~/s.sock"}}), 7), "~/s.sock");  // no ~ expansion
}

TEST(DefaultCacheDir, ExplicitThenXdgCacheHomeThenHomeThenPrivateTmpDir) {
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"LIGERD_CACHE_DIR", "/l"}, {"XDG_CACHE_HOME", "/c"}, {"HOME", "/h"}}), 1), "/l");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"XDG_CACHE_HOME", "/c"}, {"HOME", "/h"}}), 1), "/c/ligerd");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"HOME", "/h"}}), 1), "/h/.cache/ligerd");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({}), 5), "/tmp/ligerd-5/cache");
}

TEST(DefaultCacheDir, BlankRelativeAndPaddedValues) {
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"LIGERD_CACHE_DIR", ""}, {"XDG_CACHE_HOME", " "}, {"HOME", "/h"}}), 1),
            "/h/.cache/ligerd");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"XDG_CACHE_HOME", "cache"}, {"HOME", "/h/"}}), 1), "/h/.cache/ligerd");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"HOME", ""}}), 3), "/tmp/ligerd-3/cache");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"HOME", "/"}}), 3), "/.cache/ligerd");
  EXPECT_EQ(DefaultCacheDir(FakeEnv({{"LIGERD_CACHE_DIR", " /l/ "}}), 1), "/l/");
}

TEST(ProcessEnv, ReadsTheEnvironment) {
  ASSERT_EQ(setenv("LIGERD_DEFAULT_PATHS_TEST", "v", 1), 0);
  EXPECT_EQ(ProcessEnv()("LIGERD_DEFAULT_PATHS_TEST"), "v");
  unsetenv("LIGERD_DEFAULT_PATHS_TEST");
  EXPECT_EQ(ProcessEnv()("LIGERD_DEFAULT_PATHS_TEST"), std::nullopt);
}

TEST(SocketSearchPath, ExplicitAloneElseOwnDaemonThenNodeService) {
  // An explicit socket is the only one tried: the user asked for that daemon.
  EXPECT_EQ(SocketSearchPath(FakeEnv({{"LIGERD_SOCKET", "/x/y.sock"}, {"XDG_RUNTIME_DIR", "/run/user/5"}}), 5),
            (std::vector<std::string>{"/x/y.sock"}));
  EXPECT_EQ(SocketSearchPath(FakeEnv({{"XDG_RUNTIME_DIR", "/run/user/5"}}), 5),
            (std::vector<std::string>{"/run/user/5/ligerd/ligerd.sock", "/run/ligerd/ligerd.sock"}));
  EXPECT_EQ(SocketSearchPath(FakeEnv({{"LIGERD_SOCKET", " "}}), 9),
            (std::vector<std::string>{"/tmp/ligerd-9/ligerd.sock", "/run/ligerd/ligerd.sock"}));
  EXPECT_EQ(std::string(kNodeSocketPath), "/run/ligerd/ligerd.sock");
  // XDG_RUNTIME_DIR=/run makes the user's own default the node's path: tried once.
  EXPECT_EQ(SocketSearchPath(FakeEnv({{"XDG_RUNTIME_DIR", "/run"}}), 9),
            (std::vector<std::string>{"/run/ligerd/ligerd.sock"}));
}

}  // namespace
}  // namespace ligerd
