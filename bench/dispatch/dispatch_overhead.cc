// Dispatch overhead per op: the same small RMSNorm forward launched locally (the executor in this
// process) and remotely (ligerd, through the ring and stream flags), timed two ways:
//   gpu_us_per_op  GPU time of a chain of N ops / N (what the op costs the training step),
//   cpu_us_per_call host time of one submit (what it costs the Python thread).
// Run once inside shared/device/with-mps.sh and once outside: remote pays a GPU context switch
// per handoff without MPS. Writes one CSV row per mode to --csv (appends) and prints a table.
//
// usage: dispatch_overhead LIGERD_BINARY CACHE_DIR CSV_PATH LABEL
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>

#include "client/remote_session.h"
#include "kernels/executor.h"
#include "tests/gpu/cpp/gpu_test_util.h"

namespace {
using ligerd::gputest::DeviceBuffer;
using ligerd::gputest::View;
using ligerd::kernels::DType;

// Small enough that the kernel itself takes a few microseconds: the overhead is what shows.
constexpr int64_t kRows = 8, kHidden = 1024;
constexpr int kWarmup = 200, kOps = 5000;

struct Timing {
  double gpu_us_per_op, cpu_us_per_call;
};

template <typename Submit>
Timing Measure(Submit submit, cudaStream_t stream) {
  for (int i = 0; i < kWarmup; ++i) submit();
  cudaStreamSynchronize(stream);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kOps; ++i) submit();
  const auto t1 = std::chrono::steady_clock::now();
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  return {ms * 1000.0 / kOps, std::chrono::duration<double, std::micro>(t1 - t0).count() / kOps};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s LIGERD_BINARY CACHE_DIR CSV_PATH LABEL\n", argv[0]);
    return 2;
  }
  const std::string cache = argv[2], csv = argv[3], label = argv[4];
  cudaSetDevice(0);
  cudaFree(nullptr);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  char dir[] = "/tmp/ligerd-bench-XXXXXX";
  const std::string socket = std::string(mkdtemp(dir)) + "/ligerd.sock";
  ligerd::gputest::DaemonProcess daemon(socket, cache);

  auto local = ligerd::kernels::Executor::Create({.cache_dir = cache, .device = 0});
  if (!local.ok()) {
    std::fprintf(stderr, "executor: %s\n", std::string(local.status().message()).c_str());
    return 1;
  }
  ligerd::RemoteSessionOptions options;
  options.socket_path = socket;
  options.requested = ligerd::v1::OpenSessionRequest::DISPATCH_REMOTE;
  options.client_name = "dispatch_overhead";
  auto session = ligerd::RemoteSession::Open(options);
  if (!session.ok() || !(*session)->remote()) {
    std::fprintf(stderr, "remote session: %s\n",
                 session.ok() ? (*session)->dispatch_reason().c_str() : std::string(session.status().message()).c_str());
    return 1;
  }
  DeviceBuffer x(kRows * kHidden * 2), w(kHidden * 2), y(kRows * kHidden * 2), r(kRows * 4);
  cudaMemset(x.get(), 0, x.bytes());
  cudaMemset(w.get(), 0, w.bytes());
  std::vector<ligerd::kernels::TensorView> t{View(x, DType::kBFloat16, {kRows, kHidden}),
                                             View(w, DType::kBFloat16, {kHidden}),
                                             View(y, DType::kBFloat16, {kRows, kHidden}),
                                             View(r, DType::kFloat32, {kRows})};
  const double scalars[] = {1e-6, 0.0, 0};
  const Timing local_t = Measure([&] { (void)(*local)->Launch("rms_norm_fwd", t, scalars, nullptr, 0, stream); }, stream);
  const Timing remote_t = Measure([&] { (void)(*session)->Submit("rms_norm_fwd", t, scalars, stream); }, stream);
  if (absl::Status s = (*session)->Check(); !s.ok()) {
    std::fprintf(stderr, "remote ops failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::ofstream out(csv, std::ios::app);
  out << label << ",local," << local_t.gpu_us_per_op << "," << local_t.cpu_us_per_call << "\n";
  out << label << ",remote," << remote_t.gpu_us_per_op << "," << remote_t.cpu_us_per_call << "\n";
  std::printf("%-10s %-7s gpu %8.2f us/op  cpu %7.2f us/call\n", label.c_str(), "local", local_t.gpu_us_per_op,
              local_t.cpu_us_per_call);
  std::printf("%-10s %-7s gpu %8.2f us/op  cpu %7.2f us/call  (+%.2f us/op over local)\n", label.c_str(), "remote",
              remote_t.gpu_us_per_op, remote_t.cpu_us_per_call, remote_t.gpu_us_per_op - local_t.gpu_us_per_op);
  return 0;
}
