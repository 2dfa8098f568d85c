// Remote dispatch on a GPU: ops executed by ligerd on this process's tensors give bitwise the same
// results as the same executor run locally; bad input is an error naming the op and hangs
// nothing; a daemon killed mid-stream is reported within 2 s and the GPU stream still drains; a
// submit inside a CUDA graph capture is refused (a replay would not reach the daemon).
// Run under MPS (tests/gpu/run.sh) for realistic timing; correctness does not need it.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "client/remote_session.h"
#include "kernels/executor.h"
#include "tests/cpp/test_util.h"
#include "tests/gpu/cpp/gpu_test_util.h"

namespace ligerd {
namespace {
using gputest::DeviceBuffer;
using gputest::View;
using kernels::DType;
using namespace std::chrono_literals;

class RemoteDispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LIGERD_SKIP_WITHOUT_GPU();
    cudaSetDevice(0);
    cudaFree(nullptr);  // makes the primary context current, as torch does
    cudaStreamCreate(&stream_);
    cache_ = std::getenv("LIGERD_CACHE_DIR") ? std::getenv("LIGERD_CACHE_DIR") : tmp_.Join("cache");
    daemon_ = std::make_unique<gputest::DaemonProcess>(tmp_.Join("ligerd.sock"), cache_);
    auto executor = kernels::Executor::Create({.cache_dir = cache_, .device = 0});
    ASSERT_TRUE(executor.ok()) << executor.status();
    local_ = std::move(*executor);
    RemoteSessionOptions options;
    options.socket_path = daemon_->socket();
    options.requested = ligerd::v1::OpenSessionRequest::DISPATCH_REMOTE;
    options.client_name = "remote_dispatch_test";
    auto session = RemoteSession::Open(options);
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = std::move(*session);
    ASSERT_TRUE(session_->remote()) << session_->dispatch_reason();
  }
  void TearDown() override {
    session_.reset();
    daemon_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  void Fill(DeviceBuffer& b, uint32_t seed) {
    std::vector<uint16_t> host(b.bytes() / 2);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (auto& h : host) {
      float f = normal(rng);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      h = static_cast<uint16_t>(bits >> 16);  // bf16 by truncation: any bf16 values will do
    }
    cudaMemcpy(b.get(), host.data(), b.bytes(), cudaMemcpyHostToDevice);
  }

  testing::TempDir tmp_;
  std::string cache_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<gputest::DaemonProcess> daemon_;
  std::unique_ptr<kernels::Executor> local_;
  std::unique_ptr<RemoteSession> session_;
};

TEST_F(RemoteDispatchTest, ForwardAndBackwardAreBitwiseEqualToLocal) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5120}, {4096, 4096}, {74, 8191}}) {
    DeviceBuffer x(m * n * 2), w(n * 2), dy(m * n * 2);
    Fill(x, 1), Fill(w, 2), Fill(dy, 3);
    DeviceBuffer y_local(m * n * 2), y_remote(m * n * 2), r_local(m * 4), r_remote(m * 4);
    DeviceBuffer dx_local(m * n * 2), dx_remote(m * n * 2), dw_local(n * 2), dw_remote(n * 2);
    cudaMemset(y_remote.get(), 0xFF, y_remote.bytes());  // poisoned: NaN patterns must be overwritten
    cudaMemset(dx_remote.get(), 0xFF, dx_remote.bytes());
    const double fwd_scalars[] = {1e-6, 0.0, 0};
    const double bwd_scalars[] = {0.0, 0};
    auto fwd = [&](DeviceBuffer& y, DeviceBuffer& r) {
      return std::vector<kernels::TensorView>{View(x, DType::kBFloat16, {m, n}), View(w, DType::kBFloat16, {n}),
                                              View(y, DType::kBFloat16, {m, n}), View(r, DType::kFloat32, {m})};
    };
    auto bwd = [&](DeviceBuffer& r, DeviceBuffer& dx, DeviceBuffer& dw) {
      return std::vector<kernels::TensorView>{View(dy, DType::kBFloat16, {m, n}), View(x, DType::kBFloat16, {m, n}),
                                              View(w, DType::kBFloat16, {n}), View(r, DType::kFloat32, {m}),
                                              View(dx, DType::kBFloat16, {m, n}), View(dw, DType::kBFloat16, {n})};
    };
    auto lf = fwd(y_local, r_local);
    absl::Status st = local_->Launch("rms_norm_fwd", lf, fwd_scalars, nullptr, 0, stream_);
    ASSERT_TRUE(st.ok()) << st;
    auto lb = bwd(r_local, dx_local, dw_local);
    auto ws = local_->WorkspaceBytes("rms_norm_bwd", lb, bwd_scalars);
    ASSERT_TRUE(ws.ok()) << ws.status();
    DeviceBuffer workspace(std::max<size_t>(*ws, 16));
    st = local_->Launch("rms_norm_bwd", lb, bwd_scalars, workspace.get(), *ws, stream_);
    ASSERT_TRUE(st.ok()) << st;
    auto rf = fwd(y_remote, r_remote);
    st = session_->Submit("rms_norm_fwd", rf, fwd_scalars, stream_);
    ASSERT_TRUE(st.ok()) << st << " at " << m << "x" << n;
    auto rb = bwd(r_remote, dx_remote, dw_remote);
    st = session_->Submit("rms_norm_bwd", rb, bwd_scalars, stream_);
    ASSERT_TRUE(st.ok()) << st << " at " << m << "x" << n;
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    ASSERT_TRUE(session_->Check().ok()) << session_->Check();
    EXPECT_EQ(y_local.Download(), y_remote.Download()) << m << "x" << n;
    EXPECT_EQ(r_local.Download(), r_remote.Download()) << m << "x" << n;
    EXPECT_EQ(dx_local.Download(), dx_remote.Download()) << m << "x" << n;
    EXPECT_EQ(dw_local.Download(), dw_remote.Download()) << m << "x" << n;
  }
}

TEST_F(RemoteDispatchTest, BadInputIsAnErrorNamingTheOpAndNothingHangs) {
  const int64_t m = 8, n = 64;
  DeviceBuffer x(m * n * 2), w(n * 2), y(m * n * 2), r(m * 4);
  const double scalars[] = {1e-6, 0.0, 0};
  // W declared with 63 elements: the daemon refuses the op and still releases the stream.
  std::vector<kernels::TensorView> t{View(x, DType::kBFloat16, {m, n}), View(w, DType::kBFloat16, {n - 1}),
                                     View(y, DType::kBFloat16, {m, n}), View(r, DType::kFloat32, {m})};
  ASSERT_TRUE(session_->Submit("rms_norm_fwd", t, scalars, stream_).ok()) << "errors are asynchronous";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(testing::WaitFor([&] { return !session_->Check().ok(); }, 2s));
  absl::Status error = session_->Check();
  EXPECT_EQ(error.code(), absl::StatusCode::kInvalidArgument) << error;
  EXPECT_NE(error.message().find("rms_norm_fwd"), absl::string_view::npos) << error;
  // Sticky, like CUDA's errors: every later submit in the session reports the first failure.
  EXPECT_EQ(session_->Submit("rms_norm_fwd", t, scalars, stream_).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RemoteDispatchTest, SubmitInsideACudaGraphCaptureIsRefusedAndTheSessionStaysUsable) {
  const int64_t m = 8, n = 64;
  DeviceBuffer x(m * n * 2), w(n * 2), y(m * n * 2), r(m * 4);
  const double scalars[] = {1e-6, 0.0, 0};
  std::vector<kernels::TensorView> t{View(x, DType::kBFloat16, {m, n}), View(w, DType::kBFloat16, {n}),
                                     View(y, DType::kBFloat16, {m, n}), View(r, DType::kFloat32, {m})};
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status captured = session_->Submit("rms_norm_fwd", t, scalars, stream_);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess) << "the refused submit left the capture intact";
  cudaGraphDestroy(graph);
  EXPECT_EQ(captured.code(), absl::StatusCode::kFailedPrecondition) << captured;
  EXPECT_NE(captured.message().find("rms_norm_fwd"), absl::string_view::npos) << captured;
  EXPECT_NE(captured.message().find("CUDA graph"), absl::string_view::npos) << captured;
  // Not an error of the session: the next submit outside a capture runs in the daemon.
  ASSERT_TRUE(session_->Submit("rms_norm_fwd", t, scalars, stream_).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_TRUE(session_->Check().ok()) << session_->Check();
}

TEST_F(RemoteDispatchTest, DaemonKilledMidStreamIsReportedWithinTwoSecondsAndTheStreamDrains) {
  const int64_t m = 4096, n = 4096;
  DeviceBuffer x(m * n * 2), w(n * 2), y(m * n * 2), r(m * 4);
  const double scalars[] = {1e-6, 0.0, 0};
  std::vector<kernels::TensorView> t{View(x, DType::kBFloat16, {m, n}), View(w, DType::kBFloat16, {n}),
                                     View(y, DType::kBFloat16, {m, n}), View(r, DType::kFloat32, {m})};
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(session_->Submit("rms_norm_fwd", t, scalars, stream_).ok());
  daemon_->Stop(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status status;
  while (std::chrono::steady_clock::now() - t0 < 3s) {
    status = session_->Submit("rms_norm_fwd", t, scalars, stream_);
    if (!status.ok()) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s) << "the client must release its own waits";
}

}  // namespace
}  // namespace ligerd
