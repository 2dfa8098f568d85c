// The executor on the GPU, in C++ without Python: RMSNorm forward and backward against a
// double-precision CPU reference at shapes that exercise every kernel family (one element, odd
// hidden sizes, register and streaming kernels), with a watchdog so a hung kernel is a failure
// with a message, not a stuck test. Tolerances: fp32 1e-5 relative (fp32 accumulation order);
// bf16 2^-7 relative + 1e-2 absolute (one bf16 rounding of y, plus rstd in fp32).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "kernels/executor.h"
#include "tests/cpp/test_util.h"
#include "tests/gpu/cpp/gpu_test_util.h"

namespace ligerd {
namespace {
using gputest::DeviceBuffer;
using gputest::View;
using kernels::DType;

float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint16_t FloatToBf16(float f) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// Waits for the stream up to 20 s; false on a hang.
bool SyncWithWatchdog(cudaStream_t stream) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) {
      ADD_FAILURE() << "CUDA error: " << cudaGetErrorString(e);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

class ExecutorSmokeTest : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {
 protected:
  void SetUp() override {
    LIGERD_SKIP_WITHOUT_GPU();
    cudaSetDevice(0);
    cudaFree(nullptr);
    cudaStreamCreate(&stream_);
    const char* cache = std::getenv("LIGERD_CACHE_DIR");
    auto executor = kernels::Executor::Create({.cache_dir = cache ? cache : tmp_.Join("cache"), .device = 0});
    ASSERT_TRUE(executor.ok()) << executor.status();
    executor_ = std::move(*executor);
  }
  testing::TempDir tmp_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::Executor> executor_;
};

TEST_P(ExecutorSmokeTest, Bf16LlamaForwardAndBackwardMatchTheReference) {
  const auto [m, n] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(m * 131 + n));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> x(m * n), w(n), dy(m * n);
  for (auto& v : x) v = FloatToBf16(normal(rng));
  for (auto& v : w) v = FloatToBf16(1.0f + 0.1f * normal(rng));
  for (auto& v : dy) v = FloatToBf16(normal(rng));
  DeviceBuffer dx_(m * n * 2), dw_(n * 2), dd_(m * n * 2), dy_out(m * n * 2), rstd(m * 4), dxo(m * n * 2), dwo(n * 2);
  cudaMemcpy(dx_.get(), x.data(), x.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dw_.get(), w.data(), w.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dd_.get(), dy.data(), dy.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(dy_out.get(), 0xFF, dy_out.bytes());  // poison: NaN everywhere
  cudaMemset(dxo.get(), 0xFF, dxo.bytes());
  cudaMemset(dwo.get(), 0xFF, dwo.bytes());
  const double fs[] = {1e-6, 0.0, 0};
  std::vector<kernels::TensorView> ft{View(dx_, DType::kBFloat16, {m, n}), View(dw_, DType::kBFloat16, {n}),
                                      View(dy_out, DType::kBFloat16, {m, n}), View(rstd, DType::kFloat32, {m})};
  absl::Status s = executor_->Launch("rms_norm_fwd", ft, fs, nullptr, 0, stream_);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(SyncWithWatchdog(stream_)) << "rms_norm_fwd hung at " << m << "x" << n;
  const double bs[] = {0.0, 0};
  std::vector<kernels::TensorView> bt{View(dd_, DType::kBFloat16, {m, n}), View(dx_, DType::kBFloat16, {m, n}),
                                      View(dw_, DType::kBFloat16, {n}), View(rstd, DType::kFloat32, {m}),
                                      View(dxo, DType::kBFloat16, {m, n}), View(dwo, DType::kBFloat16, {n})};
  auto ws = executor_->WorkspaceBytes("rms_norm_bwd", bt, bs);
  ASSERT_TRUE(ws.ok()) << ws.status();
  DeviceBuffer workspace(std::max<size_t>(*ws, 16));
  s = executor_->Launch("rms_norm_bwd", bt, bs, workspace.get(), *ws, stream_);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(SyncWithWatchdog(stream_)) << "rms_norm_bwd hung at " << m << "x" << n;

  std::vector<uint16_t> y(m * n), gx(m * n), gw(n);
  cudaMemcpy(y.data(), dy_out.get(), y.size() * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(gx.data(), dxo.get(), gx.size() * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(gw.data(), dwo.get(), gw.size() * 2, cudaMemcpyDeviceToHost);
  std::vector<double> dw_ref(n, 0.0);
  int bad_y = 0, bad_dx = 0;
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) ss += double(Bf16ToFloat(x[i * n + j])) * Bf16ToFloat(x[i * n + j]);
    const double r = 1.0 / std::sqrt(ss / n + 1e-6);
    double dot = 0;  // sum_j dy_j * w_j * xhat_j
    for (int64_t j = 0; j < n; ++j) {
      const double xh = Bf16ToFloat(x[i * n + j]) * r, wj = Bf16ToFloat(w[j]), g = Bf16ToFloat(dy[i * n + j]);
      const double yr = xh * wj;
      const double yg = Bf16ToFloat(y[i * n + j]);
      if (!(std::fabs(yg - yr) <= 1e-2 + std::fabs(yr) / 128)) ++bad_y;
      dot += g * wj * xh;
      dw_ref[j] += g * xh;
    }
    for (int64_t j = 0; j < n; ++j) {
      const double xh = Bf16ToFloat(x[i * n + j]) * r, wj = Bf16ToFloat(w[j]), g = Bf16ToFloat(dy[i * n + j]);
      const double ref = r * (g * wj - xh * dot / n);
      const double got = Bf16ToFloat(gx[i * n + j]);
      if (!(std::fabs(got - ref) <= 2e-2 + std::fabs(ref) / 64)) ++bad_dx;
    }
  }
  int bad_dw = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double got = Bf16ToFloat(gw[j]);
    // dW sums m terms: allow the rounding of bf16 inputs to grow with sqrt(m).
    if (!(std::fabs(got - dw_ref[j]) <= 2e-2 * std::sqrt(double(m)) + std::fabs(dw_ref[j]) / 64)) ++bad_dw;
  }
  EXPECT_EQ(bad_y, 0) << "y mismatches at " << m << "x" << n;
  EXPECT_EQ(bad_dx, 0) << "dx mismatches at " << m << "x" << n;
  EXPECT_EQ(bad_dw, 0) << "dw mismatches at " << m << "x" << n;
}

INSTANTIATE_TEST_SUITE_P(Shapes, ExecutorSmokeTest,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1}, std::pair<int64_t, int64_t>{1, 8},
                                           std::pair<int64_t, int64_t>{3, 5120}, std::pair<int64_t, int64_t>{64, 4096},
                                           std::pair<int64_t, int64_t>{74, 8191}, std::pair<int64_t, int64_t>{4096, 4096},
                                           std::pair<int64_t, int64_t>{2, 70000}, std::pair<int64_t, int64_t>{37, 20000}));

}  // namespace
}  // namespace ligerd
