// Argument checking and planning of the distillation losses (kl_div_fwd, kl_div_bwd, jsd_fwd,
// tvd_fwd), no CUDA: fake pointers and a fake device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/distill.h"
#include "kernels/ops/distill_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Tensor;
char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }

constexpr DType kBf16 = DType::kBFloat16, kF32 = DType::kFloat32, kF16 = DType::kFloat16, kI64 = DType::kInt64;

using testing::ExpectInvalid;

template <typename P>
P Params(const KernelLaunch& k) {
  P p;
  EXPECT_EQ(k.params.size(), sizeof(P));
  std::memcpy(&p, k.params.data(), sizeof(P));
  return p;
}

struct Call {
  std::string op;
  std::vector<TensorView> t;
  std::vector<double> s;
  absl::StatusOr<OpPlan> Plan(const LaunchConfig* tuned = nullptr) const {
    OpCall c;
    c.tensors = t;
    c.scalars = s;
    c.tuned = tuned;
    return PlanOp(op, c, testing::FakeDevice());
  }
};

// Contiguous [rows, n] calls at distinct addresses. reduction: Liger's codes (0 none .. 3 batchmean).
Call KlFwd(int64_t rows, int64_t n, DType dt = kBf16, int reduction = 3, int log_target = 0) {
  const std::vector<int64_t> loss = reduction == 0 ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{rows};
  return {"kl_div_fwd",
          {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}), Tensor(Addr(2), kF32, loss)},
          {double(log_target), double(reduction), 1e-10}};
}
Call KlBwd(int64_t rows, int64_t n, DType dt = kBf16, bool elementwise = false) {
  const std::vector<int64_t> g = elementwise ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{1};
  return {"kl_div_bwd",
          {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), kF32, g), Tensor(Addr(2), dt, {rows, n})},
          {0.0, 1.0 / double(std::max<int64_t>(rows, 1))}};
}
Call Jsd(int64_t rows, int64_t n, DType dt = kBf16, bool labels = false, double beta = 0.5) {
  return {"jsd_fwd",
          {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}),
           labels ? Tensor(Addr(2), kI64, {rows}) : TensorView{}, labels ? Tensor(Addr(3), kI64, {1}) : TensorView{},
           Tensor(Addr(4), kF32, {rows}), Tensor(Addr(5), dt, {rows, n})},
          {beta, -100.0}};
}
Call Tvd(int64_t rows, int64_t n, DType dt = kBf16, int reduction = 3, bool labels = false) {
  const std::vector<int64_t> loss = reduction == 0 ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{rows};
  return {"tvd_fwd",
          {Tensor(Addr(0), dt, {rows, n}), Tensor(Addr(1), dt, {rows, n}),
           labels ? Tensor(Addr(2), kI64, {rows}) : TensorView{}, labels ? Tensor(Addr(3), kI64, {1}) : TensorView{},
           Tensor(Addr(4), kF32, loss), Tensor(Addr(5), dt, {rows, n})},
          {double(reduction), -100.0}};
}

struct Shape {
  std::string kernel;
  unsigned threads, rows_per_block, grid;
};
Shape PlannedShape(const Call& c) {
  auto p = c.Plan();
  EXPECT_TRUE(p.ok()) << c.op << ": " << p.status();
  if (!p.ok() || p->launches.size() != 1) {
    ADD_FAILURE() << c.op << ": expected one launch";
    return {};
  }
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.block[2], 1u);
  EXPECT_EQ(k.grid[1], 1u);
  EXPECT_EQ(k.shared_bytes, 0u) << "no dynamic shared memory";
  EXPECT_EQ(p->workspace_bytes, 0u) << "no workspace";
  return {k.kernel, k.block[0], k.block[1], k.grid[0]};
}

const char* const kOps[] = {"kl_div_fwd", "kl_div_bwd", "jsd_fwd", "tvd_fwd"};

TEST(DistillPlan, CatalogueEntries) {
  const OpSpec* kf = FindOp("kl_div_fwd");
  const OpSpec* kb = FindOp("kl_div_bwd");
  const OpSpec* j = FindOp("jsd_fwd");
  const OpSpec* t = FindOp("tvd_fwd");
  ASSERT_TRUE(kf && kb && j && t);
  auto names = [](const OpSpec* op) {
    std::vector<std::string> out;
    for (const TensorParam& p : op->tensors) out.push_back(p.name + (p.optional ? "?" : "") + (p.output ? "->" : ""));
    return out;
  };
  EXPECT_EQ(names(kf), (std::vector<std::string>{"X", "target", "loss->"}));
  EXPECT_EQ(names(kb), (std::vector<std::string>{"target", "G", "dX->"}));
  EXPECT_EQ(names(j), (std::vector<std::string>{"X", "Y", "labels?", "n_valid?", "loss->", "dX?->"}));
  EXPECT_EQ(names(t), (std::vector<std::string>{"P", "Q", "labels?", "n_valid?", "loss->", "grad?->"}));
  EXPECT_EQ(kf->scalars, (std::vector<std::string>{"log_target", "reduction", "eps"}));
  EXPECT_EQ(kb->scalars, (std::vector<std::string>{"log_target", "scale"}));
  EXPECT_EQ(j->scalars, (std::vector<std::string>{"beta", "ignore_index"}));
  EXPECT_EQ(t->scalars, (std::vector<std::string>{"reduction", "ignore_index"}));
  // One module per op and dtype: the op's define picks its kernels (and its launch bound).
  const std::pair<const OpSpec*, int> which[] = {{kf, LIGERD_DISTILL_KL_FWD}, {kb, LIGERD_DISTILL_KL_BWD},
                                                 {j, LIGERD_DISTILL_JSD}, {t, LIGERD_DISTILL_TVD}};
  for (const auto& [op, w] : which) {
    EXPECT_EQ(op->main.name, "kernels/ops/distill.cuh");
    ASSERT_EQ(op->variants.size(), 3u) << op->name;
    EXPECT_EQ(op->variants[0].tag, "xf32");
    EXPECT_EQ(op->variants[1].tag, "xbf16");
    EXPECT_EQ(op->variants[2].tag, "xf16");
    for (const KernelVariant& v : op->variants) {
      const std::string def = absl::StrCat("LIGERD_DISTILL_OP=", w);
      EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), def), v.defines.end()) << op->name << " " << v.tag;
    }
    EXPECT_NE(op->main.text.find(op->name + "_v("), std::string_view::npos) << op->name;
    EXPECT_NE(op->main.text.find(op->name + "_s("), std::string_view::npos) << op->name;
  }
}

TEST(DistillPlan, JsdAtAVocabularyRow) {
  Call c = Jsd(8192, 128256, kBf16, /*labels=*/true);
  auto p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.kernel, "jsd_fwd_v");
  EXPECT_EQ(k.block[0], 512u) << "16032 vectors: the default's largest row group";
  EXPECT_EQ(k.block[1], 1u);
  EXPECT_EQ(k.grid[0], 8192u) << "one block per row";
  EXPECT_EQ(p->variant.tag, "xbf16");
  const auto q = Params<LigerdJsdParams>(k);
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.y, Addr(1));
  EXPECT_EQ(static_cast<const void*>(q.labels), Addr(2));
  EXPECT_EQ(static_cast<const void*>(q.n_valid), Addr(3));
  EXPECT_EQ(static_cast<void*>(q.loss), Addr(4));
  EXPECT_EQ(q.dx, Addr(5));
  EXPECT_EQ(q.rows, 8192);
  EXPECT_EQ(q.n, 128256);
  EXPECT_EQ(q.x_stride, 128256);
  EXPECT_EQ(q.labels_stride, 1);
  EXPECT_EQ(q.ignore_index, -100);
  EXPECT_FLOAT_EQ(q.beta, 0.5f);
  // Without labels: no count either, and loss only without dX.
  Call d = Jsd(4, 1000, kF32);
  d.t[5] = TensorView{};
  auto pd = d.Plan();
  ASSERT_TRUE(pd.ok()) << pd.status();
  const auto qd = Params<LigerdJsdParams>(pd->launches[0]);
  EXPECT_EQ(qd.labels, nullptr);
  EXPECT_EQ(qd.n_valid, nullptr);
  EXPECT_EQ(qd.dx, nullptr);
}

TEST(DistillPlan, ShapesFromOneElementToTheWidestVocabulary) {
  struct Case {
    Call call;
    Shape want;
  };
  const Case cases[] = {
      // One element: a one-lane row, 256 rows a block.
      {KlFwd(1, 1, kBf16), {"kl_div_fwd_s", 1, 256, 1}},
      {Jsd(1, 1, kF32), {"jsd_fwd_s", 1, 256, 1}},
      // 3 x 5 fp32: odd, element accesses; 5 elements / 8 per thread -> one lane.
      {Tvd(3, 5, kF32), {"tvd_fwd_s", 1, 256, 1}},
      // 33 x 1000 bf16: 125 vectors -> 16 lanes, 16 rows a block.
      {KlBwd(33, 1000, kBf16), {"kl_div_bwd_v", 16, 16, 3}},
      // Vocabularies: 32000 bf16 = 4000 vectors -> 512 lanes; fp32 8000 -> 512 (capped).
      {Jsd(16, 32000, kBf16), {"jsd_fwd_v", 512, 1, 16}},
      {Tvd(16, 32000, kF32, 0), {"tvd_fwd_v", 512, 1, 16}},
      {KlFwd(16, 151936, kF16, 0), {"kl_div_fwd_v", 512, 1, 16}},
      {Jsd(8, 262144, kBf16, true), {"jsd_fwd_v", 512, 1, 8}},
      {KlBwd(8, 262144, kF32, true), {"kl_div_bwd_v", 512, 1, 8}},
      // An odd vocabulary: element accesses.
      {Tvd(8, 32001, kBf16, 3, true), {"tvd_fwd_s", 512, 1, 8}},
  };
  for (const Case& c : cases) {
    const Shape got = PlannedShape(c.call);
    const std::string what = absl::StrCat(c.call.op, " ", c.want.kernel);
    EXPECT_EQ(got.kernel, c.want.kernel) << what;
    EXPECT_EQ(got.threads, c.want.threads) << what;
    EXPECT_EQ(got.rows_per_block, c.want.rows_per_block) << what;
    EXPECT_EQ(got.grid, c.want.grid) << what;
  }
}

TEST(DistillPlan, DefaultIsLegalAndCoversEveryRow) {
  for (DType dt : {kF32, kBf16, kF16})
    for (int64_t n : {1, 2, 3, 7, 8, 9, 63, 64, 100, 1000, 4095, 4096, 32000, 32001, 128256, 151936, 262144})
      for (bool vec : {true, false}) {
        const LaunchConfig c = DistillDefaultConfig(n, dt, vec);
        EXPECT_TRUE(DistillCheckConfig(c, 1024, vec).ok()) << n << " " << DistillCheckConfig(c, 1024, vec);
        const int tpr = c.threads_per_row;
        EXPECT_EQ(tpr & (tpr - 1), 0) << "a power of two";
        EXPECT_LE(tpr, kDistillMaxDefaultThreads);
        EXPECT_EQ((tpr * c.rows_per_block) % 32, 0);
        EXPECT_EQ(c.iters, 0);
      }
}

TEST(DistillPlan, StridedRowsAndMisalignmentTakeElementAccesses) {
  // Rows at a wider pitch stay vectorised when the pitch keeps 16-byte alignment ...
  Call c = Jsd(64, 4096, kBf16);
  c.t[0] = Tensor(Addr(0), kBf16, {64, 4096}, {4096 + 64, 1});
  auto p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "jsd_fwd_v");
  EXPECT_EQ(Params<LigerdJsdParams>(p->launches[0]).x_stride, 4096 + 64);
  // ... and fall back to element accesses otherwise (a pitch or a start off the vector grid).
  c.t[1] = Tensor(Addr(1), kBf16, {64, 4096}, {4096 + 3, 1});
  p = c.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "jsd_fwd_s");
  Call k = KlFwd(64, 4096, kF32, 0);
  k.t[2] = Tensor(Addr(2) + 4, kF32, {64, 4096});
  p = k.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "kl_div_fwd_s") << "the elementwise loss is stored with the same vectors";
  // A uniform gradient is one element: its alignment does not matter.
  Call b = KlBwd(64, 4096, kBf16);
  b.t[1] = Tensor(Addr(1) + 4, kF32, {1});
  p = b.Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "kl_div_bwd_v");
  EXPECT_EQ(Params<LigerdKlDivBwdParams>(p->launches[0]).elementwise, 0);
}

TEST(DistillPlan, ScalarsReachTheKernels) {
  auto kf = KlFwd(4, 64, kF32, 0, 1).Plan();
  ASSERT_TRUE(kf.ok()) << kf.status();
  const auto a = Params<LigerdKlDivFwdParams>(kf->launches[0]);
  EXPECT_EQ(a.log_target, 1);
  EXPECT_EQ(a.elementwise, 1);
  EXPECT_EQ(a.loss_stride, 64);
  EXPECT_FLOAT_EQ(a.eps, 1e-10f);
  auto kb = KlBwd(4, 64, kF32, true).Plan();
  ASSERT_TRUE(kb.ok()) << kb.status();
  const auto b = Params<LigerdKlDivBwdParams>(kb->launches[0]);
  EXPECT_EQ(b.elementwise, 1);
  EXPECT_EQ(b.g_stride, 64);
  EXPECT_FLOAT_EQ(b.scale, 0.25f);
  for (int r : {0, 1, 2, 3}) {
    auto tv = Tvd(4, 64, kBf16, r, true).Plan();
    ASSERT_TRUE(tv.ok()) << tv.status();
    const auto t = Params<LigerdTvdParams>(tv->launches[0]);
    EXPECT_EQ(t.reduction, r);
    EXPECT_EQ(t.loss_stride, r == 0 ? 64 : 1);
    EXPECT_EQ(t.grad, Addr(5));
  }
  for (double beta : {0.0, 0.25, 1.0}) {
    auto js = Jsd(4, 64, kBf16, false, beta).Plan();
    ASSERT_TRUE(js.ok()) << js.status();
    EXPECT_FLOAT_EQ(Params<LigerdJsdParams>(js->launches[0]).beta, static_cast<float>(beta));
  }
}

TEST(DistillPlan, NoRowsPlansNothing) {
  for (const Call& c : {KlFwd(0, 64), KlBwd(0, 64), Jsd(0, 64, kBf16, true), Tvd(0, 64, kBf16, 0)}) {
    auto p = c.Plan();
    ASSERT_TRUE(p.ok()) << c.op << ": " << p.status();
    EXPECT_TRUE(p->launches.empty()) << c.op;
  }
}

TEST(DistillPlan, BadCallsNameTheOpAndTheTensor) {
  // Shapes and dtypes of the pair.
  Call c = KlFwd(4, 64);
  c.t[1] = Tensor(Addr(1), kBf16, {4, 65});
  ExpectInvalid(c.Plan(), "kl_div_fwd");
  c = KlFwd(4, 64);
  c.t[1] = Tensor(Addr(1), kF16, {4, 64});
  ExpectInvalid(c.Plan(), "target");
  // The loss's shape follows the reduction.
  c = KlFwd(4, 64, kBf16, 3);
  c.t[2] = Tensor(Addr(2), kF32, {4, 64});
  ExpectInvalid(c.Plan(), "'loss'");
  c = KlFwd(4, 64, kBf16, 0);
  c.t[2] = Tensor(Addr(2), kF32, {4});
  ExpectInvalid(c.Plan(), "'loss'");
  c = Tvd(4, 64, kBf16, 0);
  c.t[4] = Tensor(Addr(4), kF32, {4});
  ExpectInvalid(c.Plan(), "tvd_fwd: tensor 'loss'");
  // Scalars.
  c = KlFwd(4, 64);
  c.s[1] = 4;
  ExpectInvalid(c.Plan(), "reduction");
  c = KlFwd(4, 64);
  c.s[0] = 0.5;
  ExpectInvalid(c.Plan(), "log_target");
  c = KlFwd(4, 64);
  c.s[2] = -1;
  ExpectInvalid(c.Plan(), "eps");
  c = Jsd(4, 64, kBf16, false, 1.5);
  ExpectInvalid(c.Plan(), "jsd_fwd: scalar 'beta' must be in [0, 1]");
  c = Jsd(4, 64, kBf16, false, std::nan(""));
  ExpectInvalid(c.Plan(), "beta");
  c = Jsd(4, 64);
  c.s[1] = 2.5;
  ExpectInvalid(c.Plan(), "ignore_index");
  c = KlBwd(4, 64);
  c.s[1] = INFINITY;
  ExpectInvalid(c.Plan(), "scale");
  // labels and their count go together; one label per row.
  c = Jsd(4, 64, kBf16, true);
  c.t[3] = TensorView{};
  ExpectInvalid(c.Plan(), "'labels' needs 'n_valid'");
  c = Jsd(4, 64, kBf16, false);
  c.t[3] = Tensor(Addr(3), kI64, {1});
  ExpectInvalid(c.Plan(), "'n_valid' is given without 'labels'");
  c = Tvd(4, 64, kBf16, 3, true);
  c.t[2] = Tensor(Addr(2), kI64, {5});
  ExpectInvalid(c.Plan(), "tvd_fwd: tensor 'labels'");
  c = Tvd(4, 64, kBf16, 3, true);
  c.t[3] = Tensor(Addr(3), kI64, {2});
  ExpectInvalid(c.Plan(), "'n_valid'");
  // The gradient: one element or the target's shape.
  Call b = KlBwd(4, 64);
  b.t[1] = Tensor(Addr(1), kF32, {4});
  ExpectInvalid(b.Plan(), "kl_div_bwd: tensor 'G'");
  // Outputs: shape, dtype, overlapping rows.
  c = Jsd(4, 64);
  c.t[5] = Tensor(Addr(5), kF32, {4, 64});
  ExpectInvalid(c.Plan(), "'dX'");
  c = Tvd(4, 64);
  c.t[5] = Tensor(Addr(5), kBf16, {4, 64}, {8, 1});
  ExpectInvalid(c.Plan(), "'grad'");
  // A row of nothing.
  c = Jsd(4, 0);
  ExpectInvalid(c.Plan(), "empty last dim");
  // Rows past what one block per row group can launch.
  const int64_t many = int64_t{1} << 32;  // 8 GiB of bf16: fake addresses far enough apart
  b = {"kl_div_bwd", {Tensor(Addr(0), kBf16, {many, 1}), Tensor(Addr(3), kF32, {1}), Tensor(Addr(4), kBf16, {many, 1})},
       {0.0, 1.0}};
  ExpectInvalid(b.Plan(), "rows");
}

TEST(DistillPlan, TunedConfigsAreCheckedAgainstTheBound) {
  for (const char* op : kOps) {
    const Call c = std::string(op) == "kl_div_fwd" ? KlFwd(64, 4096)
                   : std::string(op) == "kl_div_bwd" ? KlBwd(64, 4096)
                   : std::string(op) == "jsd_fwd"    ? Jsd(64, 4096)
                                                     : Tvd(64, 4096);
    LaunchConfig good;
    good.threads_per_row = 1024;
    good.rows_per_block = 1;
    good.vectorized = true;
    auto p = c.Plan(&good);
    ASSERT_TRUE(p.ok()) << op << ": " << p.status();
    EXPECT_EQ(p->launches[0].block[0], 1024u);
    EXPECT_EQ(p->launches[0].grid[0], 64u);
    LaunchConfig too_big = good;
    too_big.rows_per_block = 2;
    ExpectInvalid(c.Plan(&too_big), std::string(op) + ": tuned config");
    LaunchConfig odd = good;
    odd.threads_per_row = 48;
    odd.rows_per_block = 2;
    ExpectInvalid(c.Plan(&odd), "threads_per_row");
    LaunchConfig regs = good;
    regs.iters = 2;
    ExpectInvalid(c.Plan(&regs), "stream");
  }
}

TEST(DistillPlan, TuningCandidatesAndProblems) {
  // A vocabulary row: every block shape from 128 to 1024 threads with one row, vectorised as
  // the default; every candidate plans (tests/kernels/tuning_test.cc checks that for all ops).
  for (const char* op : kOps) {
    const OpSpec* spec = FindOp(op);
    ASSERT_TRUE(spec && spec->candidates && spec->tuning_shape && spec->tuning_problem) << op;
    auto problem = spec->tuning_problem({kBf16, 4096, 128256});
    ASSERT_TRUE(problem.ok()) << op << ": " << problem.status();
    std::vector<TensorView> t;
    for (size_t i = 0; i < problem->tensors.size(); ++i) {
      const ScratchTensor& s = problem->tensors[i];
      t.push_back(s.present ? Tensor(Addr(static_cast<int>(i)), s.dtype, s.sizes) : TensorView{});
    }
    OpCall call;
    call.tensors = t;
    call.scalars = problem->scalars;
    const std::vector<LaunchConfig> cands = spec->candidates(call, testing::FakeDevice());
    bool has[4] = {false, false, false, false};
    for (const LaunchConfig& c : cands) {
      EXPECT_TRUE(c.vectorized) << op;
      for (int i = 0; i < 4; ++i) has[i] = has[i] || (c.threads_per_row == (128 << i) && c.rows_per_block == 1);
    }
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(has[i]) << op << " lacks " << (128 << i) << " threads a row";
  }
}

// ---- jsd_logits_fwd ----------------------------------------------------------------------------

// [rows, ns] student and [rows, nt] teacher at distinct addresses, labels, scale, loss, hard loss
// (optional) and d_student over the student's own buffer (the chunked loss's in-place call).
Call JsdLogits(int64_t rows, int64_t ns, int64_t nt, DType dt = kBf16, bool hard = false, double s_scale = 1.0) {
  return {"jsd_logits_fwd",
          {Tensor(Addr(0), dt, {rows, ns}), Tensor(Addr(1), dt, {rows, nt}), Tensor(Addr(2), kI64, {rows}),
           Tensor(Addr(3), kF32, {1}), Tensor(Addr(4), kF32, {rows}),
           hard ? Tensor(Addr(5), kF32, {rows}) : TensorView{}, Tensor(Addr(0), dt, {rows, ns})},
          {0.5, -100.0, s_scale, 1.0, 0.7, hard ? 0.3 : 0.0}};
}

TEST(DistillPlan, JsdLogitsAtAVocabularyRow) {
  const OpSpec* op = FindOp("jsd_logits_fwd");
  ASSERT_NE(op, nullptr);
  ASSERT_EQ(op->variants.size(), 3u);
  for (const KernelVariant& v : op->variants)
    EXPECT_NE(std::find(v.defines.begin(), v.defines.end(), absl::StrCat("LIGERD_DISTILL_OP=", LIGERD_DISTILL_JSD_LOGITS)),
              v.defines.end());
  auto p = JsdLogits(8192, 128256, 128256, kBf16, /*hard=*/true).Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  const KernelLaunch& k = p->launches[0];
  EXPECT_EQ(k.kernel, "jsd_logits_fwd_v");
  EXPECT_EQ(k.block[0], 512u);
  EXPECT_EQ(k.block[1], 1u);
  EXPECT_EQ(k.grid[0], 8192u) << "one block per row";
  const auto q = Params<LigerdJsdLogitsParams>(k);
  EXPECT_EQ(q.s, Addr(0));
  EXPECT_EQ(q.t, Addr(1));
  EXPECT_EQ(q.ds, Addr(0)) << "d_student over the student";
  EXPECT_EQ(static_cast<const void*>(q.labels), Addr(2));
  EXPECT_EQ(static_cast<const void*>(q.scale), Addr(3));
  EXPECT_EQ(static_cast<void*>(q.loss), Addr(4));
  EXPECT_EQ(static_cast<void*>(q.hard_loss), Addr(5));
  EXPECT_EQ(q.ns, 128256);
  EXPECT_EQ(q.nt, 128256);
  EXPECT_EQ(q.ignore_index, -100);
  EXPECT_FLOAT_EQ(q.soft_coef, 0.7f);
  EXPECT_FLOAT_EQ(q.hard_coef, 0.3f);
  // A narrower student (padded in the kernel), tempered; odd widths take element accesses.
  auto pad = JsdLogits(3, 32000, 32064, kF32, false, 0.5).Plan();
  ASSERT_TRUE(pad.ok()) << pad.status();
  EXPECT_EQ(pad->launches[0].kernel, "jsd_logits_fwd_v");
  EXPECT_EQ(Params<LigerdJsdLogitsParams>(pad->launches[0]).nt, 32064);
  EXPECT_FLOAT_EQ(Params<LigerdJsdLogitsParams>(pad->launches[0]).s_scale, 0.5f);
  auto odd = JsdLogits(5, 997, 1283).Plan();
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_EQ(odd->launches[0].kernel, "jsd_logits_fwd_s");
  auto none = JsdLogits(0, 8, 8).Plan();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->launches.empty());
}

TEST(DistillPlan, JsdLogitsBadCallsNameTheOpAndTheTensor) {
  ExpectInvalid(JsdLogits(4, 64, 32).Plan(), "fewer than the student's");
  Call rows = JsdLogits(4, 64, 64);
  rows.t[1] = Tensor(Addr(1), kBf16, {5, 64});
  ExpectInvalid(rows.Plan(), "jsd_logits_fwd: tensor 'teacher' has 5 rows");
  Call dt = JsdLogits(4, 64, 64);
  dt.t[1] = Tensor(Addr(1), kF32, {4, 64});
  ExpectInvalid(dt.Plan(), "'teacher'");
  ExpectInvalid(JsdLogits(4, 64, 72, kBf16, /*hard=*/true).Plan(), "hard_loss");
  ExpectInvalid(JsdLogits(4, 64, 64, kBf16, /*hard=*/true, 0.5).Plan(), "s_scale 1");
  Call nolab = JsdLogits(4, 64, 64, kBf16, true);
  nolab.t[2] = TensorView{};
  ExpectInvalid(nolab.Plan(), "needs 'labels'");
  Call beta = JsdLogits(4, 64, 64);
  beta.s[0] = 1.5;
  ExpectInvalid(beta.Plan(), "beta");
  Call scale = JsdLogits(4, 64, 64);
  scale.t[3] = Tensor(Addr(3), kF32, {2});
  ExpectInvalid(scale.Plan(), "'scale'");
  Call nan = JsdLogits(4, 64, 64);
  nan.s[4] = std::nan("");
  ExpectInvalid(nan.Plan(), "soft_coef");
}

}  // namespace
}  // namespace ligerd::kernels
