// Kernels/Tune over a real socket on a GPU-less daemon, and its request validation in-process:
// malformed requests are INVALID_ARGUMENT naming the method and the shape, a valid request
// without a GPU is FAILED_PRECONDITION saying so. (Tuning itself: tests/gpu/test_tune.py.)
#include "server/kernels_service.h"

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "client/control_client.h"
#include "server/daemon.h"
#include "server/gpu_inventory.h"
#include "tests/cpp/daemon_fixture.h"

namespace ligerd {
namespace {

v1::TuneRequest Request(std::vector<std::tuple<std::string, std::string, int64_t, int64_t>> shapes) {
  v1::TuneRequest r;
  for (const auto& [op, dtype, rows, cols] : shapes) {
    v1::TuneShape* s = r.add_shapes();
    s->set_op(op);
    s->set_dtype(dtype);
    s->set_rows(rows);
    s->set_cols(cols);
  }
  return r;
}

TEST(ValidateTuneRpc, AcceptsTunableShapes) {
  auto ok = ValidateTuneRpc(Request({{"rms_norm_fwd", "bf16", 16384, 4096}, {"swiglu_bwd", "float16", 7, 14336}}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].dtype, kernels::DType::kFloat16);
  EXPECT_EQ((*ok)[1].trials, 7) << "0 = the default";
}

TEST(ValidateTuneRpc, RefusesMalformedRequestsNamingTheShape) {
  struct Case {
    v1::TuneRequest request;
    const char* says;
  };
  v1::TuneRequest too_many_trials = Request({{"rms_norm_fwd", "bf16", 16, 4096}});
  too_many_trials.set_trials(1000);
  v1::TuneRequest too_many_shapes;
  for (int i = 0; i < 300; ++i) *too_many_shapes.add_shapes() = Request({{"rms_norm_fwd", "bf16", 16, 64}}).shapes(0);
  const Case cases[] = {
      {v1::TuneRequest(), "no shapes"},
      {Request({{"no_such_op", "bf16", 16, 4096}}), "unknown op"},
      {Request({{"rms_norm_fwd", "int8", 16, 4096}}), "unknown dtype"},
      {Request({{"rms_norm_fwd", "bf16", 0, 4096}}), "shape"},
      {Request({{"rms_norm_fwd", "bf16", 16, 4096}, {"swiglu_fwd", "bf16", 16, -1}}), "shape #1"},
      {Request({{"rms_norm_fwd", "bf16", int64_t{1} << 32, 4096}}), "rows"},
      {too_many_trials, "trials"},
      {too_many_shapes, "at most"},
  };
  for (const Case& c : cases) {
    auto r = ValidateTuneRpc(c.request);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_NE(r.status().message().find("Kernels/Tune"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status();
  }
}

TEST(KernelsServiceAdmit, NoGpuIsFailedPreconditionDeviceMustExist) {
  GpuInventory none;
  none.status = "no CUDA driver";
  KernelsService no_gpu(nullptr, none);
  auto r = no_gpu.Admit(Request({{"rms_norm_fwd", "bf16", 16384, 4096}}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("no GPU"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("no CUDA driver"), std::string::npos) << r.status();
  // The request's own mistakes come first, GPU or not.
  EXPECT_EQ(no_gpu.Admit(Request({{"bogus", "bf16", 1, 1}})).status().code(), absl::StatusCode::kInvalidArgument);

  GpuInventory one;
  one.gpus.push_back({});
  one.gpus[0].index = 0;
  KernelsService gpu(nullptr, one);
  EXPECT_TRUE(gpu.Admit(Request({{"rms_norm_fwd", "bf16", 16384, 4096}})).ok());
  v1::TuneRequest other = Request({{"rms_norm_fwd", "bf16", 16384, 4096}});
  other.set_device(3);
  EXPECT_EQ(gpu.Admit(other).status().code(), absl::StatusCode::kInvalidArgument);
}

class TuneRpcTest : public testing::InProcessDaemonTest {
 protected:
  void Configure(DaemonFacts& facts) override {
    facts.inventory.status = "no CUDA driver (test)";  // a GPU-less daemon, whatever the machine
  }

  // A server-streaming call with raw request bytes; returns the final status.
  grpc::Status CallRawStream(const std::string& method, const std::string& bytes) {
    ControlClient client(config_.socket_path);
    grpc::GenericStub stub(client.channel());
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto call = stub.PrepareCall(&context, method, &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
    cq.Next(&tag, &ok);
    grpc::ByteBuffer response;
    do {
      call->Read(&response, reinterpret_cast<void*>(3));
      cq.Next(&tag, &ok);
    } while (ok);
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
    return status;
  }
};

TEST_F(TuneRpcTest, MalformedBytesAreInvalidArgumentAndTheDaemonStaysUp) {
  const grpc::Status status = CallRawStream("/ligerd.v1.Kernels/Tune", std::string("\x0a\xff\xff\xff\x7f", 5));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("Kernels/Tune"), std::string::npos) << status.error_message();
  ControlClient client(config_.socket_path);
  EXPECT_TRUE(client.Health().ok());
}

TEST_F(TuneRpcTest, BadShapeIsInvalidArgumentValidShapeWithoutGpuIsFailedPrecondition) {
  ControlClient client(config_.socket_path);
  int messages = 0;
  auto count = [&](const v1::TuneProgress&) { ++messages; };
  absl::Status bad = client.Tune(Request({{"rms_norm_fwd", "bf16", 16384, 0}}), count);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  absl::Status no_gpu = client.Tune(Request({{"rms_norm_fwd", "bf16", 16384, 4096}}), count);
  EXPECT_EQ(no_gpu.code(), absl::StatusCode::kFailedPrecondition) << no_gpu;
  EXPECT_NE(no_gpu.message().find("no GPU"), std::string::npos) << no_gpu;
  EXPECT_EQ(messages, 0);
}

TEST_F(TuneRpcTest, OtherKernelsMethodsAreUnimplemented) {
  ControlClient client(config_.socket_path);
  auto stub = v1::Kernels::NewStub(client.channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::PrecompileResponse response;
  EXPECT_EQ(stub->Precompile(&context, v1::PrecompileRequest(), &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace ligerd
