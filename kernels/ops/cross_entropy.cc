// Cross-entropy, Liger-compatible (LigerCrossEntropyFunction): loss and the gradient of the
// logits in one forward pass, the gradient written over the logits. Tensors, scalars and launch
// bounds: the entries (cross_entropy.toml); kernels and numerics: cross_entropy.cuh. This file:
// the variants, the checks the entries cannot state, planning and tuning.
// cross_entropy_count
//   target: int64, 1-D (any stride); weight: fp32 [num_classes] contiguous; denom: fp32 [4]
//   (count, sum of weight[target], sum of weight, invalid targets: cross_entropy_params.h).
// cross_entropy_fwd
//   X: [rows, V] fp32/bf16/fp16 (leading dims flatten into rows with one stride, contiguous last
//   dim, any row alignment). target: int64 [rows] (any stride). weight: fp32 [V] contiguous.
//   denom: fp32 [4] from cross_entropy_count (over the same or a larger set of rows: the fused
//   linear loss counts all tokens once and runs this op per chunk). row_scale: fp32 [rows].
//   dX: X's shape and dtype, may be exactly X (in place); absent = loss only (one read).
//   loss, z_loss: fp32 [rows]; pred: int64 [rows]. reduction: 0 none, 1 mean, 2 sum.
//   softcap: 0 = none, else > 0. token_scaling: 0 or 1.
// cross_entropy_scale
//   G: [rows, cols] fp32/bf16/fp16, scaled in place by s (fp32, [1] or [rows]).
#include "kernels/ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/ops/cross_entropy_params.h"
#include "kernels/ops/dtype_names.h"
#include "kernels/ops/entries/cross_entropy.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {
namespace {

enum Part { kFwd = 0, kCount = 1, kScale = 2 };

namespace cnt = entry::cross_entropy_count;
namespace fwd = entry::cross_entropy_fwd;
namespace scl = entry::cross_entropy_scale;

// The launch bound of every kernel in the family (cross_entropy.toml).
constexpr int kMaxThreadsPerBlock = std::min({SmallestBound(cnt::kBounds), SmallestBound(fwd::kBounds),
                                              SmallestBound(scl::kBounds)});
constexpr int kMinThreads = 128;
// Vectors each thread streams per pass before a larger block is preferred: amortises the two
// block-wide reductions per row.
constexpr int64_t kVectorsPerThread = 8;
// ce_fwd_cluster's default: see CrossEntropyClusterThreads.
constexpr int64_t kClusterVectorsPerThread = 16;
constexpr int kCountThreads = 1024;  // ce_count: one block
constexpr int kScaleThreads = 256;
// Blocks per SM assumed when no occupancy oracle is available (tests).
constexpr int kFallbackBlocksPerSm = 1;
// Every in-row index fits comfortably in the kernels' 64-bit arithmetic; beyond this a "row" is
// surely a mistake (and the float count of classes in the smoothing term loses integers).
constexpr int64_t kMaxClasses = int64_t{1} << 31;
constexpr int64_t kMaxRows = int64_t{1} << 40;

const std::vector<DType> kFloats = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};

// The forward's variants also differ in `features` (LIGERD_CE_FEATURES, cross_entropy.cuh): the
// ".full" module holds the row loops for argmax, label smoothing and class weights; the plain one
// only the loop without them, which is what a training call without any runs (and compiles ~17x
// faster: it is most of a fresh node's first step, docs/perf/cold_start.md).
KernelVariant MakeVariant(Part part, DType x, bool softcap, bool features = true) {
  const bool fwd_part = part == kFwd;
  KernelVariant v;
  v.tag = absl::StrCat("x", ShortName(x), fwd_part && softcap ? ".softcap" : "",
                       fwd_part && features ? ".full" : "");
  v.defines = {absl::StrCat("LIGERD_CE_PART=", static_cast<int>(part)),
               absl::StrCat("LIGERD_XT=", DeviceTypeName(x)),
               absl::StrCat("LIGERD_CE_SOFTCAP=", softcap ? 1 : 0)};
  if (fwd_part) v.defines.push_back(absl::StrCat("LIGERD_CE_FEATURES=", features ? 1 : 0));
  return v;
}

// Whether a forward call needs the ".full" module: argmax (pred), label smoothing or class
// weights, each of which the kernel tests per launch (fwd_dispatch).
bool FwdFeatures(const OpCall& call) {
  return call.tensors[fwd::T::pred].present() || call.tensors[fwd::T::weight].present() ||
         call.scalars[fwd::S::label_smoothing] > 0.0;
}

int VectorWidth(DType x) { return 16 / DTypeBytes(x); }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int NextPow2(int64_t v) {
  int p = 1;
  while (p < v && p < (1 << 30)) p <<= 1;
  return p;
}

absl::Status Invalid(absl::string_view op, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", msg));
}

// A 1-D tensor of `n` elements; contiguous unless `any_stride`. Returns its stride.
absl::StatusOr<int64_t> Check1D(absl::string_view op, absl::string_view name, const TensorView& t,
                                int64_t n, absl::string_view what, bool any_stride = false) {
  if (t.ndim != 1 || t.sizes[0] != n)
    return Invalid(op, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t), ", expected [", n,
                                    "] (", what, ")"));
  if (!any_stride && n > 1 && t.strides[0] != 1)
    return Invalid(op, absl::StrCat("tensor '", name, "' must be contiguous, got stride ", t.strides[0]));
  return n > 1 ? t.strides[0] : 1;
}

absl::StatusOr<int64_t> IntegralScalar(absl::string_view op, absl::string_view name, double v) {
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.0e15)
    return Invalid(op, absl::StrCat("scalar ", name, " must be an integer, got ", v));
  return static_cast<int64_t>(v);
}

int BlocksPerSm(const std::string& op, const DeviceInfo& dev, const KernelVariant& v, const char* kernel,
                int threads, absl::Status* status, size_t smem = 0) {
  if (!dev.blocks_per_sm) return kFallbackBlocksPerSm;
  absl::StatusOr<int> b = dev.blocks_per_sm(op, v, kernel, threads, smem);
  if (!b.ok()) {
    *status = b.status();
    return 0;
  }
  return *b;
}

KernelLaunch OneLaunch(const char* kernel, int64_t grid, int block, const void* params, size_t size) {
  KernelLaunch l;
  l.kernel = kernel;
  l.grid[0] = static_cast<unsigned>(std::clamp<int64_t>(grid, 1, 0x7fffffff));
  l.block[0] = static_cast<unsigned>(block);
  l.params.resize(size);
  std::memcpy(l.params.data(), params, size);
  return l;
}

// Clusters of ce_fwd_cluster the GPU holds at once: the driver's count (a cluster's CTAs must
// share a GPC, so this can be below the SM arithmetic), else floor(SMs x blocks per SM / size).
// A persistent grid must not exceed it: a cluster left for a second wave would double the time.
absl::StatusOr<int64_t> ClustersInFlight(const std::string& op, const DeviceInfo& dev, const KernelVariant& v,
                                         int threads, int64_t smem, int cluster) {
  if (dev.active_clusters) {
    absl::StatusOr<int> n = dev.active_clusters(op, v, "ce_fwd_cluster", threads, static_cast<size_t>(smem), cluster);
    if (!n.ok()) return n.status();
    return int64_t{*n};
  }
  absl::Status st;
  const int per_sm = BlocksPerSm(op, dev, v, "ce_fwd_cluster", threads, &st, static_cast<size_t>(smem));
  if (!st.ok()) return st;
  return int64_t{std::max(dev.sm_count, 1)} * per_sm / cluster;
}

// Tests force the two-pass ce_fwd with LIGERD_CE_CLUSTER=0 (tests/gpu/test_cross_entropy.py
// checks the fallback this way). Read when planning; plans are cached per geometry, so a process
// sets it before its first launch.
bool ClusterDisabled() {
  const char* env = std::getenv("LIGERD_CE_CLUSTER");
  return env != nullptr && std::string_view(env) == "0";
}

KernelLaunch ClusterLaunch(const LaunchConfig& c, const void* params, size_t size) {
  KernelLaunch l = OneLaunch("ce_fwd_cluster", c.grid, c.threads_per_row, params, size);
  l.shared_bytes = static_cast<unsigned>(c.shared_bytes);
  l.cluster = static_cast<unsigned>(c.cluster);
  return l;
}

absl::StatusOr<OpPlan> PlanCount(const OpSpec& spec, const OpCall& call, const DeviceInfo&) {
  const std::string& op = spec.name;
  const TensorView& target = call.tensors[cnt::T::target];
  const TensorView& weight = call.tensors[cnt::T::weight];
  const TensorView& denom = call.tensors[cnt::T::denom];
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", call.scalars[cnt::S::ignore_index]));
  LIGERD_ASSIGN_OR_RETURN(int64_t classes, IntegralScalar(op, "num_classes", call.scalars[cnt::S::num_classes]));
  if (classes < 1 || classes > kMaxClasses)
    return Invalid(op, absl::StrCat("num_classes must be in [1, 2^31], got ", classes));
  if (target.ndim != 1) return Invalid(op, absl::StrCat("tensor 'target' must be 1-D, got shape ", ShapeString(target)));
  const int64_t rows = target.sizes[0];
  LIGERD_ASSIGN_OR_RETURN(int64_t t_stride, Check1D(op, "target", target, rows, "one per row", true));
  if (weight.present()) LIGERD_RETURN_IF_ERROR(Check1D(op, "weight", weight, classes, "num_classes").status());
  LIGERD_RETURN_IF_ERROR(Check1D(op, "denom", denom, 4, "count, weighted count, weight sum, invalid").status());
  OpPlan plan;
  plan.variant = MakeVariant(kCount, DType::kFloat32, false);
  LigerdCeCountParams p{};
  p.target = static_cast<const long long*>(target.data);
  p.weight = static_cast<const float*>(weight.data);
  p.denom = static_cast<float*>(denom.data);
  p.rows = rows;
  p.target_stride = t_stride;
  p.cols = classes;
  p.ignore_index = ignore;
  plan.config.threads_per_row = kCountThreads;
  plan.config.rows_per_block = 1;
  plan.config.grid = 1;
  plan.launches.push_back(OneLaunch("ce_count", 1, kCountThreads, &p, sizeof(p)));
  return plan;
}

absl::StatusOr<OpPlan> PlanFwd(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const auto& t = call.tensors;
  const TensorView& X = t[fwd::T::X];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix xm, AsRows(op, "X", X));
  const int64_t rows = xm.rows, cols = xm.cols;
  if (rows > kMaxRows) return Invalid(op, absl::StrCat("too many rows (", rows, ")"));
  if (cols > kMaxClasses) return Invalid(op, absl::StrCat("vocabulary of ", cols, " classes is too large"));
  if (rows > 0 && cols == 0) return Invalid(op, "X has rows but no classes (last dim 0)");
  LIGERD_ASSIGN_OR_RETURN(int64_t t_stride, Check1D(op, "target", t[fwd::T::target], rows, "one per row of X", true));
  if (t[fwd::T::weight].present())
    LIGERD_RETURN_IF_ERROR(Check1D(op, "weight", t[fwd::T::weight], cols, "one per class").status());
  LIGERD_RETURN_IF_ERROR(Check1D(op, "denom", t[fwd::T::denom], 4, "from cross_entropy_count").status());
  if (t[fwd::T::row_scale].present())
    LIGERD_RETURN_IF_ERROR(Check1D(op, "row_scale", t[fwd::T::row_scale], rows, "one per row of X").status());
  RowMatrix dm = xm;
  if (t[fwd::T::dX].present()) {
    LIGERD_RETURN_IF_ERROR(CheckSameShape(op, "dX", t[fwd::T::dX], "X", X));
    LIGERD_ASSIGN_OR_RETURN(dm, AsRows(op, "dX", t[fwd::T::dX]));
    if (dm.rows > 1 && dm.row_stride < dm.cols) return Invalid(op, "output 'dX' has overlapping rows");
  }
  LIGERD_RETURN_IF_ERROR(Check1D(op, "loss", t[fwd::T::loss], rows, "one per row of X").status());
  if (t[fwd::T::z_loss].present())
    LIGERD_RETURN_IF_ERROR(Check1D(op, "z_loss", t[fwd::T::z_loss], rows, "one per row of X").status());
  if (t[fwd::T::pred].present())
    LIGERD_RETURN_IF_ERROR(Check1D(op, "pred", t[fwd::T::pred], rows, "one per row of X").status());

  const auto& s = call.scalars;
  LIGERD_ASSIGN_OR_RETURN(int64_t ignore, IntegralScalar(op, "ignore_index", s[fwd::S::ignore_index]));
  LIGERD_ASSIGN_OR_RETURN(int64_t reduction, IntegralScalar(op, "reduction", s[fwd::S::reduction]));
  LIGERD_ASSIGN_OR_RETURN(int64_t token_scaling, IntegralScalar(op, "token_scaling", s[fwd::S::token_scaling]));
  const double lss = s[fwd::S::lse_square_scale], ls = s[fwd::S::label_smoothing], softcap = s[fwd::S::softcap];
  if (reduction < 0 || reduction > 2)
    return Invalid(op, absl::StrCat("reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction));
  if (!(ls >= 0.0 && ls <= 1.0)) return Invalid(op, absl::StrCat("label_smoothing must be in [0, 1], got ", ls));
  if (!std::isfinite(lss)) return Invalid(op, absl::StrCat("lse_square_scale must be finite, got ", lss));
  if (!(softcap >= 0.0) || !std::isfinite(softcap))
    return Invalid(op, absl::StrCat("softcap must be > 0 (or 0 for none), got ", softcap));
  if (token_scaling != 0 && token_scaling != 1)
    return Invalid(op, absl::StrCat("token_scaling must be 0 or 1, got ", token_scaling));

  OpPlan plan;
  plan.variant = MakeVariant(kFwd, X.dtype, softcap > 0.0, FwdFeatures(call));
  if (rows == 0) return plan;

  LigerdCeFwdParams p{};
  p.x = X.data;
  p.dx = t[fwd::T::dX].data;
  p.target = static_cast<const long long*>(t[fwd::T::target].data);
  p.weight = static_cast<const float*>(t[fwd::T::weight].data);
  p.denom = static_cast<const float*>(t[fwd::T::denom].data);
  p.row_scale = static_cast<const float*>(t[fwd::T::row_scale].data);
  p.loss = static_cast<float*>(t[fwd::T::loss].data);
  p.z_loss = static_cast<float*>(t[fwd::T::z_loss].data);
  p.pred = static_cast<long long*>(t[fwd::T::pred].data);
  p.rows = rows;
  p.cols = cols;
  p.x_stride = xm.row_stride;
  p.dx_stride = dm.row_stride;
  p.target_stride = t_stride;
  p.ignore_index = ignore;
  p.lse_square_scale = static_cast<float>(lss);
  p.label_smoothing = static_cast<float>(ls);
  p.softcap = static_cast<float>(softcap);
  p.reduction = static_cast<int>(reduction);
  p.token_scaling = static_cast<int>(token_scaling);

  const bool has_dx = p.dx != nullptr;
  const bool cluster_arch = CrossEntropyClusterArch(dev.compute_capability);
  if (call.tuned != nullptr && call.tuned->shared_bytes > 0) {
    // ce_fwd_cluster with the tuner's cluster size, stash and block.
    const LaunchConfig& c = *call.tuned;
    absl::Status st = CrossEntropyCheckConfig(c);
    if (!st.ok()) return Invalid(op, absl::StrCat("tuned config: ", st.message()));
    if (!has_dx) return Invalid(op, "tuned config: the cluster kernel is for a forward with dX (loss only reads a row once)");
    if (!cluster_arch)
      return Invalid(op, absl::StrCat("tuned config: the cluster kernel needs sm_90/100/103, this is sm_",
                                      dev.compute_capability));
    const int64_t need = CrossEntropyClusterSliceBytes(X.dtype, cols, c.cluster);
    if (c.shared_bytes < need)
      return Invalid(op, absl::StrCat("tuned config: ", c.shared_bytes, " bytes of shared memory per CTA hold less than the ",
                                      need, "-byte slice of a ", cols, "-column row over ", c.cluster, " CTAs"));
    plan.config = c;
    if (plan.config.grid == 0) {
      LIGERD_ASSIGN_OR_RETURN(int64_t n, ClustersInFlight(op, dev, plan.variant, c.threads_per_row, c.shared_bytes, c.cluster));
      if (n <= 0)
        return Invalid(op, absl::StrCat("tuned config: no cluster of ", c.cluster, " x ", c.threads_per_row, " threads with ",
                                        c.shared_bytes, " bytes of shared memory fits this GPU"));
      plan.config.grid = static_cast<int>(std::min<int64_t>(rows, n) * c.cluster);
    }
    plan.launches.push_back(ClusterLaunch(plan.config, &p, sizeof(p)));
    return plan;
  }
  if (call.tuned == nullptr && has_dx && cluster_arch && !ClusterDisabled()) {
    // The default: ce_fwd_cluster when a row fits in <= 8 CTAs of the default stash.
    const int cluster = CrossEntropyDefaultCluster(X.dtype, cols);
    if (cluster > 0) {
      const int64_t slice = CrossEntropyClusterSliceBytes(X.dtype, cols, cluster);
      const int threads = CrossEntropyClusterThreads(slice);
      LIGERD_ASSIGN_OR_RETURN(int64_t n, ClustersInFlight(op, dev, plan.variant, threads, slice, cluster));
      if (n > 0) {  // else (it cannot be resident at all) the two-pass kernel below
        plan.config.threads_per_row = threads;
        plan.config.rows_per_block = 1;
        plan.config.iters = 0;
        plan.config.vectorized = true;
        plan.config.cluster = cluster;
        plan.config.shared_bytes = static_cast<int>(slice);
        plan.config.grid = static_cast<int>(std::min<int64_t>(rows, n) * cluster);
        plan.launches.push_back(ClusterLaunch(plan.config, &p, sizeof(p)));
        return plan;
      }
    }
  }
  if (call.tuned != nullptr) {
    absl::Status st = CrossEntropyCheckConfig(*call.tuned);
    if (!st.ok()) return Invalid(op, absl::StrCat("tuned config: ", st.message()));
    plan.config = *call.tuned;
    if (plan.config.grid == 0) plan.config.grid = static_cast<int>(std::min<int64_t>(rows, 0x7fffffff));
  } else {
    const int threads = CrossEntropyDefaultThreads(X.dtype, cols);
    absl::Status st;
    const int per_sm = BlocksPerSm(op, dev, plan.variant, "ce_fwd", threads, &st);
    if (!st.ok()) return st;
    if (per_sm <= 0)
      return absl::InternalError(absl::StrCat(op, ": kernel ce_fwd cannot run with ", threads, " threads"));
    plan.config = CrossEntropyDefaultConfig(X.dtype, rows, cols, std::max(dev.sm_count, 1), per_sm);
  }
  plan.launches.push_back(OneLaunch("ce_fwd", plan.config.grid, plan.config.threads_per_row, &p, sizeof(p)));
  return plan;
}

absl::StatusOr<OpPlan> PlanScale(const OpSpec& spec, const OpCall& call, const DeviceInfo& dev) {
  const std::string& op = spec.name;
  const TensorView& G = call.tensors[scl::T::G];
  const TensorView& S = call.tensors[scl::T::s];
  LIGERD_ASSIGN_OR_RETURN(RowMatrix gm, AsRows(op, "G", G));
  if (gm.rows > 1 && gm.row_stride < gm.cols) return Invalid(op, "tensor 'G' has overlapping rows");
  const int64_t n = NumElements(S);
  if (S.ndim != 1 || (n != 1 && n != gm.rows))
    return Invalid(op, absl::StrCat("tensor 's' has shape ", ShapeString(S), ", expected [1] or [", gm.rows,
                                    "] (one factor, or one per row of G)"));
  if (n > 1 && S.strides[0] != 1) return Invalid(op, "tensor 's' must be contiguous");
  OpPlan plan;
  plan.variant = MakeVariant(kScale, G.dtype, false);
  if (gm.rows == 0 || gm.cols == 0) return plan;
  LigerdCeScaleParams p{};
  p.g = G.data;
  p.s = static_cast<const float*>(S.data);
  p.rows = gm.rows;
  p.cols = gm.cols;
  p.g_stride = gm.row_stride;
  p.per_row = n > 1 ? 1 : 0;
  absl::Status st;
  int per_sm = BlocksPerSm(op, dev, plan.variant, "ce_scale", kScaleThreads, &st);
  if (!st.ok()) return st;
  per_sm = std::max(per_sm, 1);
  const int64_t grid = std::min<int64_t>(gm.rows, int64_t{std::max(dev.sm_count, 1)} * per_sm);
  plan.config.threads_per_row = kScaleThreads;
  plan.config.rows_per_block = 1;
  plan.config.grid = static_cast<int>(grid);
  plan.launches.push_back(OneLaunch("ce_scale", grid, kScaleThreads, &p, sizeof(p)));
  return plan;
}

// Autotuning candidates of cross_entropy_fwd (with dX, on a cluster GPU): ce_fwd_cluster at every
// cluster size from the smallest whose slice fits one CTA's opt-in maximum up to 8 (fewer CTAs =
// larger stashes, fewer rows in flight; more = more rows in flight, smaller slices per SM), each
// with 256, 512 and 1024 threads (the stash's vectors per thread vs. latency hiding). The default
// (two CTAs per SM, kCrossEntropyClusterBudget) is timed first by the tuner; ce_fwd's two-pass
// default is what the op falls back to and is not a candidate (a full row per SM is a cluster of
// 1 where it fits).
std::vector<LaunchConfig> FwdCandidates(const OpCall& call, const DeviceInfo& dev) {
  std::vector<LaunchConfig> out;
  const TensorView& X = call.tensors[fwd::T::X];
  if (X.ndim < 1 || !call.tensors[fwd::T::dX].present() || !CrossEntropyClusterArch(dev.compute_capability))
    return out;
  const int64_t cols = X.sizes[X.ndim - 1];
  const int64_t rows = cols > 0 ? NumElements(X) / cols : 0;
  const KernelVariant variant = MakeVariant(kFwd, X.dtype, call.scalars[fwd::S::softcap] > 0.0, FwdFeatures(call));
  for (int cluster = 1; cluster <= kCrossEntropyMaxCluster; ++cluster) {
    const int64_t slice = CrossEntropyClusterSliceBytes(X.dtype, cols, cluster);
    if (slice > kCrossEntropyClusterMaxSmem) continue;
    for (int threads : {256, 512, 1024}) {
      LaunchConfig c;
      c.threads_per_row = threads;
      c.rows_per_block = 1;
      c.iters = 0;
      c.vectorized = true;
      c.cluster = cluster;
      c.shared_bytes = static_cast<int>(slice);
      // Whole clusters, as many as the GPU holds at once (the persistent grid the default uses).
      absl::StatusOr<int64_t> n = ClustersInFlight("cross_entropy_fwd", dev, variant, threads, slice, cluster);
      if (!n.ok() || *n <= 0 || rows <= 0) continue;
      c.grid = static_cast<int>(std::min<int64_t>(rows, *n) * cluster);
      if (CrossEntropyCheckConfig(c).ok()) out.push_back(c);
    }
  }
  return out;
}

// A representative call: logits with a separate dX (the in-place call moves the same bytes),
// random targets (out of range: those rows take both passes like any other and come out NaN,
// never dereferencing X[target]), "mean" reduction, no optional tensors.
absl::StatusOr<TuningProblem> FwdProblem(const TuningShape& shape) {
  TuningProblem p;
  const ScratchTensor absent{false, DType::kFloat32, {}, false};
  p.tensors = {{true, shape.dtype, {shape.rows, shape.cols}, false},  // X
               {true, DType::kInt64, {shape.rows}, false},            // target
               absent,                                                  // weight
               {true, DType::kFloat32, {4}, true},                      // denom
               absent,                                                  // row_scale
               {true, shape.dtype, {shape.rows, shape.cols}, false},  // dX
               {true, DType::kFloat32, {shape.rows}, false},          // loss
               absent, absent};                                         // z_loss, pred
  p.scalars = {-100.0, 0.0, 0.0, 1.0, 0.0, 0.0};
  return p;
}

OpSpec MakeSpec(Part part) {
  OpSpec s;
  switch (part) {
    case kCount:
      s = cnt::BaseSpec();
      s.variants.push_back(MakeVariant(kCount, DType::kFloat32, false));
      s.plan = PlanCount;
      break;
    case kFwd:
      s = fwd::BaseSpec();
      for (DType x : kFloats)
        for (bool sc : {false, true})
          for (bool features : {false, true}) s.variants.push_back(MakeVariant(kFwd, x, sc, features));
      s.plan = PlanFwd;
      s.candidates = FwdCandidates;
      s.tuning_shape = RowTuningShape(fwd::T::X);
      s.tuning_problem = FwdProblem;
      break;
    case kScale:
      s = scl::BaseSpec();
      for (DType x : kFloats) s.variants.push_back(MakeVariant(kScale, x, false));
      s.plan = PlanScale;
      break;
  }
  return s;
}

}  // namespace

int CrossEntropyDefaultThreads(DType x, int64_t cols) {
  const int64_t nvec = CeilDiv(std::max<int64_t>(cols, 1), VectorWidth(x));
  return std::clamp(NextPow2(CeilDiv(nvec, kVectorsPerThread)), kMinThreads, kMaxThreadsPerBlock);
}

LaunchConfig CrossEntropyDefaultConfig(DType x, int64_t rows, int64_t cols, int sm_count, int blocks_per_sm) {
  LaunchConfig c;
  c.threads_per_row = CrossEntropyDefaultThreads(x, cols);
  c.rows_per_block = 1;
  c.iters = 0;
  c.vectorized = true;
  const int64_t row_bytes = std::max<int64_t>(cols * DTypeBytes(x), 1);
  const int64_t in_flight = std::max<int64_t>(kCrossEntropyL2Budget / row_bytes, 1);
  const int64_t per_sm = std::clamp<int64_t>(in_flight / std::max(sm_count, 1), 1, std::max(blocks_per_sm, 1));
  c.grid = static_cast<int>(std::min<int64_t>({rows, per_sm * std::max(sm_count, 1), 0x7fffffff}));
  return c;
}

absl::Status CrossEntropyCheckConfig(const LaunchConfig& c) {
  if (c.threads_per_row < 32 || c.threads_per_row > kMaxThreadsPerBlock || c.threads_per_row % 32 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("block of ", c.threads_per_row, " threads must be a multiple of 32 <= 1024"));
  if (c.rows_per_block != 1) return absl::InvalidArgumentError("ce_fwd takes one row per block (rows_per_block 1)");
  if (c.grid < 0) return absl::InvalidArgumentError("grid must be >= 0");
  if (c.shared_bytes < 0 || c.shared_bytes > kCrossEntropyClusterMaxSmem)
    return absl::InvalidArgumentError(absl::StrCat("shared memory of ", c.shared_bytes, " bytes per CTA is outside [0, ",
                                                   kCrossEntropyClusterMaxSmem, "]"));
  if (c.shared_bytes == 0) {
    if (c.cluster != 1) return absl::InvalidArgumentError("ce_fwd (no shared memory stash) takes no cluster (cluster 1)");
    return absl::OkStatus();
  }
  if (c.cluster < 1 || c.cluster > kCrossEntropyMaxCluster)
    return absl::InvalidArgumentError(absl::StrCat("cluster of ", c.cluster, " CTAs is outside [1, ",
                                                   kCrossEntropyMaxCluster, "]"));
  if (c.grid % c.cluster != 0)
    return absl::InvalidArgumentError(absl::StrCat("grid of ", c.grid, " blocks is not whole clusters of ", c.cluster));
  return absl::OkStatus();
}

int64_t CrossEntropyClusterSliceBytes(DType x, int64_t cols, int cluster) {
  const int64_t nvec = std::max<int64_t>(cols, 0) / VectorWidth(x);  // the most any row alignment leaves
  return std::max<int64_t>(CeilDiv(nvec, std::max(cluster, 1)), 1) * 16;
}

int CrossEntropyClusterSize(DType x, int64_t cols, int64_t budget) {
  for (int c = 1; c <= kCrossEntropyMaxCluster; ++c)
    if (CrossEntropyClusterSliceBytes(x, cols, c) <= budget) return c;
  return 0;
}

int CrossEntropyDefaultCluster(DType x, int64_t cols) {
  const int c = CrossEntropyClusterSize(x, cols, kCrossEntropyClusterPreferred);
  return c > 0 ? c : CrossEntropyClusterSize(x, cols, kCrossEntropyClusterBudget);
}

int CrossEntropyClusterThreads(int64_t slice_bytes) {
  // 16 vectors per thread: the stash is read from shared memory in pass 2, so fewer, busier
  // threads per CTA leave room for more CTAs per SM (the tuner's choice on the H100: 256 threads
  // for 2672-vector slices). At most 512: two CTAs per SM (the larger stash) x 512 threads x 64
  // registers (the __launch_bounds__(1024) cap) is the whole register file.
  return std::clamp(NextPow2(CeilDiv(CeilDiv(slice_bytes, 16), kClusterVectorsPerThread)), kMinThreads, 512);
}

bool CrossEntropyClusterArch(int cc) { return cc == 90 || cc == 100 || cc == 103; }

LIGERD_DEFINE_OP(cross_entropy_count, MakeSpec(kCount))
LIGERD_DEFINE_OP(cross_entropy_fwd, MakeSpec(kFwd))
LIGERD_DEFINE_OP(cross_entropy_scale, MakeSpec(kScale))

}  // namespace ligerd::kernels
