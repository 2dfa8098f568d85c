// Helpers for C++ GPU tests: skip without a GPU, device buffers, and a private ligerd process.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "client/control_client.h"
#include "kernels/tensor_view.h"

namespace ligerd::gputest {

#define LIGERD_SKIP_WITHOUT_GPU()                                                     \
  do {                                                                                \
    int n = 0;                                                                        \
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {                            \
      cudaGetLastError();                                                             \
      GTEST_SKIP() << "no CUDA GPU on this machine: GPU test skipped";                \
    }                                                                                 \
  } while (0)

// A device buffer (RAII), one cudaMalloc each, so each is its own IPC-exportable allocation.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { cudaMalloc(&ptr_, bytes); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  std::vector<char> Download() const {
    std::vector<char> host(bytes_);
    cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

inline kernels::TensorView View(const DeviceBuffer& b, kernels::DType dtype, std::vector<int64_t> sizes) {
  kernels::TensorView v;
  v.data = b.get();
  v.dtype = dtype;
  v.ndim = static_cast<int>(sizes.size());
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.sizes[d] = sizes[d];
    v.strides[d] = stride;
    stride *= sizes[d];
  }
  return v;
}

// Runs the ligerd binary on a private socket; SIGTERM on destruction.
class DaemonProcess {
 public:
  DaemonProcess(const std::string& socket, const std::string& cache_dir) : socket_(socket) {
    pid_ = fork();
    if (pid_ == 0) {
      const std::string s = "--socket=" + socket, c = "--cache_dir=" + cache_dir;
      execl(LIGERD_BINARY, LIGERD_BINARY, s.c_str(), c.c_str(), "--log_level=info", nullptr);
      _exit(127);
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      ControlClient client(socket, std::chrono::milliseconds(200));
      if (client.Health().ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~DaemonProcess() { Stop(SIGTERM); }
  void Stop(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  const std::string& socket() const { return socket_; }

 private:
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace ligerd::gputest
