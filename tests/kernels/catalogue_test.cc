// The catalogue and RMSNorm's launch-shape heuristic (pure functions, no CUDA).
#include "kernels/catalogue.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"
#include "kernels/embedded_sources.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/rms_norm.h"

namespace ligerd::kernels {
namespace {

TEST(Catalogue, ListsRmsNormWithItsVariants) {
  const std::vector<OpInfo> all = ListOps();
  // The catalogue is the entries' ops (kernels/ops/*.toml), in entry order; looked up by name.
  std::set<std::string> names;
  for (const OpInfo& o : all) EXPECT_TRUE(names.insert(o.name).second) << o.name;
  EXPECT_EQ(names, (std::set<std::string>{
                       "cross_entropy_count", "cross_entropy_fwd", "cross_entropy_scale", "gemm",
                       "swiglu_fwd", "swiglu_bwd", "geglu_fwd", "geglu_bwd", "layer_norm_fwd",
                       "layer_norm_bwd", "rms_norm_fwd", "rms_norm_bwd", "fused_add_rms_norm_fwd",
                       "fused_add_rms_norm_bwd", "rope_fwd", "rope_bwd", "softmax_fwd", "softmax_bwd",
                       "relu_squared_fwd", "relu_squared_bwd",
                       "clamped_glu_fwd", "clamped_glu_bwd",
                       "kl_div_fwd", "kl_div_bwd", "jsd_fwd", "tvd_fwd", "jsd_logits_fwd",
                       "ce_slice_stats", "ce_slice_grad"}));
  auto info = [&all](std::string_view name) -> const OpInfo& {
    for (const OpInfo& o : all)
      if (o.name == name) return o;
    ADD_FAILURE() << "no op " << name;
    return all.front();
  };
  // The old positional names, kept for the checks below.
  const std::vector<std::string> order = {"rms_norm_fwd", "rms_norm_bwd", "swiglu_fwd", "swiglu_bwd", "geglu_fwd", "geglu_bwd", "rope_fwd", "rope_bwd", "cross_entropy_count", "cross_entropy_fwd", "cross_entropy_scale", "layer_norm_fwd", "layer_norm_bwd", "fused_add_rms_norm_fwd", "fused_add_rms_norm_bwd", "gemm"};
  std::vector<OpInfo> ops;
  for (const std::string& n : order) ops.push_back(info(n));
  // gemm (cuBLASLt): no NVRTC variants.
  EXPECT_EQ(ops[15].name, "gemm");
  EXPECT_EQ(ops[15].variant_count, 0u);
  EXPECT_EQ(ops[15].tensors, (std::vector<std::string>{"A", "B", "C?", "D->", "bias?"}));
  EXPECT_EQ(ops[0].name, "rms_norm_fwd");
  EXPECT_EQ(ops[1].name, "rms_norm_bwd");
  // fwd: fp32 {no W, W} + {bf16, fp16} x {no W, W same, W fp32} x 3 casting modes.
  EXPECT_EQ(ops[0].variant_count, 2u + 2u * 3u * 3u);
  // bwd: casting mode matters only for llama's dW rounding: fp32 {2} + 2 x (1 + 2 + 2).
  EXPECT_EQ(ops[1].variant_count, 2u + 2u * 5u);
  EXPECT_EQ(ops[0].tensors, (std::vector<std::string>{"X", "W?", "Y->", "RSTD->"}));
  EXPECT_EQ(ops[1].tensors, (std::vector<std::string>{"dY", "X", "W?", "RSTD", "dX->", "dW?->"}));
  EXPECT_EQ(ops[0].scalars, (std::vector<std::string>{"eps", "offset", "casting_mode"}));
  EXPECT_EQ(ops[1].scalars, (std::vector<std::string>{"offset", "casting_mode"}));
  EXPECT_FALSE(ops[0].doc.empty());
  // SwiGLU / GeGLU: one variant per dtype, the activation is part of the op name.
  const std::vector<std::string> glu = {"swiglu_fwd", "swiglu_bwd", "geglu_fwd", "geglu_bwd"};
  for (size_t i = 0; i < glu.size(); ++i) {
    const OpInfo& o = ops[2 + i];
    EXPECT_EQ(o.name, glu[i]);
    EXPECT_EQ(o.variant_count, 3u);
    EXPECT_TRUE(o.scalars.empty());
    EXPECT_FALSE(o.doc.empty());
    if (i % 2 == 0)
      EXPECT_EQ(o.tensors, (std::vector<std::string>{"A", "B", "C->"}));
    else
      EXPECT_EQ(o.tensors, (std::vector<std::string>{"dC", "A", "B", "dA->", "dB->"}));
  }
  // RoPE: fp32 with fp32 cos/sin; bf16 and fp16 with cos/sin of their dtype or fp32.
  EXPECT_EQ(ops[6].name, "rope_fwd");
  EXPECT_EQ(ops[7].name, "rope_bwd");
  for (int i : {6, 7}) {
    EXPECT_EQ(ops[i].variant_count, 5u);
    EXPECT_TRUE(ops[i].scalars.empty());
    EXPECT_FALSE(ops[i].doc.empty());
  }
  EXPECT_EQ(ops[6].tensors, (std::vector<std::string>{"Q", "K", "COS", "SIN", "Q_out->", "K_out->"}));
  EXPECT_EQ(ops[7].tensors,
            (std::vector<std::string>{"dQ", "dK", "COS", "SIN", "dQ_out->", "dK_out->"}));
  EXPECT_EQ(FindOp("rope_bwd")->tensors[4].may_alias, "dQ");
  EXPECT_EQ(FindOp("rope_fwd")->tensors[5].may_alias, "K");
  EXPECT_EQ(FindOp("swiglu_bwd")->tensors[3].may_alias, "A");
  EXPECT_EQ(FindOp("geglu_bwd")->tensors[4].may_alias, "B");
  // Cross-entropy: count (1 variant), forward (3 dtypes x softcap or not x plain or full), scale
  // (3 dtypes).
  const std::vector<std::string> ce = {"cross_entropy_count", "cross_entropy_fwd", "cross_entropy_scale"};
  const std::vector<size_t> ce_variants = {1u, 12u, 3u};
  for (size_t i = 0; i < ce.size(); ++i) {
    const OpInfo& o = ops[8 + i];
    EXPECT_EQ(o.name, ce[i]);
    EXPECT_EQ(o.variant_count, ce_variants[i]);
    EXPECT_FALSE(o.doc.empty());
  }
  EXPECT_EQ(ops[9].tensors, (std::vector<std::string>{"X", "target", "weight?", "denom", "row_scale?", "dX?->",
                                                      "loss->", "z_loss?->", "pred?->"}));
  EXPECT_EQ(FindOp("cross_entropy_fwd")->tensors[5].may_alias, "X");
  EXPECT_EQ(FindOp("nope"), nullptr);
  // LayerNorm: W/B presence is a run-time choice, so one variant per (X dtype, parameter dtype).
  EXPECT_EQ(ops[11].name, "layer_norm_fwd");
  EXPECT_EQ(ops[12].name, "layer_norm_bwd");
  EXPECT_EQ(ops[11].variant_count, 5u);
  EXPECT_EQ(ops[12].variant_count, 5u);
  EXPECT_EQ(ops[11].tensors, (std::vector<std::string>{"X", "W?", "B?", "Y->", "MEAN->", "RSTD->"}));
  EXPECT_EQ(ops[12].tensors, (std::vector<std::string>{"dY", "X", "W?", "MEAN", "RSTD", "dX->", "dW?->", "dB?->"}));
  EXPECT_EQ(ops[11].scalars, (std::vector<std::string>{"eps"}));
  EXPECT_TRUE(ops[12].scalars.empty());
  EXPECT_EQ(FindOp("layer_norm_bwd")->tensors[5].may_alias, "dY");
  // Fused add + RMSNorm: RMSNorm's variants that have a weight (Liger's op always has one).
  EXPECT_EQ(ops[13].name, "fused_add_rms_norm_fwd");
  EXPECT_EQ(ops[14].name, "fused_add_rms_norm_bwd");
  EXPECT_EQ(ops[13].variant_count, 1u + 2u * 2u * 3u);
  EXPECT_EQ(ops[14].variant_count, 1u + 2u * 2u * 2u);
  EXPECT_EQ(ops[13].tensors, (std::vector<std::string>{"X", "R", "W", "Y->", "S->", "RSTD->"}));
  EXPECT_EQ(ops[14].tensors, (std::vector<std::string>{"dY", "dS?", "S", "W", "RSTD", "dX->", "dW?->"}));
  EXPECT_EQ(ops[13].scalars, ops[0].scalars);
  EXPECT_EQ(ops[14].scalars, ops[1].scalars);
  EXPECT_EQ(FindOp("fused_add_rms_norm_bwd")->tensors[5].may_alias, "dY");
  // The fused ops compile the RMSNorm source with the add switched on.
  for (const char* name : {"fused_add_rms_norm_fwd", "fused_add_rms_norm_bwd"}) {
    const OpSpec* f = FindOp(name);
    EXPECT_EQ(f->main.name, "kernels/ops/rms_norm.cuh");
    for (const KernelVariant& v : f->variants)
      EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), "LIGERD_RMS_ADD=1"), v.defines.end()) << v.tag;
  }
  for (const KernelVariant& v : FindOp("rms_norm_fwd")->variants)
    EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), "LIGERD_RMS_ADD=0"), v.defines.end()) << v.tag;
}

TEST(Catalogue, VariantTagsAreUniqueAndSourcesEmbedded) {
  for (const OpSpec* op : AllOps()) {
    std::set<std::string> tags;
    for (const KernelVariant& v : op->variants) EXPECT_TRUE(tags.insert(v.tag).second) << v.tag;
    if (op->name == "gemm") {  // a library step (cuBLASLt), nothing for NVRTC
      EXPECT_TRUE(op->variants.empty());
      continue;
    }
    EXPECT_FALSE(op->main.text.empty()) << op->name;
    if (op->name.starts_with("rms_norm") || op->name.starts_with("fused_add_rms_norm"))
      EXPECT_NE(op->main.text.find("LIGERD_ROW_KERNELS_I8(rms_norm_fwd,"), std::string_view::npos);
    else if (op->name.starts_with("layer_norm"))
      EXPECT_NE(op->main.text.find("LIGERD_ROW_KERNELS_I8(layer_norm_fwd,"), std::string_view::npos);
    else if (op->name.starts_with("rope"))
      EXPECT_NE(op->main.text.find("rope_v"), std::string_view::npos) << op->name;
    else if (op->name.starts_with("cross_entropy"))
      EXPECT_NE(op->main.text.find("ce_fwd"), std::string_view::npos) << op->name;
    else if (op->name.starts_with("softmax"))
      EXPECT_NE(op->main.text.find("LIGERD_ROW_KERNELS_I8(softmax_fwd,"), std::string_view::npos);
    else if (op->name.starts_with("relu_squared"))
      EXPECT_NE(op->main.text.find(op->name + "_v("), std::string_view::npos) << op->name;
    else if (op->name.starts_with("clamped_glu"))
      EXPECT_NE(op->main.text.find(op->name + "_v("), std::string_view::npos) << op->name;
    else if (op->name == "kl_div_fwd" || op->name == "kl_div_bwd" || op->name == "jsd_fwd" || op->name == "tvd_fwd")
      EXPECT_NE(op->main.text.find(op->name + "_v("), std::string_view::npos) << op->name;
    else if (op->name.starts_with("ce_slice_"))  // the kernel is named after the op
      EXPECT_NE(op->main.text.find(op->name + "(LigerdCeSlice"), std::string_view::npos) << op->name;
    else if (op->name == "jsd_logits_fwd")  // its kernel is in a header distill.cuh includes
      EXPECT_TRUE(std::any_of(op->headers.begin(), op->headers.end(), [](const SourceFile& h) {
        return h.text.find("jsd_logits_fwd_v(") != std::string_view::npos;
      }));
    else
      EXPECT_NE(op->main.text.find("glu_fwd_v"), std::string_view::npos) << op->name;
    for (const SourceFile& h : op->headers) EXPECT_FALSE(h.text.empty()) << h.name;
    // Every launch bound the source uses comes from the entry, as an NVRTC option.
    std::string text(op->main.text);
    for (const SourceFile& h : op->headers) text += h.text;
    for (std::string_view key : {"LIGERD_LB_I1=", "LIGERD_LB_LOOP=", "LIGERD_LB_V="}) {
      if (text.find(std::string(key.substr(0, key.size() - 1))) == std::string::npos) continue;
      bool found = false;
      for (const std::string& o : op->options) found = found || o.starts_with("-D" + std::string(key));
      EXPECT_TRUE(found) << op->name << " " << key;
    }
  }
  EXPECT_TRUE(EmbeddedSource("kernels/ops/nothing.cuh").empty());
}

// For every hidden size (odd ones, powers of two, past 64K), both directions and all dtypes,
// the default config is legal and covers the row.
TEST(RmsNormConfig, DefaultIsLegalForAllShapes) {
  std::vector<int64_t> sizes = {1, 2, 3, 7, 8, 31, 64, 100, 127, 128, 255, 256, 1000, 1024, 2048,
                                2880, 4096, 5120, 8191, 8192, 11008, 12288, 16384, 18432, 32768,
                                65535, 65536, 65537, 131072, 1 << 20};
  for (bool backward : {false, true})
    for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
      for (int64_t n : sizes)
        for (bool vec : {true, false}) {
          if (vec && n % RmsNormVectorWidth(x) != 0) continue;
          for (int64_t rows : {1, 3, 4096, 1 << 20}) {
            LaunchConfig c = RmsNormDefaultConfig(backward, rows, n, x, vec, 132);
            absl::Status s = RmsNormCheckConfig(backward, c, n, x, vec);
            EXPECT_TRUE(s.ok()) << "bwd=" << backward << " " << DTypeName(x) << " n=" << n
                                << " vec=" << vec << " rows=" << rows << ": " << s;
          }
        }
}

TEST(RmsNormConfig, ChoicesAtKeyShapes) {
  // 16384 x 4096 bf16 forward: 256 threads x 2 vectors of 8 = one row, one row per block (the
  // i2 kernel's 256-thread bound).
  LaunchConfig f = RmsNormDefaultConfig(false, 16384, 4096, DType::kBFloat16, true, 132);
  EXPECT_EQ(f.threads_per_row, 256);
  EXPECT_EQ(f.iters, 2);
  EXPECT_EQ(f.rows_per_block, 1);
  EXPECT_EQ(RmsNormKernelName(false, f), "rms_norm_fwd_i2_v");
  // Backward: 256 threads x 2 vectors, 512-thread blocks.
  LaunchConfig b = RmsNormDefaultConfig(true, 16384, 4096, DType::kBFloat16, true, 132);
  EXPECT_EQ(b.threads_per_row, 256);
  EXPECT_EQ(b.iters, 2);
  EXPECT_EQ(b.rows_per_block, 2);
  // Non-power-of-two hidden size: 640 vectors do not fit i2's 256 threads, so the i4 rule:
  // 160 threads x 4 x 8 = 5120, no padding.
  LaunchConfig g = RmsNormDefaultConfig(false, 4096, 5120, DType::kBFloat16, true, 132);
  EXPECT_EQ(g.threads_per_row, 160);
  EXPECT_EQ(g.iters, 4);
  // 8192: 256 threads x 4 (i3 x 352 measured 8% slower).
  LaunchConfig h = RmsNormDefaultConfig(false, 4096, 8192, DType::kBFloat16, true, 132);
  EXPECT_EQ(h.threads_per_row, 256);
  EXPECT_EQ(h.iters, 4);
  // 2048: i2 at 128 threads, two rows per 256-thread block.
  LaunchConfig s = RmsNormDefaultConfig(false, 16384, 2048, DType::kBFloat16, true, 132);
  EXPECT_EQ(s.threads_per_row, 128);
  EXPECT_EQ(s.iters, 2);
  EXPECT_EQ(s.rows_per_block, 2);
  // Past what registers hold: the streaming kernel.
  LaunchConfig l = RmsNormDefaultConfig(false, 8, 1 << 20, DType::kBFloat16, true, 132);
  EXPECT_EQ(l.iters, 0);
  EXPECT_EQ(RmsNormKernelName(false, l), "rms_norm_fwd_loop_v");
  // Tiny rows: several rows share a warp.
  LaunchConfig t = RmsNormDefaultConfig(false, 100000, 64, DType::kBFloat16, true, 132);
  EXPECT_EQ(t.threads_per_row, 2);
  EXPECT_EQ(t.threads_per_row * t.rows_per_block % 32, 0);
}

TEST(RmsNormConfig, BadTunedConfigsAreRejected) {
  LaunchConfig c = RmsNormDefaultConfig(false, 16, 4096, DType::kBFloat16, true, 132);
  ASSERT_TRUE(RmsNormCheckConfig(false, c, 4096, DType::kBFloat16, true).ok());
  EXPECT_FALSE(RmsNormCheckConfig(false, c, 4096, DType::kBFloat16, false).ok()) << "unaligned";
  LaunchConfig small = c;
  small.iters = 1;
  EXPECT_FALSE(RmsNormCheckConfig(false, small, 4096, DType::kBFloat16, true).ok()) << "capacity";
  LaunchConfig odd = c;
  odd.threads_per_row = 48;
  EXPECT_FALSE(RmsNormCheckConfig(false, odd, 4096, DType::kBFloat16, true).ok()) << "tpr";
  LaunchConfig big = c;
  big.threads_per_row = 512;
  big.rows_per_block = 4;
  EXPECT_FALSE(RmsNormCheckConfig(false, big, 4096, DType::kBFloat16, true).ok()) << "block";
  LaunchConfig bwd = RmsNormDefaultConfig(true, 16, 4096, DType::kBFloat16, true, 132);
  bwd.iters = 3;
  bwd.threads_per_row = 1024;
  bwd.rows_per_block = 1;
  EXPECT_FALSE(RmsNormCheckConfig(true, bwd, 4096, DType::kBFloat16, true).ok())
      << "i3 backward kernels are bounded to 512 threads";
  bwd.iters = 5;
  bwd.threads_per_row = 128;
  EXPECT_FALSE(RmsNormCheckConfig(true, bwd, 4096, DType::kBFloat16, true).ok()) << "no i5 bwd";
  // The plain forward i2 kernel is bounded to 256 threads (a tuning DB written before session 6
  // may hold i2 x 512 for 8192-wide rows: refused, so the executor falls back to the default).
  LaunchConfig i2 = RmsNormDefaultConfig(false, 16, 8192, DType::kBFloat16, true, 132);
  i2.iters = 2;
  i2.threads_per_row = 512;
  i2.rows_per_block = 1;
  EXPECT_FALSE(RmsNormCheckConfig(false, i2, 8192, DType::kBFloat16, true).ok()) << "i2 forward is bounded to 256";
  i2.threads_per_row = 256;
  i2.iters = 2;
  EXPECT_TRUE(RmsNormCheckConfig(false, i2, 4096, DType::kBFloat16, true).ok());
}

TEST(GluConfig, DefaultAndTunedConfigs) {
  LaunchConfig c = GluDefaultConfig(true);
  EXPECT_TRUE(GluCheckConfig(c, true).ok());
  EXPECT_FALSE(GluCheckConfig(c, false).ok()) << "vectorized needs aligned operands";
  EXPECT_TRUE(GluCheckConfig(GluDefaultConfig(false), false).ok());
  LaunchConfig odd = c;
  odd.threads_per_row = 48;
  EXPECT_FALSE(GluCheckConfig(odd, true).ok());
  LaunchConfig big = c;
  big.threads_per_row = 2048;
  EXPECT_FALSE(GluCheckConfig(big, true).ok());
  LaunchConfig two_d = c;
  two_d.rows_per_block = 2;
  EXPECT_FALSE(GluCheckConfig(two_d, true).ok());
  EXPECT_EQ(GluKernelName(false, true), "glu_fwd_v");
  EXPECT_EQ(GluKernelName(true, false), "glu_bwd_s");
  EXPECT_EQ(GluVectorWidth(DType::kBFloat16), 8);
  EXPECT_EQ(GluVectorWidth(DType::kFloat32), 4);
}

}  // namespace
}  // namespace ligerd::kernels
