// Cross-entropy argument checking and planning (no CUDA): fake pointers and a fake device.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/catalogue.h"
#include "kernels/ops/cross_entropy.h"
#include "kernels/ops/cross_entropy_params.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

char* Addr(int i) { return static_cast<char*>(testing::Addr(i)); }
using testing::Tensor;

absl::StatusOr<OpPlan> Plan(const std::string& op, const std::vector<TensorView>& t, const std::vector<double>& s,
                            int blocks_per_sm = 1) {
  OpCall c;
  c.tensors = t;
  c.scalars = s;
  return PlanOp(op, c, testing::FakeDevice(blocks_per_sm));
}

template <class P>
P Params(const OpPlan& p, size_t i = 0) {
  P q;
  EXPECT_EQ(p.launches.at(i).params.size(), sizeof(q));
  std::memcpy(&q, p.launches[i].params.data(), sizeof(q));
  return q;
}

void ExpectInvalid(const absl::StatusOr<OpPlan>& p, const std::string& fragment) {
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_NE(p.status().message().find(fragment), absl::string_view::npos)
      << "message: " << p.status().message() << "\nexpected to contain: " << fragment;
}

struct Fwd {
  std::vector<TensorView> t;
  std::vector<double> s = {-100, 0.0, 0.0, 1, 0.0, 0};  // ignore, lss, ls, mean, softcap, token scaling
};
// X [rows, V] in place (dX = X), loss only outputs.
Fwd MakeFwd(int64_t rows, int64_t v, DType dt = DType::kBFloat16, bool in_place = true) {
  Fwd f;
  f.t = {Tensor(Addr(0), dt, {rows, v}),
         Tensor(Addr(1), DType::kInt64, {rows}),
         TensorView{},
         Tensor(Addr(3), DType::kFloat32, {4}),
         TensorView{},
         in_place ? Tensor(Addr(0), dt, {rows, v}) : Tensor(Addr(5), dt, {rows, v}),
         Tensor(Addr(6), DType::kFloat32, {rows}),
         TensorView{},
         TensorView{}};
  return f;
}

TEST(CrossEntropyPlan, InPlaceForwardAtLlama3Shape) {
  Fwd f = MakeFwd(16384, 128256);
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "ce_fwd");
  EXPECT_EQ(p->variant.tag, "xbf16");
  EXPECT_EQ(p->launches[0].block[0], 1024u);
  // 251 KiB rows: 24 MiB of L2 holds ~98 rows, fewer than the SMs, so one block per SM.
  EXPECT_EQ(p->launches[0].grid[0], 132u);
  const auto q = Params<LigerdCeFwdParams>(*p);
  EXPECT_EQ(q.x, Addr(0));
  EXPECT_EQ(q.dx, Addr(0));
  EXPECT_EQ(q.rows, 16384);
  EXPECT_EQ(q.cols, 128256);
  EXPECT_EQ(q.x_stride, 128256);
  EXPECT_EQ(q.weight, nullptr);
  EXPECT_EQ(q.pred, nullptr);
  EXPECT_EQ(q.ignore_index, -100);
  EXPECT_EQ(q.reduction, LIGERD_CE_REDUCE_MEAN);
}

TEST(CrossEntropyPlan, SmallRowsGetSmallerBlocksAndMoreOfThem) {
  Fwd f = MakeFwd(4096, 32000);
  auto p = Plan("cross_entropy_fwd", f.t, f.s, /*blocks_per_sm=*/2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].block[0], 512u);  // 4000 vectors / 8 per thread
  EXPECT_EQ(p->launches[0].grid[0], 264u);   // 62.5 KiB rows: 2 per SM fit the L2 budget
  Fwd one = MakeFwd(1, 50257, DType::kFloat32);
  p = Plan("cross_entropy_fwd", one.t, one.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  EXPECT_EQ(p->variant.tag, "xf32");
}

TEST(CrossEntropyPlan, SoftcapIsItsOwnVariant) {
  Fwd f = MakeFwd(8, 50257);
  f.s[4] = 30.0;
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->variant.tag, "xbf16.softcap");
  EXPECT_FLOAT_EQ(Params<LigerdCeFwdParams>(*p).softcap, 30.f);
}

TEST(CrossEntropyPlan, LossOnlyAndOutOfPlaceAndStridedRows) {
  Fwd f = MakeFwd(8, 1000);
  f.t[5] = TensorView{};  // no gradient
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params<LigerdCeFwdParams>(*p).dx, nullptr);
  // Rows of a wider buffer (x[:, :1000] of [8, 1024]) and a strided target.
  f = MakeFwd(8, 1000, DType::kBFloat16, /*in_place=*/false);
  f.t[0] = Tensor(Addr(0), DType::kBFloat16, {8, 1000}, {1024, 1});
  f.t[1] = Tensor(Addr(1), DType::kInt64, {8}, {3});
  p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  const auto q = Params<LigerdCeFwdParams>(*p);
  EXPECT_EQ(q.x_stride, 1024);
  EXPECT_EQ(q.dx_stride, 1000);
  EXPECT_EQ(q.target_stride, 3);
}

TEST(CrossEntropyPlan, RejectsBadInputs) {
  Fwd f = MakeFwd(8, 1000);
  f.t[1] = Tensor(Addr(1), DType::kInt64, {7});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "cross_entropy_fwd: tensor 'target' has shape [7], expected [8]");
  f = MakeFwd(8, 1000);
  f.t[1] = Tensor(Addr(1), DType::kInt32, {8});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'target' has dtype int32");
  f = MakeFwd(8, 1000);
  f.t[2] = Tensor(Addr(2), DType::kFloat32, {999});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'weight' has shape [999], expected [1000]");
  f = MakeFwd(8, 1000);
  f.t[3] = Tensor(Addr(3), DType::kFloat32, {3});
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "tensor 'denom'");
  f = MakeFwd(8, 1000);
  f.t[0] = Tensor(Addr(0), DType::kBFloat16, {8, 1000}, {1, 8});
  f.t[5] = TensorView{};
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "contiguous last dim");
  f = MakeFwd(8, 1000);
  f.s[3] = 3;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "reduction must be 0 (none), 1 (mean) or 2 (sum)");
  f = MakeFwd(8, 1000);
  f.s[2] = 1.5;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "label_smoothing must be in [0, 1]");
  f = MakeFwd(8, 1000);
  f.s[4] = -1;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "softcap must be > 0");
  f = MakeFwd(8, 1000);
  f.s[0] = -0.5;
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "ignore_index must be an integer");
  f = MakeFwd(8, 1000);
  f.t[5] = Tensor(Addr(0) + 2, DType::kBFloat16, {8, 1000});  // overlaps X, not exactly X
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "output 'dX' overlaps tensor 'X'");
  f = MakeFwd(8, 0);
  ExpectInvalid(Plan("cross_entropy_fwd", f.t, f.s), "no classes");
}

TEST(CrossEntropyPlan, NoRowsIsNothingToDo) {
  Fwd f = MakeFwd(0, 1000);
  auto p = Plan("cross_entropy_fwd", f.t, f.s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->launches.empty());
}

TEST(CrossEntropyPlan, CountChecksClassesAndTargets) {
  std::vector<TensorView> t = {Tensor(Addr(0), DType::kInt64, {100}), TensorView{},
                               Tensor(Addr(2), DType::kFloat32, {4})};
  auto p = Plan("cross_entropy_count", t, {-100, 50257});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->launches.size(), 1u);
  EXPECT_EQ(p->launches[0].kernel, "ce_count");
  EXPECT_EQ(p->launches[0].grid[0], 1u);
  const auto q = Params<LigerdCeCountParams>(*p);
  EXPECT_EQ(q.rows, 100);
  EXPECT_EQ(q.cols, 50257);
  EXPECT_EQ(q.ignore_index, -100);
  ExpectInvalid(Plan("cross_entropy_count", t, {-100, 0}), "num_classes must be in [1, 2^31]");
  t[1] = Tensor(Addr(1), DType::kFloat32, {10});
  ExpectInvalid(Plan("cross_entropy_count", t, {-100, 50257}), "tensor 'weight' has shape [10], expected [50257]");
}

TEST(CrossEntropyPlan, ScaleTakesOneFactorOrOnePerRow) {
  std::vector<TensorView> t = {Tensor(Addr(0), DType::kBFloat16, {128256, 4096}), Tensor(Addr(1), DType::kFloat32, {1})};
  auto p = Plan("cross_entropy_scale", t, {}, 8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->launches[0].kernel, "ce_scale");
  EXPECT_EQ(Params<LigerdCeScaleParams>(*p).per_row, 0);
  t[1] = Tensor(Addr(1), DType::kFloat32, {128256});
  p = Plan("cross_entropy_scale", t, {}, 8);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Params<LigerdCeScaleParams>(*p).per_row, 1);
  t[1] = Tensor(Addr(1), DType::kFloat32, {3});
  ExpectInvalid(Plan("cross_entropy_scale", t, {}), "tensor 's' has shape [3], expected [1] or [128256]");
}

TEST(CrossEntropyConfig, DefaultIsLegalForAllShapes) {
  for (DType x : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
    for (int64_t v : {1, 2, 7, 100, 1000, 32000, 50257, 128256, 151936, 262144, 1 << 22})
      for (int64_t rows : {1, 7, 8192, 16384}) {
        LaunchConfig c = CrossEntropyDefaultConfig(x, rows, v, 132, 2);
        EXPECT_TRUE(CrossEntropyCheckConfig(c).ok()) << v;
        EXPECT_GE(c.grid, 1);
        EXPECT_LE(c.grid, rows);
        EXPECT_LE(c.grid, 264);
      }
  LaunchConfig bad;
  bad.threads_per_row = 100;
  bad.rows_per_block = 1;
  EXPECT_FALSE(CrossEntropyCheckConfig(bad).ok());
}

}  // namespace
}  // namespace ligerd::kernels
