// The daemon in-process: health, Info on a GPU-less machine, malformed and unimplemented
// requests, single instance, shutdown.
#include "server/daemon.h"

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "client/control_client.h"
#include "server/gpu_inventory.h"
#include "tests/cpp/daemon_fixture.h"

namespace ligerd {
namespace {

class DaemonTest : public testing::InProcessDaemonTest {
 protected:
  void Configure(DaemonFacts& facts) override {
    facts.inventory = DiscoverGpus({});
    facts.ops = {{"example_op", "an op for the test", 3}};
  }

  // Sends raw bytes to a method and returns the status.
  grpc::Status CallRaw(const std::string& method, const std::string& bytes) {
    ControlClient client(config_.socket_path);
    grpc::GenericStub stub(client.channel());
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    auto call = stub.PrepareUnaryCall(&context, method, request, &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    return status;
  }
};

TEST_F(DaemonTest, HealthIsServing) {
  ControlClient client(config_.socket_path);
  auto health = client.Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(DaemonTest, InfoReportsBuildGpusAndCatalogue) {
  ControlClient client(config_.socket_path);
  auto info = client.GetInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->build().version(), LIGERD_VERSION);
  EXPECT_GE(info->protocol_version(), 1u);
  EXPECT_LE(info->min_protocol_version(), info->protocol_version());
  EXPECT_EQ(info->socket_path(), config_.socket_path);
  EXPECT_EQ(info->pid(), static_cast<uint32_t>(getpid()));
  ASSERT_EQ(info->ops_size(), 1);
  EXPECT_EQ(info->ops(0).name(), "example_op");
  EXPECT_EQ(info->ops(0).variant_count(), 3u);
  if (facts_.inventory.gpus.empty()) {
    // A GPU-less machine (CI): no GPUs, and a reason.
    EXPECT_EQ(info->gpus_size(), 0);
    EXPECT_FALSE(info->gpu_status().empty());
  } else {
    EXPECT_EQ(info->gpus_size(), static_cast<int>(facts_.inventory.gpus.size()));
    EXPECT_EQ(info->gpus(0).uuid().rfind("GPU-", 0), 0u);
  }
  ligerd::v1::GetInfoRequest terse;
  terse.set_omit_catalogue(true);
  EXPECT_EQ(client.GetInfo(terse)->ops_size(), 0);
}

TEST_F(DaemonTest, MalformedRequestIsInvalidArgumentAndDaemonStaysUp) {
  // Field 1 announced as a 2^28-byte length-delimited field in a 3-byte message.
  const grpc::Status status = CallRaw("/ligerd.v1.Info/GetInfo", std::string("\x0a\xff\xff\xff\x7f", 5));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("GetInfo"), std::string::npos);
  ControlClient client(config_.socket_path);
  EXPECT_TRUE(client.Health().ok());
}

TEST_F(DaemonTest, EveryServiceAnswers) {  // what they answer: telemetry_test.cc, kernels_service_test.cc
  // Precompile is implemented, not UNIMPLEMENTED: it refuses an arch that is no arch (an empty
  // request would compile every variant where a GPU is present, or refuse where none is).
  EXPECT_EQ(CallRaw("/ligerd.v1.Kernels/Precompile", std::string("\x0a\x05bogus", 7)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(CallRaw("/ligerd.v1.Telemetry/Snapshot", "").ok());
  EXPECT_TRUE(CallRaw("/ligerd.v1.Admin/SetLogLevel", std::string("\x0a\x04info", 6)).ok());
  EXPECT_EQ(CallRaw("/ligerd.v1.Admin/Drain", std::string("\x08\xff\xff\xff", 4)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // a truncated varint
}

TEST_F(DaemonTest, MalformedSessionRequestsAreInvalidArgument) {
  for (const char* method : {"/ligerd.v1.Sessions/OpenSession", "/ligerd.v1.Sessions/RegisterBuffer"}) {
    const grpc::Status status = CallRaw(method, std::string("\x0a\xff\xff\xff\x7f", 5));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
  }
}

TEST_F(DaemonTest, SecondDaemonOnTheSameSocketIsRefused) {
  auto second = Daemon::Start(config_, facts_, &opener_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  ControlClient client(config_.socket_path);
  EXPECT_TRUE(client.Health().ok()) << "the refused instance must not disturb the first";
}

TEST_F(DaemonTest, ShutdownRemovesTheSocketAndClientsGetAClearError) {
  const auto t0 = std::chrono::steady_clock::now();
  daemon_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(access(config_.socket_path.c_str(), F_OK), 0) << "socket is removed when the daemon is destroyed";
  daemon_.reset();
  EXPECT_EQ(access(config_.socket_path.c_str(), F_OK), -1);
  ControlClient client(config_.socket_path, std::chrono::milliseconds(500));
  const auto t1 = std::chrono::steady_clock::now();
  auto health = client.Health();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(2));
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(health.status().message().find(config_.socket_path), absl::string_view::npos);
}

}  // namespace
}  // namespace ligerd
