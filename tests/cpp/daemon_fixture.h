// An in-process ligerd on a temporary socket, for the suites that talk to it over gRPC
// (daemon_test, kernels_service_test). A subclass adjusts the daemon's facts in Configure().
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "server/daemon.h"
#include "tests/cpp/fake_ipc.h"
#include "tests/cpp/test_util.h"

namespace ligerd::testing {

class InProcessDaemonTest : public ::testing::Test {
 protected:
  // Called before the daemon starts: set inventory, ops, ... in facts_.
  virtual void Configure(DaemonFacts& facts) = 0;

  void SetUp() override {
    config_.socket_path = tmp_.Join("run/ligerd.sock");
    config_.cache_dir = tmp_.Join("cache");
    facts_.socket_path = config_.socket_path;
    facts_.cache_dir = config_.cache_dir;
    Configure(facts_);
    auto daemon = Daemon::Start(config_, facts_, &opener_);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  FakeIpcOpener opener_;
  TempDir tmp_;
  DaemonConfig config_;
  DaemonFacts facts_;
  std::unique_ptr<Daemon> daemon_;
};

}  // namespace ligerd::testing
