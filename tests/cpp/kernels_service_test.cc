// Kernels/Tune over a real socket on a GPU-less daemon, and its request validation in-process:
// malformed requests are INVALID_ARGUMENT naming the method and the shape, a valid request
// without a GPU is FAILED_PRECONDITION saying so. (Tuning itself: tests/gpu/test_tune.py.)
#include "server/kernels_service.h"

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "client/control_client.h"
#include "kernels/jit/cache_entry.h"
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

// GetModule, GetLaunchConfig and Precompile (kernels_lookup.cc) on a machine without a GPU.
class KernelsLookupTest : public TuneRpcTest {
 protected:
  std::unique_ptr<grpc::ClientContext> Context() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  }
};

TEST_F(KernelsLookupTest, GetModuleServesACacheEntryByKey) {
  ControlClient client(config_.socket_path);
  auto stub = v1::Kernels::NewStub(client.channel());
  kernels::Digest256 key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  const std::string hex = kernels::HexOf(key.data(), key.size());
  kernels::CompiledModule module;
  module.image = "\x7f" "ELF a cubin";
  std::filesystem::create_directories(config_.cache_dir);
  std::ofstream(std::filesystem::path(config_.cache_dir) / ("rms_norm_fwd.bf16.sm_90." + hex.substr(0, 32) + ".cubin"),
                std::ios::binary)
      << kernels::EncodeCacheEntry(key, module);
  v1::GetModuleRequest request;
  request.set_variant_key(hex);
  request.set_arch("sm_90");
  v1::GetModuleResponse response;
  ASSERT_TRUE(stub->GetModule(Context().get(), request, &response).ok());
  EXPECT_EQ(response.cubin(), module.image);
  EXPECT_EQ(response.variant_key(), hex);

  request.set_arch("sm_80");  // not compiled for that arch
  EXPECT_EQ(stub->GetModule(Context().get(), request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  request.set_arch("sm90");
  EXPECT_EQ(stub->GetModule(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_arch("sm_90");
  request.set_variant_key(hex.substr(2));
  EXPECT_EQ(stub->GetModule(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_variant_key(std::string(64, 'g'));
  EXPECT_EQ(stub->GetModule(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KernelsLookupTest, GetLaunchConfigChecksItsRequestAndNeedsAKnownGpu) {
  ControlClient client(config_.socket_path);
  auto stub = v1::Kernels::NewStub(client.channel());
  v1::GetLaunchConfigRequest request;
  request.set_op("rms_norm_fwd");
  request.set_dtype("bf16");
  request.add_shape(16384);
  request.add_shape(4096);
  v1::GetLaunchConfigResponse response;
  const grpc::Status none = stub->GetLaunchConfig(Context().get(), request, &response);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::NOT_FOUND) << none.error_message();  // no GPU here
  request.set_dtype("complex");
  EXPECT_EQ(stub->GetLaunchConfig(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_dtype("bf16");
  request.set_op("no_such_op");
  EXPECT_EQ(stub->GetLaunchConfig(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_op("rms_norm_fwd");
  request.add_shape(1);
  EXPECT_EQ(stub->GetLaunchConfig(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KernelsLookupTest, PrecompileChecksArchs) {
  ControlClient client(config_.socket_path);
  auto stub = v1::Kernels::NewStub(client.channel());
  v1::PrecompileResponse response;
  const grpc::Status no_gpu = stub->Precompile(Context().get(), v1::PrecompileRequest(), &response);
  EXPECT_EQ(no_gpu.error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // no GPU to take archs from
  EXPECT_NE(no_gpu.error_message().find("name them"), std::string::npos) << no_gpu.error_message();
  v1::PrecompileRequest bad;
  bad.add_archs("sm_90; rm -rf /");
  EXPECT_EQ(stub->Precompile(Context().get(), bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A real compile of every variant is the precompile_sm* ctest (the same PrecompileAll).
}

}  // namespace
}  // namespace ligerd
