// Executor: catalogue plan -> JIT-cached module -> cuLaunchKernel, and cuBLASLt for a plan's GEMM
// steps (kernels/blas/). See executor.h.
#include "kernels/executor.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/default_paths.h"
#include "kernels/blas/gemm_params.h"
#include "kernels/blas/lt_gemm.h"
#include "kernels/catalogue.h"
#include "kernels/cuda_driver.h"
#include "kernels/jit/jit_cache.h"
#include "kernels/jit/nvrtc_compiler.h"
#include "kernels/plan_cache.h"
#include "kernels/status_macros.h"
#include "kernels/tuning/tuning_db.h"

namespace ligerd::kernels {
namespace {

// Oldest GPU the kernels support: they use sm_80 conversion instructions (bf16, packed x2).
constexpr int kMinComputeCapability = 80;

// A loaded module; unloaded when dropped (errors ignored: the context may already be gone).
class Module {
 public:
  Module(const DriverApi* drv, CUmodule m) : drv_(drv), module_(m) {}
  ~Module() {
    if (module_ != nullptr) drv_->cuModuleUnload(module_);
  }
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  CUmodule get() const { return module_; }
  // Functions looked up so far, by name (guarded by the executor's mutex).
  absl::flat_hash_map<std::string, CUfunction> functions;

 private:
  const DriverApi* drv_;
  CUmodule module_;
};

class ExecutorImpl final : public Executor {
 public:
  ExecutorImpl(const DriverApi* drv, std::shared_ptr<JitCache> cache, int device, std::string arch,
               int sm_count, int cc, std::string name, std::shared_ptr<TuningDb> tuning, CUdevice cu_device)
      : drv_(drv), cache_(std::move(cache)), arch_(std::move(arch)), cu_device_(cu_device),
        planner_(MakeDeviceInfo(device, sm_count, cc, std::move(name)), std::move(tuning)) {}

  absl::StatusOr<size_t> WorkspaceBytes(std::string_view op, std::span<const TensorView> tensors,
                                        std::span<const double> scalars) override {
    LIGERD_ASSIGN_OR_RETURN(OpPlan plan, Plan(op, tensors, scalars, nullptr, 0, {.check_workspace = false}));
    return plan.workspace_bytes;
  }

  absl::Status Launch(std::string_view op, std::span<const TensorView> tensors,
                      std::span<const double> scalars, void* workspace, size_t workspace_bytes,
                      CUstream stream) override {
    // Every check happens here, before anything touches the GPU: PlanOp on the first call with
    // this geometry, a cached plan with this call's addresses patched in afterwards (a call
    // with the same geometry passes the same checks; see plan_cache.h).
    LIGERD_ASSIGN_OR_RETURN(OpPlan plan, Plan(op, tensors, scalars, workspace, workspace_bytes, {}));
    return LaunchPlan(op, plan, stream);
  }

  absl::StatusOr<OpPlan> Plan(std::string_view op, std::span<const TensorView> tensors,
                              std::span<const double> scalars, void* workspace, size_t workspace_bytes,
                              const PlanOptions& options) override {
    // The plan cache and the tuning DB's configs (kernels/planner.h): no driver call in it.
    return planner_.Plan(op, tensors, scalars, workspace, workspace_bytes, options);
  }

  absl::Status LaunchPlan(std::string_view op, const OpPlan& plan, CUstream stream) override {
    for (const KernelLaunch& k : plan.launches) {
      if (k.kernel == kGemmLaunchName) {
        LIGERD_RETURN_IF_ERROR(RunGemm(op, k, stream));
        continue;
      }
      LIGERD_ASSIGN_OR_RETURN(CUfunction fn, Function(op, plan.variant, k.kernel));
      if (k.shared_bytes > 0) LIGERD_RETURN_IF_ERROR(AllowDynamicShared(fn, k.shared_bytes));
      void* args[] = {const_cast<uint8_t*>(k.params.data())};
      if (k.cluster == 0) {
        LIGERD_CU_CHECK(drv_->cuLaunchKernel(fn, k.grid[0], k.grid[1], k.grid[2], k.block[0],
                                             k.block[1], k.block[2], k.shared_bytes, stream, args,
                                             nullptr));
        continue;
      }
      CUlaunchAttribute attr;
      std::memset(&attr, 0, sizeof(attr));
      attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
      attr.value.clusterDim.x = k.cluster;
      attr.value.clusterDim.y = 1;
      attr.value.clusterDim.z = 1;
      CUlaunchConfig cfg;
      std::memset(&cfg, 0, sizeof(cfg));
      cfg.gridDimX = k.grid[0];
      cfg.gridDimY = k.grid[1];
      cfg.gridDimZ = k.grid[2];
      cfg.blockDimX = k.block[0];
      cfg.blockDimY = k.block[1];
      cfg.blockDimZ = k.block[2];
      cfg.sharedMemBytes = k.shared_bytes;
      cfg.hStream = stream;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      LIGERD_CU_CHECK(drv_->cuLaunchKernelEx(&cfg, fn, args, nullptr));
    }
    return absl::OkStatus();
  }

  // Loaded modules belong to their context: unload them while the primary context still lives,
  // then drop our hold on it (see Create).
  ~ExecutorImpl() override {
    {
      absl::MutexLock lock(&mu_);
      modules_.clear();
      gemm_.reset();
    }
    drv_->cuDevicePrimaryCtxRelease(cu_device_);
  }

  const DeviceInfo& device_info() const override { return planner_.device_info(); }
  std::shared_ptr<TuningDb> tuning_db() const override { return planner_.tuning_db(); }

 private:
  // The planner's view of this GPU; its occupancy queries load the kernels (this executor's).
  DeviceInfo MakeDeviceInfo(int device, int sm_count, int cc, std::string name) {
    DeviceInfo info;
    info.ordinal = device;
    info.name = std::move(name);
    info.sm_count = sm_count;
    info.compute_capability = cc;
    info.blocks_per_sm = [this](std::string_view op, const KernelVariant& v,
                                std::string_view kernel, int threads, size_t smem) {
      return BlocksPerSm(op, v, kernel, threads, smem);
    };
    info.active_clusters = [this](std::string_view op, const KernelVariant& v, std::string_view kernel,
                                  int threads, size_t smem, int cluster) {
      return ActiveClusters(op, v, kernel, threads, smem, cluster);
    };
    return info;
  }

  absl::Status RunGemm(std::string_view op, const KernelLaunch& k, CUstream stream) {
    const std::string name(op);
    GemmParams p;
    if (k.params.size() != sizeof(p))
      return absl::InternalError(absl::StrCat(name, ": malformed GEMM step (", k.params.size(), " bytes)"));
    std::memcpy(&p, k.params.data(), sizeof(p));
    LIGERD_ASSIGN_OR_RETURN(LtGemm * gemm, Gemm());
    return gemm->Run(name.c_str(), p, stream);
  }

  // cuBLASLt, initialised by the first GEMM (see lt_gemm.h).
  absl::StatusOr<LtGemm*> Gemm() {
    absl::MutexLock lock(&mu_);
    if (gemm_ == nullptr) {
      LIGERD_ASSIGN_OR_RETURN(gemm_, LtGemm::Create(drv_));
    }
    return gemm_.get();
  }

  // Dynamic shared memory beyond the default 48 KiB needs the function's opt-in
  // (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES); set once per function to the largest
  // amount asked for so far, so the launch path only does a lookup. Any nonzero amount goes
  // through here (static shared memory lowers the 48 KiB that works without it).
  absl::Status AllowDynamicShared(CUfunction fn, size_t bytes) {
    {
      absl::MutexLock lock(&mu_);
      auto it = dynamic_shared_.find(fn);
      if (it != dynamic_shared_.end() && it->second >= bytes) return absl::OkStatus();
    }
    LIGERD_CU_CHECK(drv_->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                             static_cast<int>(bytes)));
    absl::MutexLock lock(&mu_);
    size_t& set = dynamic_shared_[fn];
    if (bytes > set) set = bytes;
    return absl::OkStatus();
  }

  absl::StatusOr<int> ActiveClusters(std::string_view op, const KernelVariant& v, std::string_view kernel,
                                     int threads, size_t smem, int cluster) {
    LIGERD_ASSIGN_OR_RETURN(CUfunction fn, Function(op, v, kernel));
    if (cluster < 1) return absl::InvalidArgumentError(absl::StrCat("cluster of ", cluster, " CTAs"));
    const auto key = std::make_tuple(fn, threads, smem, cluster);
    {
      absl::MutexLock lock(&mu_);
      auto it = clusters_.find(key);
      if (it != clusters_.end()) return it->second;
    }
    if (smem > 0) LIGERD_RETURN_IF_ERROR(AllowDynamicShared(fn, smem));
    CUlaunchAttribute attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = static_cast<unsigned>(cluster);
    attr.value.clusterDim.y = 1;
    attr.value.clusterDim.z = 1;
    CUlaunchConfig cfg;
    std::memset(&cfg, 0, sizeof(cfg));
    cfg.gridDimX = static_cast<unsigned>(cluster);  // one cluster's worth: only the shape matters
    cfg.gridDimY = 1;
    cfg.gridDimZ = 1;
    cfg.blockDimX = static_cast<unsigned>(threads);
    cfg.blockDimY = 1;
    cfg.blockDimZ = 1;
    cfg.sharedMemBytes = static_cast<unsigned>(smem);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    LIGERD_CU_CHECK(drv_->cuOccupancyMaxActiveClusters(&clusters, fn, &cfg));
    absl::MutexLock lock(&mu_);
    clusters_[key] = clusters;
    return clusters;
  }

  absl::StatusOr<int> BlocksPerSm(std::string_view op, const KernelVariant& v,
                                  std::string_view kernel, int threads, size_t smem) {
    LIGERD_ASSIGN_OR_RETURN(CUfunction fn, Function(op, v, kernel));
    if (smem > 0) LIGERD_RETURN_IF_ERROR(AllowDynamicShared(fn, smem));
    const auto key = std::make_tuple(fn, threads, smem);
    {
      absl::MutexLock lock(&mu_);
      auto it = occupancy_.find(key);
      if (it != occupancy_.end()) return it->second;
    }
    int blocks = 0;
    LIGERD_CU_CHECK(drv_->cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fn, threads, smem));
    absl::MutexLock lock(&mu_);
    occupancy_[key] = blocks;
    return blocks;
  }

  // The CUfunction for `kernel` in the current context's copy of the variant's module.
  absl::StatusOr<CUfunction> Function(std::string_view op, const KernelVariant& variant,
                                      std::string_view kernel) {
    const std::string op_name(op);
    const std::string name(kernel);
    CUcontext ctx = nullptr;
    LIGERD_CU_CHECK(drv_->cuCtxGetCurrent(&ctx));
    if (ctx == nullptr)
      return absl::FailedPreconditionError(absl::StrCat(
          op_name, ": no CUDA context is current on this thread (device ", planner_.device_info().ordinal, ")"));
    const auto module_key = std::make_pair(ctx, absl::StrCat(op_name, "/", variant.tag));
    {
      absl::MutexLock lock(&mu_);
      auto it = modules_.find(module_key);
      if (it != modules_.end()) {
        auto fit = it->second->functions.find(name);
        if (fit != it->second->functions.end()) return fit->second;
      }
    }
    CUdevice ctx_device = 0;
    LIGERD_CU_CHECK(drv_->cuCtxGetDevice(&ctx_device));
    if (ctx_device != planner_.device_info().ordinal)
      return absl::FailedPreconditionError(absl::StrCat(op_name, ": the current CUDA context is on device ",
                                                        ctx_device, ", this executor runs on device ",
                                                        planner_.device_info().ordinal));
    // Compile or fetch outside our lock: it may take seconds and the cache has its own.
    const OpSpec* spec = FindOp(op);
    if (spec == nullptr) return absl::NotFoundError(absl::StrCat("unknown op '", op_name, "'"));
    LIGERD_ASSIGN_OR_RETURN(std::shared_ptr<const CompiledModule> image,
                            cache_->Get(MakeCompileRequest(*spec, variant, arch_)));
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Module>& mod = modules_[module_key];
    if (mod == nullptr) {
      CUmodule m = nullptr;
      LIGERD_CU_CHECK(drv_->cuModuleLoadData(&m, image->image.data()));
      mod = std::make_unique<Module>(drv_, m);
    }
    auto fit = mod->functions.find(name);
    if (fit != mod->functions.end()) return fit->second;
    CUfunction fn = nullptr;
    LIGERD_CU_CHECK(drv_->cuModuleGetFunction(&fn, mod->get(), name.c_str()));
    mod->functions.emplace(name, fn);
    return fn;
  }

  const DriverApi* const drv_;
  const std::shared_ptr<JitCache> cache_;
  const std::string arch_;
  const CUdevice cu_device_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<CUcontext, std::string>, std::unique_ptr<Module>> modules_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::tuple<CUfunction, int, size_t>, int> occupancy_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::tuple<CUfunction, int, size_t, int>, int> clusters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<CUfunction, size_t> dynamic_shared_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<LtGemm> gemm_ ABSL_GUARDED_BY(mu_);
  // Last: its DeviceInfo's callbacks use the members above.
  Planner planner_;
};

// sm_XY when this NVRTC can build CUBIN for the GPU; otherwise PTX for the newest arch it
// knows (older than the GPU), which the driver JIT-compiles forward.
absl::StatusOr<std::string> ArchFor(int cc) {
  std::vector<int> supported = NvrtcSupportedArchs();
  if (supported.empty()) return absl::InternalError("NVRTC reports no supported GPU archs");
  for (int a : supported)
    if (a == cc) return absl::StrCat("sm_", cc);
  int best = 0;
  for (int a : supported)
    if (a <= cc) best = a;
  if (best == 0)
    return absl::FailedPreconditionError(absl::StrCat("GPU sm_", cc, " is older than any arch ",
                                                      NvrtcVersionTag(), " supports"));
  return absl::StrCat("compute_", best);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const ExecutorOptions& options) {
  LIGERD_ASSIGN_OR_RETURN(const DriverApi* drv, Driver());
  int count = 0;
  LIGERD_CU_CHECK(drv->cuDeviceGetCount(&count));
  if (options.device < 0 || options.device >= count)
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device,
                                                   " does not exist (", count, " visible)"));
  CUdevice dev = 0;
  LIGERD_CU_CHECK(drv->cuDeviceGet(&dev, options.device));
  int major = 0, minor = 0, sms = 0;
  LIGERD_CU_CHECK(drv->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  LIGERD_CU_CHECK(drv->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  LIGERD_CU_CHECK(drv->cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
  const int cc = major * 10 + minor;
  if (cc < kMinComputeCapability)
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", options.device, " is sm_", cc,
                                                      "; ligerd kernels need sm_",
                                                      kMinComputeCapability, " or newer"));
  LIGERD_ASSIGN_OR_RETURN(std::string arch, ArchFor(cc));
  char name[256] = {};
  LIGERD_CU_CHECK(drv->cuDeviceGetName(name, sizeof(name) - 1, dev));
  std::filesystem::path cache_dir = options.cache_dir;
  if (cache_dir.empty()) cache_dir = DefaultCacheDir(ProcessEnv(), ::geteuid());
  LIGERD_ASSIGN_OR_RETURN(std::shared_ptr<JitCache> cache, JitCache::Shared(cache_dir, options.trusted_cache_owner));
  // The tuning DB is an optimisation: an unusable one is logged and the defaults are used.
  std::shared_ptr<TuningDb> tuning;
  const char* env = std::getenv("LIGERD_TUNING_DB");
  const bool disabled = env != nullptr && (std::string_view(env) == "off" || std::string_view(env) == "0");
  if (options.use_tuning_db && !disabled) {
    absl::StatusOr<std::shared_ptr<TuningDb>> db = TuningDb::Shared(cache_dir, GpuIdentity{name, sms, cc},
                                                                           options.trusted_cache_owner);
    if (db.ok()) {
      tuning = *std::move(db);
    } else {
      TuningLog(absl::StrCat("tuning DB unavailable, using default launch configs: ", db.status().message()));
    }
  }
  // Hold the device's primary context for the executor's life. Modules and functions are cached
  // per context handle; if every other holder released the primary context (the last remote
  // session closing, a tune finishing) it would be destroyed and a later retain could return the
  // same handle for a new context, making the cached functions stale (CUDA_ERROR_INVALID_HANDLE).
  CUcontext primary = nullptr;
  LIGERD_CU_CHECK(drv->cuDevicePrimaryCtxRetain(&primary, dev));
  return std::unique_ptr<Executor>(new ExecutorImpl(drv, std::move(cache), options.device, std::move(arch), sms,
                                                    cc, name, std::move(tuning), dev));
}

}  // namespace ligerd::kernels
