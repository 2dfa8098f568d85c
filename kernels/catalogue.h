// The op catalogue: one OpSpec per op (its tensors, scalars, kernel sources and every kernel
// variant it can compile) and the pure planning step that checks a call and chooses what to
// launch. Nothing here touches CUDA, so argument checking is testable without a GPU or driver;
// the executor (executor.cc) turns an OpPlan into driver calls.
//
// Each op is declared once, in its entry (kernels/ops/<family>.toml): name, doc, named tensors and
// scalars, kernel source, launch bounds. The build generates from it the op's base OpSpec and
// named indices (kernels/ops/entries/<family>.h, namespace entry::<op>) and the list of all ops;
// the family's .cc adds what cannot be declared (variants, planning, tuning hooks) and defines the
// op's accessor with LIGERD_DEFINE_OP. kernels/README.md, "Adding an op", walks through it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/jit/compile_request.h"
#include "kernels/tensor_view.h"

namespace ligerd::kernels {

// A kernel's launch bound, as the op entry declares it: the NVRTC source gets
// -DLIGERD_LB_<KEY>=__launch_bounds__(max_threads[, min_blocks]) and the planner reads the same
// numbers (MaxThreadsOf), so the two cannot disagree.
struct LaunchBound {
  std::string_view key;  // "i2", "loop", ...: the kernel (or kernel group) it bounds
  int max_threads = 0;
  int min_blocks = 0;    // minimum resident blocks per SM asked of the compiler; 0 = none
};

// The bound's max_threads of `key`; 0 when the entry declares none (a programming error the
// op's plan tests catch).
constexpr int MaxThreadsOf(std::span<const LaunchBound> bounds, std::string_view key) {
  for (const LaunchBound& b : bounds)
    if (b.key == key) return b.max_threads;
  return 0;
}

// The smallest max_threads of all of an op's kernels (ops whose planner takes one block limit);
// 1024, CUDA's largest block, for an op with no bounds.
constexpr int SmallestBound(std::span<const LaunchBound> bounds) {
  int m = 1024;
  for (const LaunchBound& b : bounds) m = b.max_threads < m ? b.max_threads : m;
  return m;
}

struct TensorParam {
  std::string name;
  bool output = false;
  bool optional = false;
  std::vector<DType> dtypes;  // allowed dtypes
  std::string may_alias;      // an input this output may be exactly (e.g. dX over dY), else ""
};

// One compile unit: the op's sources built with these -D defines. `tag` names it in cache file
// names and messages (e.g. "xbf16.wbf16.llama").
struct KernelVariant {
  std::string tag;
  std::vector<std::string> defines;
};

// How a row-wise kernel is launched. Ops choose one with a default heuristic; the autotuner
// (kernels/tuning/) measures the op's candidates and the executor passes the fastest in
// OpCall::tuned, which the op checks like any other input (a config it rejects is ignored).
struct LaunchConfig {
  int threads_per_row = 0;  // blockDim.x: a power of two <= 32, or a multiple of 32 <= 1024
  int rows_per_block = 0;   // blockDim.y
  int iters = 0;            // vectors per thread held in registers; 0 = streaming (loop) kernel
  bool vectorized = true;   // 16-byte accesses (needs aligned rows) vs one element per access
  int grid = 0;             // blocks; 0 = the op's default (per row group, or persistent)
  int cluster = 1;          // CTAs per thread-block cluster (sm_90+); 1 = no cluster
  int shared_bytes = 0;     // dynamic shared memory per block the config asks for; 0 = none
};

struct KernelLaunch {
  std::string kernel;  // extern "C" name in the variant's module
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned shared_bytes = 0;     // dynamic shared memory (above 48 KiB the executor opts in)
  // CTAs per thread-block cluster along x (grid[0] a multiple of it): the executor launches with
  // cuLaunchKernelEx and CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION. 0 = a plain cuLaunchKernel.
  unsigned cluster = 0;
  std::vector<uint8_t> params;   // the kernel's single by-value parameter struct
};

struct OpPlan {
  KernelVariant variant;
  std::vector<KernelLaunch> launches;  // in stream order; may be empty (nothing to do)
  size_t workspace_bytes = 0;
  LaunchConfig config;  // what was chosen (for telemetry and the tuner)
  bool tuned = false;   // set by the executor: `config` came from the tuning DB
};

// What planning needs to know about the device. The executor fills it from the driver; tests
// fake it.
struct DeviceInfo {
  int ordinal = 0;
  std::string name;  // GPU model, e.g. "NVIDIA H100 80GB HBM3" (part of the tuning key)
  int sm_count = 0;
  int compute_capability = 0;  // 90 for sm_90
  // Resident blocks per SM of `kernel` (in `op`'s module for `variant`) at this block size.
  std::function<absl::StatusOr<int>(std::string_view op, const KernelVariant& variant,
                                    std::string_view kernel, int block_threads,
                                    size_t dynamic_shared_bytes)>
      blocks_per_sm;
  // Thread-block clusters of `cluster_size` CTAs of `kernel` (at this block size and dynamic
  // shared memory) the whole GPU holds at once (cuOccupancyMaxActiveClusters: it knows that a
  // cluster's CTAs share one GPC). Optional: without it planners estimate
  // floor(sm_count * blocks_per_sm / cluster_size).
  std::function<absl::StatusOr<int>(std::string_view op, const KernelVariant& variant,
                                    std::string_view kernel, int block_threads,
                                    size_t dynamic_shared_bytes, int cluster_size)>
      active_clusters;
};

struct OpCall {
  std::span<const TensorView> tensors;  // positional, as OpSpec::tensors lists them
  std::span<const double> scalars;      // positional, as OpSpec::scalars lists them
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool check_workspace = true;          // false when only asking how much is needed
  const LaunchConfig* tuned = nullptr;  // autotuner's choice, or null for the default
};

// ---- Autotuning hooks (see kernels/tuning/README.md) -----------------------------------------
// What a call's tuning bucket is made from: its element type and its problem as rows x cols
// (for row-wise ops: rows = product of the leading dims, cols = the row width / hidden size).
struct TuningShape {
  DType dtype = DType::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
};

// One tensor of a tuning problem. The tuner allocates it (contiguous, fresh device memory, never
// a user tensor), fills it with random values and passes it positionally like a real call.
struct ScratchTensor {
  bool present = true;            // false: an absent optional tensor
  DType dtype = DType::kFloat32;
  std::vector<int64_t> sizes;
  bool positive = false;          // fill with values in [0.5, 2) (e.g. RSTD), else [-2, 2)
};

// A call the tuner can time for a TuningShape: tensors and scalars in OpSpec order.
struct TuningProblem {
  std::vector<ScratchTensor> tensors;
  std::vector<double> scalars;
};

// TuningShape of a row-wise call from tensor `index` (the op's main input): its dtype, rows =
// product of its leading dims, cols = its last dim. nullopt when the tensor is absent or 0-d.
std::function<std::optional<TuningShape>(const OpCall&)> RowTuningShape(int index);

struct OpSpec {
  std::string name;
  std::string doc;
  std::vector<TensorParam> tensors;
  std::vector<std::string> scalars;
  SourceFile main;                   // NVRTC source
  std::vector<SourceFile> headers;   // everything it includes
  std::vector<std::string> options;  // NVRTC options common to every variant
  std::vector<KernelVariant> variants;  // the full set, for precompile
  // Op-specific checks and planning, called after the generic checks (count, dtype, rank,
  // strides, device, overlap) passed.
  std::function<absl::StatusOr<OpPlan>(const OpSpec& spec, const OpCall& call,
                                       const DeviceInfo& device)>
      plan;

  // Autotuning (optional; an op that leaves `candidates` empty is simply never tuned).
  // To make an op tunable (a few lines in its .cc, see rms_norm.cc / glu.cc):
  //   candidates      every legal LaunchConfig worth timing for this call on this device:
  //                   block sizes, vectors per thread, grids. Each one must pass the op's own
  //                   check of OpCall::tuned (tests/kernels/tuning_test.cc plans every one);
  //                   the default config need not be listed (the tuner always times it).
  //   tuning_shape    the call's bucket input (usually RowTuningShape(<main input>)); nullopt =
  //                   this call is not tuned.
  //   tuning_problem  scratch tensors + scalars of a representative call for a TuningShape
  //                   (the common variant: e.g. weight present, default casting mode).
  // The bucket key is (op, dtype, rows rounded up to a power of two, exact cols, GPU model +
  // SM count + compute capability); see kernels/tuning/tuning_db.h.
  std::function<std::vector<LaunchConfig>(const OpCall& call, const DeviceInfo& device)> candidates;
  std::function<std::optional<TuningShape>(const OpCall& call)> tuning_shape;
  std::function<absl::StatusOr<TuningProblem>(const TuningShape& shape)> tuning_problem;
};

// Defines `const OpSpec& OpSpec_<name>()`, the accessor the generated all_ops.h declares for each
// op entry, built once from MAKE (an expression giving the OpSpec, which starts from the entry's
// entry::<name>::BaseSpec()).
#define LIGERD_DEFINE_OP(NAME, MAKE)                   \
  const OpSpec& OpSpec_##NAME() {                      \
    static const OpSpec* spec = new OpSpec(MAKE);      \
    return *spec;                                      \
  }

// Every op, in entry order (kernels/ops/*.toml by file name, then order in the file).
const std::vector<const OpSpec*>& AllOps();
const OpSpec* FindOp(std::string_view name);

struct OpInfo {
  std::string name;
  std::string doc;
  size_t variant_count = 0;
  std::vector<std::string> tensors;  // "X", "W?" (optional), "Y->" (output)
  std::vector<std::string> scalars;
};
// The catalogue as the daemon's Info service reports it.
std::vector<OpInfo> ListOps();

// Generic checks, then the op's plan. INVALID_ARGUMENT messages start with the op name and
// name the tensor, e.g. "rms_norm_fwd: tensor 'W' has 4095 elements, expected 4096 (hidden
// size of X)"; NOT_FOUND for an unknown op.
absl::StatusOr<OpPlan> PlanOp(std::string_view op, const OpCall& call, const DeviceInfo& device);

// The compile unit for one variant of `spec` on `arch` ("sm_90", "compute_90").
CompileRequest MakeCompileRequest(const OpSpec& spec, const KernelVariant& variant,
                                  std::string_view arch);

}  // namespace ligerd::kernels
