// The TCP health face for Kubernetes gRPC probes (client/health_proxy.h): SERVING while the daemon
// is, NOT_SERVING within its deadline once the daemon stops or when there is none; nothing but
// Health/Check is served.
#include "client/health_proxy.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ligerd/v1/info.grpc.pb.h"
#include "tests/cpp/daemon_fixture.h"

namespace ligerd {
namespace {

using grpc::health::v1::HealthCheckResponse;

class HealthProxyTest : public testing::InProcessDaemonTest {
 protected:
  void Configure(DaemonFacts&) override {}

  static std::shared_ptr<grpc::Channel> Tcp(int port) {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  }
  // Returns the status, or -1 when the call failed, with how long it took.
  static int Check(int port, const std::string& service, std::chrono::milliseconds* took = nullptr) {
    auto stub = grpc::health::v1::Health::NewStub(Tcp(port));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    const auto t0 = std::chrono::steady_clock::now();
    grpc::Status status = stub->Check(&context, request, &response);
    if (took) *took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    return status.ok() ? static_cast<int>(response.status()) : -static_cast<int>(status.error_code()) - 100;
  }
};

TEST_F(HealthProxyTest, FollowsTheDaemon) {
  auto proxy = HealthProxy::Start("127.0.0.1:0", config_.socket_path);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int port = (*proxy)->port();
  EXPECT_EQ(Check(port, ""), HealthCheckResponse::SERVING);
  daemon_->Shutdown();
  std::chrono::milliseconds took{0};
  EXPECT_EQ(Check(port, "", &took), HealthCheckResponse::NOT_SERVING);
  EXPECT_LT(took.count(), 2000) << "a stopped daemon must be reported within the probe's deadline";
}

TEST_F(HealthProxyTest, NoDaemonIsNotServingAndOnlyHealthIsReachable) {
  auto proxy = HealthProxy::Start("127.0.0.1:0", tmp_.Join("nothing.sock"));
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int port = (*proxy)->port();
  EXPECT_EQ(Check(port, ""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(port, "ligerd.v1.Sessions"), -static_cast<int>(grpc::StatusCode::NOT_FOUND) - 100);
  // The daemon's own services are not reachable through the proxy.
  auto info = ligerd::v1::Info::NewStub(Tcp(port));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ligerd::v1::GetInfoResponse response;
  EXPECT_EQ(info->GetInfo(&context, {}, &response).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST(HealthProxyStart, BadAddressIsAnError) {
  EXPECT_FALSE(HealthProxy::Start("256.1.1.1:x", "/nonexistent.sock").ok());
}

}  // namespace
}  // namespace ligerd
