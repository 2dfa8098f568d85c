// Times variants of ligerd's NVRTC kernel sources (compiled here with nvcc to cubins, with the
// -D defines under test) at one shape, beside a device-to-device copy of the same byte count, so
// that a source change can be judged on the GPU before it goes into the daemon. Standalone;
// driver API only (the cubins are loaded as the daemon loads its NVRTC output).
//   nvcc -O3 -std=c++17 -arch=sm_90 -I. bench/micro/kernel_variants.cu -lcuda -o /tmp/kv
//   nvcc -cubin -arch=sm_90 -I. -x cu -DLIGERD_... kernels/ops/rms_norm.cuh -o /tmp/rms.cubin
//   /tmp/kv OP ROWS COLS label=L,cubin=F,kernel=K,block=BX.BY[,cluster=C,smem=S,abi=A] ...
// abi=liger_rms / liger_ln: the cubin is Liger-Kernel's Triton kernel (bench/micro/compile_liger.py),
// launched with its own parameter list (one row per 1-D block, grid = ROWS) on the same buffers;
// its hash differs from ligerd's (Liger's LayerNorm stores mean and rstd in bf16), its time does not.
// OP: rms (RMSNorm forward, bf16, weight), ln (LayerNorm forward, bf16, weight + bias) or ce
// (cross-entropy forward with gradient, bf16 logits into a separate dX, mean reduction). The
// grid is ceil(rows / BY) for the norms; for ce, whole clusters, as many as the GPU holds at once
// (cuOccupancyMaxActiveClusters), as the daemon's planner sizes it. Prints ms (median of 20 after
// 3 warm-ups, each launch alone on an idle GPU), GB/s by the op's minimal byte count and its
// share of the copy's GB/s, then "b2b": the ms of one launch of 20 queued back to back (median of
// 5 such trials), as CUDA-graph replay and a training step run them (session 7 found a LayerNorm
// forward that ties Liger's alone but trails it by 4% back to back).
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <string>
#include <vector>

#include "kernels/ops/cross_entropy_params.h"
#include "kernels/ops/layer_norm_params.h"
#include "kernels/ops/rms_norm_params.h"

#define CU(x)                                                                                    \
  do {                                                                                           \
    CUresult r_ = (x);                                                                           \
    if (r_ != CUDA_SUCCESS) {                                                                    \
      const char* s_ = nullptr;                                                                  \
      cuGetErrorString(r_, &s_);                                                                 \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, s_ ? s_ : "?");                      \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

namespace {

constexpr int kWarmup = 3, kReps = 20, kB2bLaunches = 20, kB2bTrials = 5;

struct Variant {
  std::string label, cubin, kernel;
  unsigned bx = 0, by = 1, cluster = 1, smem = 0;
  std::string abi;  // "" (ligerd: one params struct), "liger_rms" or "liger_ln" (Triton's list)
};

Variant Parse(const char* arg) {
  Variant v;
  std::string s(arg);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string kv = s.substr(pos, end - pos);
    const size_t eq = kv.find('=');
    const std::string k = kv.substr(0, eq), val = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (k == "label") v.label = val;
    else if (k == "cubin") v.cubin = val;
    else if (k == "kernel") v.kernel = val;
    else if (k == "block") std::sscanf(val.c_str(), "%u.%u", &v.bx, &v.by);
    else if (k == "cluster") v.cluster = static_cast<unsigned>(std::atoi(val.c_str()));
    else if (k == "smem") v.smem = static_cast<unsigned>(std::atoi(val.c_str()));
    else if (k == "abi") v.abi = val;
    pos = end + 1;
  }
  return v;
}

// Fills n bf16 values with a deterministic pseudo-random pattern in [-4, 4): data-dependent
// clocks and the softmax's exponentials see realistic values, not constants.
void FillBf16(CUdeviceptr p, size_t n, unsigned seed) {
  std::vector<unsigned short> h(n);
  unsigned x = seed * 2654435761u + 1u;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = (static_cast<float>(x >> 8) / 16777216.f) * 8.f - 4.f;
    unsigned b;
    std::memcpy(&b, &f, 4);
    h[i] = static_cast<unsigned short>(b >> 16);
  }
  CU(cuMemcpyHtoD(p, h.data(), n * 2));
}

// FNV-1a over bytes copied back from the device: variants of one op that compute the same
// thing print the same hash (the per-row statistic or loss, and the first and last MiB of the
// output), a quick check that a faster variant is not a wrong one. The GPU tests are the proof.
unsigned long long HashDevice(std::initializer_list<std::pair<CUdeviceptr, size_t>> spans) {
  unsigned long long h = 1469598103934665603ull;
  for (const auto& [p, n] : spans) {
    std::vector<unsigned char> b(n);
    CU(cuMemcpyDtoH(b.data(), p, n));
    for (unsigned char c : b) h = (h ^ c) * 1099511628211ull;
  }
  return h;
}

float TimeMs(const std::vector<float>& v) {
  std::vector<float> s = v;
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

// Median ms of one launch: `samples` times, `per_sample` launches queued back to back between two
// events (per_sample 1 with a sync in between: each launch alone on an idle GPU).
template <class F>
float MedianMs(F&& launch, CUstream st, int per_sample, int samples) {
  CUevent a, b;
  CU(cuEventCreate(&a, 0));
  CU(cuEventCreate(&b, 0));
  for (int i = 0; i < kWarmup; ++i) launch();
  std::vector<float> t;
  for (int r = 0; r < samples; ++r) {
    CU(cuEventRecord(a, st));
    for (int i = 0; i < per_sample; ++i) launch();
    CU(cuEventRecord(b, st));
    CU(cuEventSynchronize(b));
    float ms = 0;
    CU(cuEventElapsedTime(&ms, a, b));
    t.push_back(ms / per_sample);
  }
  CU(cuEventDestroy(a));
  CU(cuEventDestroy(b));
  return TimeMs(t);
}
template <class F>
float Median(F&& launch, CUstream st) {
  return MedianMs(launch, st, 1, kReps);
}
template <class F>
float MedianBackToBack(F&& launch, CUstream st) {
  return MedianMs(launch, st, kB2bLaunches, kB2bTrials);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::printf("usage: %s rms|ln|ce ROWS COLS label=..,cubin=..,kernel=..,block=X.Y[,cluster=C,smem=S] ...\n", argv[0]);
    return 2;
  }
  const std::string op = argv[1];
  const long long rows = std::atoll(argv[2]), cols = std::atoll(argv[3]);
  CU(cuInit(0));
  CUdevice dev;
  CU(cuDeviceGet(&dev, 0));
  CUcontext ctx;
  CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CU(cuCtxSetCurrent(ctx));
  CUstream st;
  CU(cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));

  const size_t elems = static_cast<size_t>(rows) * cols, bytes = elems * 2;
  CUdeviceptr x, y, w, b, stat1, stat2, tgt, denom, loss;
  CU(cuMemAlloc(&x, bytes));
  CU(cuMemAlloc(&y, bytes));
  CU(cuMemAlloc(&w, cols * 2));
  CU(cuMemAlloc(&b, cols * 2));
  CU(cuMemAlloc(&stat1, rows * 4));
  CU(cuMemAlloc(&stat2, rows * 4));
  CU(cuMemAlloc(&loss, rows * 4));
  CU(cuMemAlloc(&tgt, rows * 8));
  CU(cuMemAlloc(&denom, 16));
  long long counted = 0;  // ce: rows not ignored
  FillBf16(x, elems, 1);
  FillBf16(w, cols, 2);
  FillBf16(b, cols, 3);
  {
    // Every 17th row ignored (-100): the variants' ignored-row paths are timed and hashed too.
    std::vector<long long> t(rows);
    for (long long r = 0; r < rows; ++r) {
      t[r] = r % 17 == 5 ? -100 : (r * 7919) % cols;
      counted += t[r] != -100;
    }
    CU(cuMemcpyHtoD(tgt, t.data(), rows * 8));
    const float d[4] = {static_cast<float>(counted), static_cast<float>(counted), 0.f, 0.f};
    CU(cuMemcpyHtoD(denom, d, 16));
  }

  // The speed of light: read + write of the same bytes, twice (driver copy), best of the two.
  const float copy_ms = Median([&] { CU(cuMemcpyDtoDAsync(y, x, bytes, st)); }, st);
  const float copy_b2b_ms = MedianBackToBack([&] { CU(cuMemcpyDtoDAsync(y, x, bytes, st)); }, st);
  const double copy_gbps = 2.0 * bytes / copy_ms / 1e6;
  std::printf("%s rows=%lld cols=%lld bf16: copy %.4f ms %.0f GB/s, b2b %.4f ms\n", op.c_str(), rows, cols, copy_ms,
              copy_gbps, copy_b2b_ms);

  LigerdRmsNormFwdParams rp{};
  rp.x = reinterpret_cast<const void*>(x); rp.w = reinterpret_cast<const void*>(w);
  rp.y = reinterpret_cast<void*>(y); rp.rstd = reinterpret_cast<float*>(stat1);
  rp.rows = rows; rp.x_stride = cols; rp.y_stride = cols; rp.n = static_cast<int>(cols);
  rp.eps = 1e-6f; rp.offset = 0.f;
  LigerdLayerNormFwdParams lp{};
  lp.x = rp.x; lp.w = rp.w; lp.b = reinterpret_cast<const void*>(b); lp.y = rp.y;
  lp.mean = reinterpret_cast<float*>(stat1); lp.rstd = reinterpret_cast<float*>(stat2);
  lp.rows = rows; lp.x_stride = cols; lp.y_stride = cols; lp.n = static_cast<int>(cols); lp.eps = 1e-6f;
  LigerdCeFwdParams cp{};
  cp.x = rp.x; cp.dx = rp.y; cp.target = reinterpret_cast<const long long*>(tgt);
  cp.denom = reinterpret_cast<const float*>(denom); cp.loss = reinterpret_cast<float*>(loss);
  cp.rows = rows; cp.cols = cols; cp.x_stride = cols; cp.dx_stride = cols; cp.target_stride = 1;
  cp.ignore_index = -100; cp.reduction = LIGERD_CE_REDUCE_MEAN;
  void* params = op == "rms" ? static_cast<void*>(&rp) : op == "ln" ? static_cast<void*>(&lp) : static_cast<void*>(&cp);
  void* args[] = {params};
  // Triton's parameters, in the order of Liger's signature with its stride-1 arguments folded
  // into constants, then Triton's two scratch pointers (global, profile: unused, 0).
  unsigned t_ystride = static_cast<unsigned>(cols), t_xstride = t_ystride, t_cols = t_ystride;
  float t_eps = 1e-6f, t_offset = 0.f;
  CUdeviceptr t_scratch = 0;
  void* liger_rms_args[] = {&y, &t_ystride, &x, &t_xstride, &w, &stat1, &t_cols, &t_eps, &t_offset, &t_scratch,
                            &t_scratch};
  void* liger_ln_args[] = {&y, &t_ystride, &x, &t_xstride, &w, &b, &stat1, &stat2, &t_cols, &t_eps, &t_scratch,
                           &t_scratch};

  for (int i = 4; i < argc; ++i) {
    const Variant v = Parse(argv[i]);
    CUmodule mod;
    CU(cuModuleLoad(&mod, v.cubin.c_str()));
    CUfunction fn;
    CU(cuModuleGetFunction(&fn, mod, v.kernel.c_str()));
    CUlaunchConfig lc{};
    CUlaunchAttribute attr[1];
    lc.blockDimX = v.bx; lc.blockDimY = v.by; lc.blockDimZ = 1; lc.gridDimY = 1; lc.gridDimZ = 1;
    lc.hStream = st;
    lc.sharedMemBytes = v.smem;
    if (v.smem > 48 * 1024) CU(cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, v.smem));
    if (op == "ce") {
      attr[0].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
      attr[0].value.clusterDim.x = v.cluster; attr[0].value.clusterDim.y = 1; attr[0].value.clusterDim.z = 1;
      lc.attrs = attr; lc.numAttrs = 1;
      int clusters = 0;
      lc.gridDimX = v.cluster * 1024;  // the occupancy query wants a grid of whole clusters
      if (cuOccupancyMaxActiveClusters(&clusters, fn, &lc) != CUDA_SUCCESS || clusters < 1) {
        std::printf("%-28s cluster %u x %u threads, %u bytes: no cluster fits\n", v.label.c_str(), v.cluster, v.bx, v.smem);
        CU(cuModuleUnload(mod));
        continue;
      }
      lc.gridDimX = static_cast<unsigned>(std::min<long long>(rows, clusters)) * v.cluster;
    } else {
      lc.gridDimX = static_cast<unsigned>((rows + v.by - 1) / v.by);
    }
    // A variant whose bounds refuse this block (or whose cluster cannot be resident) is reported
    // and skipped, not fatal: the matrix in run_variants.sh crosses every switch with every shape.
    void** kargs = v.abi == "liger_rms" ? liger_rms_args : v.abi == "liger_ln" ? liger_ln_args : args;
    if (!v.abi.empty() && (v.abi != "liger_rms" || op != "rms") && (v.abi != "liger_ln" || op != "ln")) {
      std::printf("%-28s abi=%s does not fit op %s\n", v.label.c_str(), v.abi.c_str(), op.c_str());
      CU(cuModuleUnload(mod));
      continue;
    }
    const CUresult probe = cuLaunchKernelEx(&lc, fn, kargs, nullptr);
    if (probe != CUDA_SUCCESS) {
      const char* why = nullptr;
      cuGetErrorString(probe, &why);
      std::printf("%-28s %-22s block %4ux%-2u: not launchable (%s)\n", v.label.c_str(), v.kernel.c_str(), v.bx, v.by,
                  why ? why : "?");
      CU(cuModuleUnload(mod));
      continue;
    }
    const float ms = Median([&] { CU(cuLaunchKernelEx(&lc, fn, kargs, nullptr)); }, st);
    const float b2b_ms = MedianBackToBack([&] { CU(cuLaunchKernelEx(&lc, fn, kargs, nullptr)); }, st);
    // The op's minimal bytes: read and write every element; ce reads no ignored row.
    const double op_bytes = op == "ce" ? static_cast<double>(counted + rows) * cols * 2 : 2.0 * bytes;
    const double gbps = op_bytes / ms / 1e6;
    const size_t mib = std::min<size_t>(bytes, 1 << 20);
    const unsigned long long hash =
        HashDevice({{op == "ce" ? loss : stat1, rows * 4}, {y, mib}, {y + bytes - mib, mib}});
    std::printf("%-28s %-22s block %4ux%-2u grid %6u cluster %u smem %6u: %.4f ms %6.0f GB/s %5.1f%% of copy  hash %016llx"
                "  b2b %.4f ms\n",
                v.label.c_str(), v.kernel.c_str(), v.bx, v.by, lc.gridDimX, v.cluster, v.smem, ms, gbps,
                100.0 * gbps / copy_gbps, hash, b2b_ms);
    CU(cuMemsetD8Async(y, 0xff, bytes, st));  // poison: the next variant must write every byte it is hashed on
    CU(cuMemsetD8Async(op == "ce" ? loss : stat1, 0xff, rows * 4, st));
    CU(cuModuleUnload(mod));
  }
  return 0;
}
