// Real NVRTC compiles (no GPU needed): the compiler wrapper, and every catalogue variant for
// sm_90 and sm_80 through PrecompileAll, checking each module exports every kernel the planner
// can name.
#include <algorithm>
#include <string>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/jit/jit_cache.h"
#include "kernels/jit/nvrtc_compiler.h"
#include "kernels/ops/distill.h"
#include "kernels/ops/clamped_glu.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/rope.h"
#include "kernels/ops/layer_norm.h"
#include "kernels/ops/relu_squared.h"
#include "kernels/ops/rms_norm.h"
#include "kernels/ops/softmax.h"
#include "kernels/precompile.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::TempDir;

CompileRequest Tiny(std::string arch, std::string body = "out[threadIdx.x] = 1.f;") {
  CompileRequest r;
  r.op = "tiny";
  r.variant = "v";
  r.main = {"tiny.cu", ""};
  static std::string text;  // SourceFile holds a view
  text = "#include \"tiny.h\"\nextern \"C\" __global__ void tiny(float* out) { " + body + " }\n";
  r.main.text = text;
  r.headers = {{"tiny.h", "// nothing\n"}};
  r.options = {"--std=c++17"};
  r.arch = std::move(arch);
  return r;
}

TEST(Nvrtc, CompilesCubinAndPtx) {
  auto cubin = NvrtcCompiler()->Compile(Tiny("sm_90"));
  ASSERT_TRUE(cubin.ok()) << cubin.status();
  EXPECT_EQ(cubin->kind, BinaryKind::kCubin);
  ASSERT_GE(cubin->image.size(), 4u);
  EXPECT_EQ(cubin->image.substr(0, 4), "\x7f" "ELF");
  auto ptx = NvrtcCompiler()->Compile(Tiny("compute_90"));
  ASSERT_TRUE(ptx.ok()) << ptx.status();
  EXPECT_EQ(ptx->kind, BinaryKind::kPtx);
  EXPECT_NE(ptx->image.find(".target sm_90"), std::string::npos);
  EXPECT_EQ(ptx->image.back(), '\0') << "PTX must be NUL-terminated for cuModuleLoadData";
  EXPECT_NE(NvrtcVersionTag().find("nvrtc-"), std::string::npos);
}

TEST(Nvrtc, CompileErrorCarriesTheLog) {
  auto r = NvrtcCompiler()->Compile(Tiny("sm_90", "undefined_thing = 3;"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("undefined_thing"), absl::string_view::npos) << r.status();
  EXPECT_NE(r.status().message().find("tiny"), absl::string_view::npos) << "names the op";
}

TEST(Nvrtc, ArchIsChecked) {
  EXPECT_TRUE(ParseArch("sm_90").ok());
  EXPECT_TRUE(ParseArch("sm_80").ok());
  EXPECT_TRUE(ParseArch("compute_90").ok());
  EXPECT_TRUE(ParseArch("sm_90a").ok());
  for (const char* bad : {"", "sm_", "90", "sm_9x", "gfx90a", "sm_1", "compute_"})
    EXPECT_EQ(ParseArch(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  auto r = NvrtcCompiler()->Compile(Tiny("sm_12"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

// Every kernel name the op's planner can produce, for the module of each direction.
std::vector<std::string> PlannableKernels(const std::string& op) {
  const bool backward = op.ends_with("_bwd");
  if (op.starts_with("clamped_glu_")) return {ClampedGluKernelName(backward, true), ClampedGluKernelName(backward, false)};
  if (op.find("glu") != std::string::npos)
    return {GluKernelName(backward, true, 1), GluKernelName(backward, true, 2), GluKernelName(backward, true, 4),
            GluKernelName(backward, false)};
  if (op.starts_with("rope_")) return {RopeKernelName(true), RopeKernelName(false)};
  if (op.starts_with("relu_squared_")) return {ReluSquaredKernelName(backward, true), ReluSquaredKernelName(backward, false)};
  if (op == "cross_entropy_count") return {"ce_count"};
  if (op == "cross_entropy_fwd") return {"ce_fwd", "ce_fwd_cluster"};
  if (op == "cross_entropy_scale") return {"ce_scale"};
  // ce_slice: one kernel per op, each in its own module (LIGERD_CE_SLICE_PART).
  if (op == "ce_slice_stats" || op == "ce_slice_grad") return {op};
  if (op == "kl_div_fwd" || op == "kl_div_bwd" || op == "jsd_fwd" || op == "tvd_fwd" || op == "jsd_logits_fwd")
    return {DistillKernelName(op, true), DistillKernelName(op, false)};
  if (op.starts_with("softmax_")) {
    std::vector<std::string> names;
    for (bool vec : {true, false})
      for (int it = 0; it <= SoftmaxMaxIters(backward); ++it) {
        LaunchConfig c;
        c.iters = it;
        c.vectorized = vec;
        names.push_back(SoftmaxKernelName(backward, c));
      }
    return names;
  }
  std::vector<std::string> names;
  const bool ln = op.starts_with("layer_norm");
  if (!ln && !op.starts_with("rms_norm_") && !op.starts_with("fused_add_rms_norm_")) {
    ADD_FAILURE() << "no list of plannable kernels for op " << op << ": add one here";
    return names;
  }
  const int max_iters = backward ? 4 : 8;
  for (bool vec : {true, false}) {
    for (int it = 0; it <= max_iters; ++it) {
      LaunchConfig c;
      c.iters = it;
      c.vectorized = vec;
      names.push_back(ln ? LayerNormKernelName(backward, c) : RmsNormKernelName(backward, c));
    }
  }
  if (backward) names.push_back(ln ? "layer_norm_bwd_reduce" : "rms_norm_bwd_dw_reduce");
  return names;
}

void PrecompileEverything(const std::string& arch) {
  TempDir dir;
  auto cache = JitCache::Open(dir.path(), NvrtcCompiler());
  ASSERT_TRUE(cache.ok()) << cache.status();
  size_t expected = 0;
  for (const OpSpec* op : AllOps()) expected += op->variants.size();
  size_t progress_calls = 0;
  auto report = PrecompileAllInto(**cache, arch, [&](const PrecompileProgress& p) {
    ++progress_calls;
    EXPECT_LE(p.done, p.total);
  });
  ASSERT_TRUE(report.ok()) << report.status();
  for (const auto& f : report->failures) ADD_FAILURE() << f.op << " " << f.variant << ": " << f.message;
  EXPECT_EQ(report->total, expected);
  EXPECT_EQ(report->compiled, expected);
  EXPECT_EQ(progress_calls, expected);
  std::cout << arch << ": compiled " << report->compiled << " variants in " << report->seconds
            << " s\n";

  // Every module exports every kernel the planner may ask it for (names are in the ELF symbol
  // table as plain strings).
  for (const OpSpec* op : AllOps()) {
    for (const KernelVariant& v : op->variants) {
      auto m = (*cache)->Get(MakeCompileRequest(*op, v, arch));
      ASSERT_TRUE(m.ok()) << m.status();
      for (const std::string& k : PlannableKernels(op->name))
        EXPECT_NE((*m)->image.find(k + '\0'), std::string::npos) << op->name << " " << v.tag << " lacks " << k;
    }
  }

  // A second run finds everything cached (fresh process memory: a new cache object).
  auto again = JitCache::Open(dir.path(), NvrtcCompiler());
  ASSERT_TRUE(again.ok());
  auto report2 = PrecompileAllInto(**again, arch);
  ASSERT_TRUE(report2.ok());
  EXPECT_EQ(report2->compiled, 0u);
  EXPECT_EQ(report2->cached, expected);
}

TEST(Precompile, EveryVariantCompilesForSm90) { PrecompileEverything("sm_90"); }
TEST(Precompile, EveryVariantCompilesForSm80) { PrecompileEverything("sm_80"); }

TEST(Precompile, BadArchIsAnErrorNotAReport) {
  TempDir dir;
  auto r = PrecompileAll(dir.path(), "sm_banana");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

}  // namespace
}  // namespace ligerd::kernels
