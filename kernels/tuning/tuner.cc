// See tuner.h.
#include "kernels/tuning/tuner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda_driver.h"
#include "kernels/status_macros.h"

namespace ligerd::kernels {
namespace {

// Limits of a tuning request: far beyond any LLM layer, small enough that a typo is refused
// before it asks for terabytes of scratch.
constexpr int64_t kMaxRows = int64_t{1} << 31;
constexpr int64_t kMaxCols = int64_t{1} << 30;
constexpr int64_t kMaxElements = int64_t{1} << 33;
constexpr int kMaxTrials = 100;
// A timed trial runs back-to-back launches for about this long, so event resolution (~0.5 us)
// and launch gaps are noise, not signal.
constexpr double kTrialTargetMs = 1.0;
constexpr int kMaxReps = 200;
// Scratch may use at most this share of the free device memory.
constexpr double kMaxFreeShare = 0.9;
// Host staging buffer for the random fill (copied repeatedly into each scratch tensor).
constexpr size_t kFillChunkBytes = size_t{4} << 20;

// Random bit patterns of finite values with |x| in [0.25, 2) (positive: [0.5, 2)), built from
// sign / exponent / mantissa fields so no float conversion is needed for any dtype.
std::vector<uint8_t> RandomChunk(DType dtype, bool positive, uint64_t seed) {
  std::vector<uint8_t> out(kFillChunkBytes);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  const int bytes = DTypeBytes(dtype);
  for (size_t i = 0; i + bytes <= out.size(); i += bytes) {
    const uint64_t r = next();
    const uint32_t sign = positive ? 0u : static_cast<uint32_t>(r & 1);
    const uint32_t e = positive ? static_cast<uint32_t>((r >> 1) % 2) + 1 : static_cast<uint32_t>((r >> 1) % 3);
    if (dtype == DType::kFloat32) {
      const uint32_t v = (sign << 31) | ((125u + e) << 23) | static_cast<uint32_t>((r >> 8) & 0x7fffff);
      std::memcpy(&out[i], &v, 4);
    } else if (dtype == DType::kBFloat16) {
      const uint16_t v = static_cast<uint16_t>((sign << 15) | ((125u + e) << 7) | ((r >> 8) & 0x7f));
      std::memcpy(&out[i], &v, 2);
    } else if (dtype == DType::kFloat16) {
      const uint16_t v = static_cast<uint16_t>((sign << 15) | ((13u + e) << 10) | ((r >> 8) & 0x3ff));
      std::memcpy(&out[i], &v, 2);
    } else {
      std::memcpy(&out[i], &r, std::min<size_t>(bytes, 8));
    }
  }
  return out;
}

// Device memory, streams, events and the context push, released in reverse on every exit path.
struct Scratch {
  const DriverApi* drv = nullptr;
  bool pushed = false;
  CUdevice dev = 0;
  bool retained = false;
  CUstream stream = nullptr;
  CUevent start = nullptr, stop = nullptr;
  std::vector<CUdeviceptr> buffers;
  ~Scratch() {
    if (stream != nullptr) drv->cuStreamSynchronize(stream);
    for (CUdeviceptr p : buffers) drv->cuMemFree(p);
    if (start != nullptr) drv->cuEventDestroy(start);
    if (stop != nullptr) drv->cuEventDestroy(stop);
    if (stream != nullptr) drv->cuStreamDestroy(stream);
    if (pushed) {
      CUcontext ignored = nullptr;
      drv->cuCtxPopCurrent(&ignored);
    }
    if (retained) drv->cuDevicePrimaryCtxRelease(dev);
  }
};

absl::Status Fill(const DriverApi* drv, CUdeviceptr p, size_t bytes, const std::vector<uint8_t>& chunk) {
  for (size_t off = 0; off < bytes; off += chunk.size()) {
    const size_t n = std::min(chunk.size(), bytes - off);
    LIGERD_CU_CHECK(drv->cuMemcpyHtoD(p + off, chunk.data(), n));
  }
  return absl::OkStatus();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

absl::Status ValidateTuneRequest(const TuneRequest& r) {
  const OpSpec* spec = FindOp(r.op);
  if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown op '", r.op, "'"));
  if (!spec->candidates || !spec->tuning_problem || !spec->tuning_shape)
    return absl::InvalidArgumentError(absl::StrCat(r.op, ": this op has no tuning candidates (not tunable)"));
  if (r.dtype != DType::kFloat32 && r.dtype != DType::kBFloat16 && r.dtype != DType::kFloat16)
    return absl::InvalidArgumentError(absl::StrCat(r.op, ": dtype must be bf16, f16 or f32"));
  bool dtype_ok = false;
  for (DType d : spec->tensors.empty() ? std::vector<DType>{} : spec->tensors[0].dtypes) dtype_ok |= d == r.dtype;
  if (!dtype_ok) return absl::InvalidArgumentError(absl::StrCat(r.op, ": does not take ", DTypeName(r.dtype)));
  if (r.rows < 1 || r.rows > kMaxRows || r.cols < 1 || r.cols > kMaxCols)
    return absl::InvalidArgumentError(absl::StrCat(r.op, ": shape ", r.rows, "x", r.cols, " must be rows in 1..",
                                                   kMaxRows, " x cols in 1..", kMaxCols));
  if (r.rows * r.cols > kMaxElements)
    return absl::InvalidArgumentError(
        absl::StrCat(r.op, ": shape ", r.rows, "x", r.cols, " has more than ", kMaxElements, " elements"));
  if (r.trials < 1 || r.trials > kMaxTrials || r.warmup < 0 || r.warmup > kMaxTrials)
    return absl::InvalidArgumentError(absl::StrCat(r.op, ": trials must be 1..", kMaxTrials, ", warmup 0..", kMaxTrials));
  return absl::OkStatus();
}

absl::StatusOr<TuneReport> Tune(Executor& executor, const TuneRequest& request, const TuneProgressFn& progress) {
  LIGERD_RETURN_IF_ERROR(ValidateTuneRequest(request));
  const OpSpec& spec = *FindOp(request.op);
  const DeviceInfo& dev = executor.device_info();
  const TuningShape shape{request.dtype, request.rows, request.cols};
  LIGERD_ASSIGN_OR_RETURN(TuningProblem problem, spec.tuning_problem(shape));
  if (problem.tensors.size() != spec.tensors.size() || problem.scalars.size() != spec.scalars.size())
    return absl::InternalError(absl::StrCat(request.op, ": its tuning problem does not match its signature"));
  TuneReport report;
  report.key = MakeTuningKey(request.op, shape);
  const std::string label = absl::StrCat(request.op, " ", TuningDTypeName(request.dtype), " ", request.rows, "x",
                                         request.cols);
  auto say = [&](const std::string& line) -> absl::Status {
    if (progress && !progress(line)) return absl::CancelledError(absl::StrCat(label, ": tuning cancelled"));
    return absl::OkStatus();
  };

  LIGERD_ASSIGN_OR_RETURN(const DriverApi* drv, Driver());
  Scratch sc;
  sc.drv = drv;
  LIGERD_CU_CHECK(drv->cuDeviceGet(&sc.dev, dev.ordinal));
  CUcontext ctx = nullptr;
  LIGERD_CU_CHECK(drv->cuDevicePrimaryCtxRetain(&ctx, sc.dev));
  sc.retained = true;
  LIGERD_CU_CHECK(drv->cuCtxPushCurrent(ctx));
  sc.pushed = true;
  LIGERD_CU_CHECK(drv->cuStreamCreate(&sc.stream, CU_STREAM_NON_BLOCKING));
  LIGERD_CU_CHECK(drv->cuEventCreate(&sc.start, CU_EVENT_DEFAULT));
  LIGERD_CU_CHECK(drv->cuEventCreate(&sc.stop, CU_EVENT_DEFAULT));

  // Scratch tensors (contiguous, random).
  size_t total = 0;
  for (const ScratchTensor& t : problem.tensors) {
    if (!t.present) continue;
    size_t n = 1;
    for (int64_t s : t.sizes) n *= static_cast<size_t>(s);
    total += (n * DTypeBytes(t.dtype) + 255) / 256 * 256;
  }
  size_t free_bytes = 0, total_bytes = 0;
  LIGERD_CU_CHECK(drv->cuMemGetInfo(&free_bytes, &total_bytes));
  if (static_cast<double>(total) > kMaxFreeShare * static_cast<double>(free_bytes))
    return absl::ResourceExhaustedError(absl::StrCat(label, ": needs ", total >> 20, " MiB of scratch, only ",
                                                     free_bytes >> 20, " MiB of device memory are free"));
  std::vector<TensorView> views(problem.tensors.size());
  for (size_t i = 0; i < problem.tensors.size(); ++i) {
    const ScratchTensor& t = problem.tensors[i];
    if (!t.present) continue;
    TensorView& v = views[i];
    v.dtype = t.dtype;
    v.ndim = static_cast<int32_t>(t.sizes.size());
    v.device = dev.ordinal;
    int64_t stride = 1;
    for (int d = v.ndim - 1; d >= 0; --d) {
      v.sizes[d] = t.sizes[d];
      v.strides[d] = stride;
      stride *= t.sizes[d];
    }
    const size_t bytes = std::max<size_t>(static_cast<size_t>(stride) * DTypeBytes(t.dtype), 16);
    CUdeviceptr p = 0;
    LIGERD_CU_CHECK(drv->cuMemAlloc(&p, bytes));
    sc.buffers.push_back(p);
    LIGERD_RETURN_IF_ERROR(Fill(drv, p, bytes, RandomChunk(t.dtype, t.positive, i + 1)));
    v.data = reinterpret_cast<void*>(p);
  }

  // Default first, then the op's candidates (without duplicates of the default).
  LIGERD_ASSIGN_OR_RETURN(OpPlan base, executor.Plan(request.op, views, problem.scalars, nullptr, 0,
                                                     {.use_tuning_db = false, .check_workspace = false}));
  report.default_config = base.config;
  OpCall call;
  call.tensors = views;
  call.scalars = problem.scalars;
  std::vector<LaunchConfig> configs = {base.config};
  for (const LaunchConfig& c : spec.candidates(call, dev))
    if (!SameLaunchConfig(c, base.config)) configs.push_back(c);

  // One workspace big enough for every config.
  size_t ws_bytes = 0;
  for (const LaunchConfig& c : configs) {
    absl::StatusOr<OpPlan> p = executor.Plan(request.op, views, problem.scalars, nullptr, 0,
                                             {.use_tuning_db = false, .config = &c, .check_workspace = false});
    if (p.ok()) ws_bytes = std::max(ws_bytes, p->workspace_bytes);
  }
  void* ws = nullptr;
  if (ws_bytes > 0) {
    CUdeviceptr p = 0;
    LIGERD_CU_CHECK(drv->cuMemAlloc(&p, ws_bytes));
    sc.buffers.push_back(p);
    ws = reinterpret_cast<void*>(p);
  }

  LIGERD_RETURN_IF_ERROR(say(absl::StrCat(label, ": timing ", configs.size(), " configs (default first)")));
  auto time_config = [&](const LaunchConfig& c) -> absl::StatusOr<double> {
    LIGERD_ASSIGN_OR_RETURN(OpPlan plan, executor.Plan(request.op, views, problem.scalars, ws, ws_bytes,
                                                       {.use_tuning_db = false, .config = &c}));
    for (int w = 0; w < std::max(request.warmup, 1); ++w)
      LIGERD_RETURN_IF_ERROR(executor.LaunchPlan(request.op, plan, sc.stream));
    auto timed = [&](int reps) -> absl::StatusOr<double> {
      LIGERD_CU_CHECK(drv->cuEventRecord(sc.start, sc.stream));
      for (int r = 0; r < reps; ++r) LIGERD_RETURN_IF_ERROR(executor.LaunchPlan(request.op, plan, sc.stream));
      LIGERD_CU_CHECK(drv->cuEventRecord(sc.stop, sc.stream));
      LIGERD_CU_CHECK(drv->cuEventSynchronize(sc.stop));
      float ms = 0;
      LIGERD_CU_CHECK(drv->cuEventElapsedTime(&ms, sc.start, sc.stop));
      return static_cast<double>(ms) / reps;
    };
    LIGERD_ASSIGN_OR_RETURN(double once, timed(1));
    const int reps = std::clamp(static_cast<int>(std::ceil(kTrialTargetMs / std::max(once, 1e-4))), 1, kMaxReps);
    std::vector<double> trials;
    for (int t = 0; t < request.trials; ++t) {
      LIGERD_ASSIGN_OR_RETURN(double ms, timed(reps));
      trials.push_back(ms);
    }
    return Median(trials);
  };

  for (size_t i = 0; i < configs.size(); ++i) {
    CandidateTiming timing;
    timing.config = configs[i];
    absl::StatusOr<double> ms = time_config(configs[i]);
    if (ms.ok()) {
      timing.ms = *ms;
    } else {
      // A config the op refuses is skipped; a failed launch may have poisoned the context
      // (sticky errors), so anything past planning ends the tune.
      timing.ms = -1;
      timing.error = std::string(ms.status().message());
      ++report.failed;
      if (i == 0 || !absl::IsInvalidArgument(ms.status()))
        return absl::Status(ms.status().code(), absl::StrCat(label, ": ", FormatLaunchConfig(configs[i]), ": ",
                                                             ms.status().message()));
    }
    report.timings.push_back(timing);
    LIGERD_RETURN_IF_ERROR(say(absl::StrCat(label, ": ", i + 1, "/", configs.size(), " ",
                                            FormatLaunchConfig(configs[i]), ": ",
                                            timing.ms >= 0 ? absl::StrFormat("%.4f ms", timing.ms)
                                                           : absl::StrCat("skipped (", timing.error, ")"))));
  }
  report.candidates = static_cast<int>(report.timings.size());
  report.default_ms = report.timings[0].ms;
  report.best_config = report.default_config;
  report.best_ms = report.default_ms;
  for (const CandidateTiming& t : report.timings)
    if (t.ms >= 0 && t.ms < report.best_ms) {
      report.best_ms = t.ms;
      report.best_config = t.config;
    }
  if (report.best_ms > report.default_ms * (1.0 - kMinGain)) {  // within noise: keep the default
    report.best_config = report.default_config;
    report.best_ms = report.default_ms;
  }

  if (request.store) {
    std::shared_ptr<TuningDb> db = executor.tuning_db();
    if (db == nullptr)
      return absl::FailedPreconditionError(absl::StrCat(label, ": this executor has no tuning DB (disabled, or its "
                                                        "directory is unusable; see the log)"));
    TuningEntry e;
    e.key = report.key;
    e.config = report.best_config;
    e.default_ms = report.default_ms;
    e.tuned_ms = report.best_ms;
    e.tuned_rows = request.rows;
    e.candidates = report.candidates;
    e.unix_time = static_cast<int64_t>(std::time(nullptr));
    LIGERD_RETURN_IF_ERROR(db->Store({e}));
    report.stored = true;
  }
  return report;
}

}  // namespace ligerd::kernels
