// Helpers for the kernels tests: temporary directories and a fake compiler.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/jit/compile_request.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels::testing {

// Planning tests: distinct, 256-byte aligned fake device addresses far apart (never dereferenced).
inline void* Addr(int i) { return reinterpret_cast<void*>(uintptr_t{0x100000000} * (i + 1)); }

// A tensor view over a fake address; row-major strides unless given. More than kMaxDims sizes
// (a rank error to test) set ndim and fill the first kMaxDims dims only.
inline TensorView Tensor(void* data, DType dt, std::vector<int64_t> sizes, std::vector<int64_t> strides = {}) {
  TensorView t;
  t.data = data;
  t.dtype = dt;
  t.ndim = static_cast<int32_t>(sizes.size());
  int64_t s = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (i < kMaxDims) {
      t.sizes[i] = sizes[i];
      t.strides[i] = strides.empty() ? s : strides[i];
    }
    s *= sizes[i];
  }
  return t;
}

// An H100-like device whose occupancy oracle answers `blocks_per_sm` for every kernel.
inline DeviceInfo FakeDevice(int blocks_per_sm = 2) {
  DeviceInfo d;
  d.ordinal = 0;
  d.sm_count = 132;
  d.compute_capability = 90;
  d.blocks_per_sm = [blocks_per_sm](std::string_view, const KernelVariant&, std::string_view, int, size_t) {
    return absl::StatusOr<int>(blocks_per_sm);
  };
  return d;
}

// A planning error: kInvalidArgument, with `fragment` in its message.
inline void ExpectInvalid(const absl::StatusOr<OpPlan>& p, const std::string& fragment) {
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(p.status().message().find(fragment), absl::string_view::npos)
      << "message: " << p.status().message() << "\nexpected to contain: " << fragment;
}

// Launch `i`'s parameter block as the op's params struct P (its size checked first).
template <typename P>
P LaunchParams(const OpPlan& p, size_t i = 0) {
  P q;
  EXPECT_EQ(p.launches.at(i).params.size(), sizeof(q));
  std::memcpy(&q, p.launches[i].params.data(), sizeof(q));
  return q;
}

// A fresh private directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ligerd_kernels_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Compiles nothing: the "image" is derived from the request. Counts calls, can be slow (to widen
// races) and can append one line per compile to a log file shared by processes.
class FakeCompiler : public Compiler {
 public:
  explicit FakeCompiler(std::string version = "fake-1") : version_(std::move(version)) {}
  std::string VersionTag() const override { return version_; }
  absl::StatusOr<CompiledModule> Compile(const CompileRequest& r) const override {
    calls.fetch_add(1);
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (!log_path.empty()) {
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      std::string line = r.op + " " + r.variant + " " + std::to_string(::getpid()) + "\n";
      if (fd >= 0) {
        (void)!::write(fd, line.data(), line.size());  // O_APPEND: one atomic line per compile
        ::close(fd);
      }
    }
    if (fail) return absl::InternalError("fake compile error: line 1: oops");
    CompiledModule m;
    m.kind = BinaryKind::kCubin;
    m.image = "IMAGE:" + r.op + ":" + r.variant + ":" + r.arch + ":" + std::string(r.main.text);
    return m;
  }
  mutable std::atomic<int> calls{0};
  int delay_ms = 0;
  bool fail = false;
  std::string log_path;

 private:
  std::string version_;
};

inline CompileRequest SampleRequest() {
  CompileRequest r;
  r.op = "test_op";
  r.variant = "xbf16.llama";
  r.main = {"kernels/ops/test.cuh", "extern \"C\" __global__ void k() {}"};
  r.headers = {{"kernels/ops/common.cuh", "// common"}};
  r.options = {"--std=c++17", "-DLIGERD_XT=float"};
  r.arch = "sm_90";
  return r;
}

}  // namespace ligerd::kernels::testing
