// Sessions through the real gRPC service: open, heartbeat, tokens, protocol and device checks,
// buffer registration, and teardown when the client process is SIGKILLed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "client/control_client.h"
#include "client/ring_writer.h"
#include "kernels/cuda_driver.h"
#include "ligerd/v1/sessions.grpc.pb.h"
#include "server/daemon.h"
#include "tests/cpp/fake_ipc.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {
using namespace std::chrono_literals;
namespace v1 = ::ligerd::v1;

class SessionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.socket_path = tmp_.Join("run/ligerd.sock");
    config_.cache_dir = tmp_.Join("cache");
    DaemonFacts facts;
    GpuDescription gpu;
    gpu.name = "test GPU";
    gpu.mps_enabled = true;
    facts.inventory.gpus.push_back(gpu);
    auto daemon = Daemon::Start(config_, facts, &opener_);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    client_ = std::make_unique<ControlClient>(config_.socket_path);
    stub_ = v1::Sessions::NewStub(client_->channel());
  }

  grpc::Status Open(v1::OpenSessionResponse* response, uint32_t protocol = 2, uint32_t device = 0,
                    uint32_t pid = getpid()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::OpenSessionRequest request;
    request.set_protocol_version(protocol);
    request.set_client_pid(pid);
    request.set_device(device);
    return stub_->OpenSession(&context, request, response);
  }
  grpc::Status Heartbeat(uint64_t id, const std::string& token) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::HeartbeatRequest request;
    request.set_session_id(id);
    request.set_token(token);
    v1::HeartbeatResponse response;
    return stub_->Heartbeat(&context, request, &response);
  }
  grpc::Status Register(uint64_t id, const std::string& token, uint64_t buffer, uint64_t size) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::RegisterBufferRequest request;
    request.set_session_id(id);
    request.set_token(token);
    request.set_buffer_id(buffer);
    request.set_ipc_handle(testing::FakeIpcOpener::Handle(4096));
    request.set_size_bytes(size);
    v1::RegisterBufferResponse response;
    return stub_->RegisterBuffer(&context, request, &response);
  }

  testing::FakeIpcOpener opener_;
  testing::TempDir tmp_;
  DaemonConfig config_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<ControlClient> client_;
  std::unique_ptr<v1::Sessions::Stub> stub_;
};

TEST_F(SessionsTest, OpenGivesARingTheClientCanMapAndAnHonestDispatchChoice) {
  v1::OpenSessionResponse session;
  ASSERT_TRUE(Open(&session).ok());
  EXPECT_EQ(session.token().size(), 32u);
  EXPECT_EQ(session.ring_record_bytes(), sizeof(ring::OpRecord));
  EXPECT_EQ(session.dispatch(), v1::OpenSessionRequest::DISPATCH_REMOTE) << "the fake GPU has MPS on";
  EXPECT_NE(session.dispatch_reason().find("MPS active"), std::string::npos);
  EXPECT_TRUE(RingWriter::Open(session.ring_name(), session.session_id(), session.ring_records()).ok());
  EXPECT_EQ(daemon_->active_sessions(), 1u);
  auto info = client_->GetInfo();
  EXPECT_EQ(info->active_sessions(), 1u);
  EXPECT_TRUE(Heartbeat(session.session_id(), session.token()).ok());
}

TEST_F(SessionsTest, WrongTokenUnknownSessionBadProtocolDeviceAndPidAreRefused) {
  v1::OpenSessionResponse session;
  ASSERT_TRUE(Open(&session).ok());
  std::string wrong = session.token();
  wrong[0] ^= 1;
  EXPECT_EQ(Heartbeat(session.session_id(), wrong).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Heartbeat(session.session_id() + 100, session.token()).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::OpenSessionResponse ignored;
  EXPECT_EQ(Open(&ignored, /*protocol=*/99).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // Version 1 clients wrote 8-tensor records: refused, not misread.
  EXPECT_EQ(Open(&ignored, /*protocol=*/1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Open(&ignored, 2, /*device=*/3).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Open(&ignored, 2, 0, /*pid=*/1).error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << "a client cannot open a session in another process's name";
}

TEST_F(SessionsTest, BuffersRegisterOnceAndTheirSizeIsChecked) {
  v1::OpenSessionResponse session;
  ASSERT_TRUE(Open(&session).ok());
  EXPECT_TRUE(Register(session.session_id(), session.token(), 11, 4096).ok());
  EXPECT_EQ(Register(session.session_id(), session.token(), 11, 4096).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Register(session.session_id(), session.token(), 12, 8192).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(opener_.open_mappings(), 1);
}

TEST_F(SessionsTest, CloseEndsTheSessionAndFreesItsMappingsAndRing) {
  v1::OpenSessionResponse session;
  ASSERT_TRUE(Open(&session).ok());
  ASSERT_TRUE(Register(session.session_id(), session.token(), 11, 4096).ok());
  grpc::ClientContext context;
  v1::CloseSessionRequest request;
  request.set_session_id(session.session_id());
  request.set_token(session.token());
  v1::CloseSessionResponse response;
  ASSERT_TRUE(stub_->CloseSession(&context, request, &response).ok());
  EXPECT_EQ(daemon_->active_sessions(), 0u);
  EXPECT_EQ(opener_.open_mappings(), 0);
  EXPECT_LT(shm_open(session.ring_name().c_str(), O_RDONLY, 0), 0);
}

TEST_F(SessionsTest, KilledClientIsTornDownWithinASecondAndOthersKeepServing) {
  v1::OpenSessionResponse mine;
  ASSERT_TRUE(Open(&mine).ok());
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t child = fork();
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    execl(SESSION_CLIENT_BINARY, SESSION_CLIENT_BINARY, config_.socket_path.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* from_child = fdopen(out[0], "r");
  unsigned long long id = 0;
  char ring_name[256] = {};
  ASSERT_EQ(fscanf(from_child, "%llu %255s", &id, ring_name), 2) << "the client process did not open a session";
  fclose(from_child);
  EXPECT_EQ(daemon_->active_sessions(), 2u);
  const int ring_fd = shm_open(ring_name, O_RDONLY, 0);
  ASSERT_GE(ring_fd, 0);
  close(ring_fd);

  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(testing::WaitFor([&] { return daemon_->active_sessions() == 1; }, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_LT(shm_open(ring_name, O_RDONLY, 0), 0) << "the dead client's ring must be unlinked";
  EXPECT_TRUE(Heartbeat(mine.session_id(), mine.token()).ok()) << "the other session is untouched";
}

TEST_F(SessionsTest, AttachStreamFlagsChecksTheBufferAndSaysWhyItCannotRun) {
  v1::OpenSessionResponse session;
  ASSERT_TRUE(Open(&session).ok());
  auto attach = [&](uint64_t buffer, uint32_t slots) {
    grpc::ClientContext context;
    v1::AttachStreamFlagsRequest request;
    request.set_session_id(session.session_id());
    request.set_token(session.token());
    request.set_buffer_id(buffer);
    request.set_slots(slots);
    v1::AttachStreamFlagsResponse response;
    return stub_->AttachStreamFlags(&context, request, &response);
  };
  ASSERT_TRUE(Register(session.session_id(), session.token(), 5, 4096).ok());
  EXPECT_EQ(attach(6, 1).error_code(), grpc::StatusCode::NOT_FOUND) << "unregistered flag buffer";
  if (kernels::Driver().ok()) GTEST_SKIP() << "a GPU is present: the remote path is covered by tests/gpu";
  // No driver here: the executor cannot start, and the error says why rather than crashing.
  const grpc::Status status = attach(5, 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_NE(status.error_message().find("CUDA driver"), std::string::npos) << status.error_message();
}

TEST(ChooseDispatch, AutoFollowsMpsAndExplicitRequestsAreHonoured) {
  using R = v1::OpenSessionRequest;
  EXPECT_EQ(ChooseDispatch(R::DISPATCH_AUTO, true, true).mode, R::DISPATCH_REMOTE);
  EXPECT_EQ(ChooseDispatch(R::DISPATCH_AUTO, false, true).mode, R::DISPATCH_LOCAL);
  EXPECT_EQ(ChooseDispatch(R::DISPATCH_LOCAL, true, true).mode, R::DISPATCH_LOCAL);
  auto slow = ChooseDispatch(R::DISPATCH_REMOTE, false, true);
  EXPECT_EQ(slow.mode, R::DISPATCH_REMOTE);
  EXPECT_NE(slow.reason.find("280 us"), std::string::npos);
  EXPECT_EQ(ChooseDispatch(R::DISPATCH_REMOTE, true, false).mode, R::DISPATCH_LOCAL);
}

}  // namespace
}  // namespace ligerd
