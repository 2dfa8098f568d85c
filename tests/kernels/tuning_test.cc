// The autotuner's CPU side: the tuning DB file (round trip, corruption, versions, concurrent
// writers, refresh), bucket keys, and candidate legality (every candidate an op lists passes the
// op's own planning checks). Timing itself needs a GPU: tests/gpu/test_tune.py.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "kernels/catalogue.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/ops/glu.h"
#include "kernels/ops/rms_norm.h"
#include "kernels/plan_cache.h"
#include "kernels/tuning/tuner.h"
#include "kernels/tuning/tuning_db.h"
#include "tests/kernels/test_util.h"

namespace ligerd::kernels {
namespace {

using testing::Addr;
using testing::FakeDevice;
using testing::TempDir;
using testing::Tensor;

const GpuIdentity kH100{"NVIDIA H100 80GB HBM3", 132, 90};

TuningEntry Entry(const std::string& op, int64_t rows, int64_t cols, int tpr, double ms = 1.0) {
  TuningEntry e;
  e.key = MakeTuningKey(op, {DType::kBFloat16, rows, cols});
  e.config.threads_per_row = tpr;
  e.config.rows_per_block = 1;
  e.config.iters = 2;
  e.config.vectorized = true;
  e.config.grid = 0;
  e.default_ms = 2 * ms;
  e.tuned_ms = ms;
  e.tuned_rows = rows;
  e.candidates = 12;
  e.unix_time = 1700000000;
  return e;
}

TEST(TuningDbFormat, ClusterFieldsRoundTripAndOldEntriesStillParse) {
  TuningEntry plain = Entry("rms_norm_fwd", 16384, 4096, 512);
  TuningEntry clustered = Entry("cross_entropy_fwd", 16384, 128256, 512);
  clustered.config.iters = 0;
  clustered.config.cluster = 3;
  clustered.config.shared_bytes = 85504;
  const std::string text = EncodeTuningDb(kH100, {plain, clustered});
  // A config without a cluster keeps the 15-field line older builds read.
  EXPECT_NE(text.find("entry rms_norm_fwd bf16 16384 4096 512 1 2 1 0 "), std::string::npos) << text;
  EXPECT_NE(text.find(" 1700000000\nend\n"), std::string::npos) << text;  // rms_norm_fwd sorts last
  EXPECT_NE(text.find(" 1700000000 3 85504\nentry rms_norm_fwd"), std::string::npos) << text;
  auto back = DecodeTuningDb(text, &kH100, nullptr);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  for (const TuningEntry& e : *back) {
    const TuningEntry& want = e.key.op == "cross_entropy_fwd" ? clustered : plain;
    EXPECT_TRUE(SameLaunchConfig(e.config, want.config)) << FormatLaunchConfig(e.config);
  }
  EXPECT_FALSE(SameLaunchConfig(plain.config, clustered.config));
  EXPECT_EQ(FormatLaunchConfig(plain.config), "tpr=512 rpb=1 iters=2 vec=1 grid=0");
  EXPECT_EQ(FormatLaunchConfig(clustered.config), "tpr=512 rpb=1 iters=0 vec=1 grid=0 cluster=3 smem=85504");
}

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteAll(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}
int ModeOfFile(const std::filesystem::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
}
int CountAside(const std::filesystem::path& dir) {
  int n = 0;
  for (const auto& de : std::filesystem::directory_iterator(dir))
    n += de.path().filename().string().find(".corrupt-") != std::string::npos;
  return n;
}

// Collects tuning log lines instead of printing them.
struct LogCapture {
  std::vector<std::string> lines;
  LogCapture() {
    SetTuningLogSink([this](std::string_view l) { lines.emplace_back(l); });
  }
  ~LogCapture() { SetTuningLogSink(nullptr); }
};

// ---- bucket keys ----------------------------------------------------------------------------

TEST(TuningKey, RowsRoundUpToAPowerOfTwoColsExact) {
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 16384, 4096}).rows_bucket, 16384);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 10000, 4096}).rows_bucket, 16384);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 16385, 4096}).rows_bucket, 32768);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 1, 4096}).rows_bucket, 1);
  EXPECT_EQ(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 0, 4096}).rows_bucket, 0);
  const TuningKey k = MakeTuningKey("swiglu_fwd", {DType::kFloat16, 3000, 14335});
  EXPECT_EQ(k.cols, 14335);
  EXPECT_EQ(k.dtype, "f16");
  EXPECT_EQ(KeyString(k), "swiglu_fwd f16 4096x14335");
  EXPECT_NE(MakeTuningKey("swiglu_fwd", {DType::kBFloat16, 4096, 14336}),
            MakeTuningKey("swiglu_fwd", {DType::kFloat16, 4096, 14336}));
  EXPECT_NE(MakeTuningKey("swiglu_fwd", {DType::kBFloat16, 4096, 14336}),
            MakeTuningKey("geglu_fwd", {DType::kBFloat16, 4096, 14336}));
}

TEST(TuningKey, RowTuningShapeFlattensLeadingDims) {
  TensorView x = Tensor(Addr(0), DType::kBFloat16, {2, 8, 4096});
  OpCall call;
  call.tensors = std::span<const TensorView>(&x, 1);
  auto s = RowTuningShape(0)(call);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->rows, 16);
  EXPECT_EQ(s->cols, 4096);
  EXPECT_EQ(s->dtype, DType::kBFloat16);
  EXPECT_FALSE(RowTuningShape(3)(call).has_value()) << "index out of range";
}

TEST(TuningKey, GpuIdentityNamesTheFile) {
  EXPECT_EQ(GpuFileStem(kH100), "NVIDIA_H100_80GB_HBM3.sm90.132sm");
  EXPECT_EQ(GpuFileStem({"A/B ..", 10, 80}), "A_B_...sm80.10sm");
  EXPECT_NE(GpuFileStem(kH100), GpuFileStem({"NVIDIA H100 80GB HBM3", 114, 90})) << "MIG / PCIe parts differ";
}

TEST(TuningKey, DTypeNames) {
  EXPECT_EQ(*ParseTuningDType("bf16"), DType::kBFloat16);
  EXPECT_EQ(*ParseTuningDType("BFloat16"), DType::kBFloat16);
  EXPECT_EQ(*ParseTuningDType("fp16"), DType::kFloat16);
  EXPECT_EQ(*ParseTuningDType("float32"), DType::kFloat32);
  EXPECT_EQ(ParseTuningDType("int8").status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- the DB file ----------------------------------------------------------------------------

TEST(TuningDbFile, EncodeDecodeRoundTrip) {
  std::vector<TuningEntry> in = {Entry("rms_norm_fwd", 16384, 4096, 512, 0.0951),
                                 Entry("swiglu_fwd", 16384, 14336, 1024, 0.51)};
  in[1].config.grid = 2112;
  in[1].config.vectorized = false;
  const std::string bytes = EncodeTuningDb(kH100, in);
  GpuIdentity found;
  auto out = DecodeTuningDb(bytes, &kH100, &found);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(found, kH100);
  ASSERT_EQ(out->size(), 2u);
  for (const TuningEntry& a : in) {
    bool matched = false;
    for (const TuningEntry& b : *out) {
      if (!(a.key == b.key)) continue;
      matched = true;
      EXPECT_TRUE(SameLaunchConfig(a.config, b.config)) << FormatLaunchConfig(b.config);
      EXPECT_NEAR(a.default_ms, b.default_ms, 1e-6);
      EXPECT_NEAR(a.tuned_ms, b.tuned_ms, 1e-6);
      EXPECT_EQ(a.tuned_rows, b.tuned_rows);
      EXPECT_EQ(a.candidates, b.candidates);
      EXPECT_EQ(a.unix_time, b.unix_time);
    }
    EXPECT_TRUE(matched) << KeyString(a.key);
  }
}

TEST(TuningDbFile, AnyDamageIsDataLoss) {
  const std::string good = EncodeTuningDb(kH100, {Entry("rms_norm_fwd", 16384, 4096, 512)});
  ASSERT_TRUE(DecodeTuningDb(good, &kH100).ok());
  // Every single-byte change and every truncation is caught (the checksum covers the body).
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto r = DecodeTuningDb(bad, &kH100);
    EXPECT_FALSE(r.ok()) << "flip at " << i;
  }
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(DecodeTuningDb(good.substr(0, n), &kH100).ok()) << n;
  EXPECT_EQ(DecodeTuningDb("garbage", &kH100).status().code(), absl::StatusCode::kDataLoss);
}

TEST(TuningDbFile, OtherVersionOrGpuIsRefused) {
  std::string v2 = EncodeTuningDb(kH100, {Entry("rms_norm_fwd", 16384, 4096, 512)});
  // Re-sign the body with "version 2" so only the version differs.
  std::string body = v2.substr(0, v2.rfind("sha256 "));
  body.replace(body.find("version 1"), 9, "version 2");
  const Digest256 d = Sha256Of(body);
  const std::string resigned = body + "sha256 " + HexOf(d.data(), d.size()) + "\n";
  auto r = DecodeTuningDb(resigned, &kH100);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("version 2"), std::string::npos) << r.status();
  const GpuIdentity a100{"NVIDIA A100-SXM4-80GB", 108, 80};
  auto other = DecodeTuningDb(EncodeTuningDb(a100, {}), &kH100);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_TRUE(DecodeTuningDb(EncodeTuningDb(a100, {}), nullptr).ok()) << "listing accepts any GPU";
}

TEST(TuningDb, StoreSurvivesARestart) {
  TempDir dir;
  {
    auto db = TuningDb::Shared(dir.path(), kH100);
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ((*db)->file(), dir.path() / "tuning" / "NVIDIA_H100_80GB_HBM3.sm90.132sm.tunedb");
    EXPECT_FALSE((*db)->Lookup(Entry("rms_norm_fwd", 16384, 4096, 512).key).has_value());
    ASSERT_TRUE((*db)->Store({Entry("rms_norm_fwd", 16384, 4096, 512)}).ok());
    ASSERT_TRUE((*db)->Store({Entry("swiglu_fwd", 16384, 14336, 1024)}).ok());
    auto hit = (*db)->Lookup(Entry("rms_norm_fwd", 16384, 4096, 0).key);
    ASSERT_TRUE(hit.has_value());
    EXPECT_EQ(hit->config.threads_per_row, 512);
  }
  // "Restart": a fresh object on the same file (Shared's instance is gone with its last user).
  TuningDb again(dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb"), kH100);
  auto hit = again.Lookup(MakeTuningKey("rms_norm_fwd", {DType::kBFloat16, 9000, 4096}));
  ASSERT_TRUE(hit.has_value()) << "9000 rows falls in the 16384 bucket";
  EXPECT_EQ(hit->config.threads_per_row, 512);
  EXPECT_EQ(again.Entries().size(), 2u);
  EXPECT_EQ(ModeOfFile(again.file()) & 077, 0) << "private to the user";
  // Same key stored again replaces, never duplicates.
  ASSERT_TRUE(again.Store({Entry("rms_norm_fwd", 16384, 4096, 256)}).ok());
  EXPECT_EQ(again.Entries().size(), 2u);
  EXPECT_EQ(again.Lookup(Entry("rms_norm_fwd", 16384, 4096, 0).key)->config.threads_per_row, 256);
}

TEST(TuningDb, CorruptFileIsMovedAsideAndRebuilt) {
  TempDir dir;
  LogCapture log;
  std::filesystem::create_directories(dir.path() / "tuning");
  const auto file = dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb");
  std::string good = EncodeTuningDb(kH100, {Entry("rms_norm_fwd", 16384, 4096, 512)});
  good[good.find("512")] = '9';  // a config edited by hand: the checksum no longer matches
  WriteAll(file, good);
  TuningDb db(file, kH100);
  EXPECT_FALSE(db.Lookup(Entry("rms_norm_fwd", 16384, 4096, 0).key).has_value()) << "never trusted";
  EXPECT_EQ(db.rebuilt(), 1u);
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_EQ(CountAside(dir.path() / "tuning"), 1);
  ASSERT_FALSE(log.lines.empty());
  EXPECT_NE(log.lines[0].find("checksum"), std::string::npos) << log.lines[0];
  ASSERT_TRUE(db.Store({Entry("swiglu_fwd", 16384, 14336, 1024)}).ok());
  EXPECT_TRUE(DecodeTuningDb(ReadAll(file), &kH100).ok()) << "rebuilt as a valid file";
  EXPECT_EQ(db.Entries().size(), 1u);
}

TEST(TuningDb, VersionMismatchIsMovedAsideAndRebuilt) {
  TempDir dir;
  LogCapture log;
  std::filesystem::create_directories(dir.path() / "tuning");
  const auto file = dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb");
  std::string body = EncodeTuningDb(kH100, {Entry("rms_norm_fwd", 16384, 4096, 512)});
  body = body.substr(0, body.rfind("sha256 "));
  body.replace(body.find("version 1"), 9, "version 9");
  const Digest256 d = Sha256Of(body);
  WriteAll(file, body + "sha256 " + HexOf(d.data(), d.size()) + "\n");
  TuningDb db(file, kH100);
  EXPECT_FALSE(db.Lookup(Entry("rms_norm_fwd", 16384, 4096, 0).key).has_value());
  EXPECT_EQ(db.rebuilt(), 1u);
  ASSERT_FALSE(log.lines.empty());
  EXPECT_NE(log.lines[0].find("version 9"), std::string::npos) << log.lines[0];
  ASSERT_TRUE(db.Store({Entry("rms_norm_fwd", 16384, 4096, 128)}).ok());
  EXPECT_EQ(db.Lookup(Entry("rms_norm_fwd", 16384, 4096, 0).key)->config.threads_per_row, 128);
}

TEST(TuningDb, ReadersSeeAnotherWritersUpdate) {
  TempDir dir;
  const auto file = dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb");
  std::filesystem::create_directories(file.parent_path());
  TuningDb reader(file, kH100), writer(file, kH100);
  const TuningKey key = Entry("geglu_bwd", 4096, 8192, 0).key;
  EXPECT_FALSE(reader.Lookup(key).has_value());
  ASSERT_TRUE(writer.Store({Entry("geglu_bwd", 4096, 8192, 768)}).ok());
  std::this_thread::sleep_for(TuningDb::kRefreshInterval + std::chrono::milliseconds(50));
  auto hit = reader.Lookup(key);
  ASSERT_TRUE(hit.has_value()) << "the reader re-reads a changed file";
  EXPECT_EQ(hit->config.threads_per_row, 768);
  EXPECT_GE(reader.reloads(), 1u);
  // Unchanged file: no re-read however often it is asked.
  const uint64_t reloads = reader.reloads();
  std::this_thread::sleep_for(TuningDb::kRefreshInterval + std::chrono::milliseconds(50));
  for (int i = 0; i < 100; ++i) reader.Lookup(key);
  EXPECT_EQ(reader.reloads(), reloads);
}

// Generation(): what the executor keys its cached plans with instead of looking the DB up on
// every launch. It must move when (and only when) the entries a Lookup would see change.
TEST(TuningDb, GenerationMovesWhenTheEntriesChange) {
  TempDir dir;
  const auto file = dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb");
  std::filesystem::create_directories(file.parent_path());
  TuningDb reader(file, kH100), writer(file, kH100);
  const uint64_t g0 = reader.Generation();
  EXPECT_EQ(reader.Generation(), g0) << "nothing changed";
  const uint64_t w0 = writer.Generation();
  ASSERT_TRUE(writer.Store({Entry("layer_norm_bwd", 16384, 4096, 512)}).ok());
  EXPECT_NE(writer.Generation(), w0) << "a Store is seen by the writer at once";
  // The reader notices another writer's file at its next check, as Lookup would.
  std::this_thread::sleep_for(TuningDb::kRefreshInterval + std::chrono::milliseconds(50));
  const uint64_t g1 = reader.Generation();
  EXPECT_NE(g1, g0) << "the reader re-read the changed file";
  EXPECT_TRUE(reader.Lookup(Entry("layer_norm_bwd", 16384, 4096, 0).key).has_value());
  // Unchanged file: the generation stays, however often and however late it is asked.
  std::this_thread::sleep_for(TuningDb::kRefreshInterval + std::chrono::milliseconds(50));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(reader.Generation(), g1);
}

TEST(TuningDb, ConcurrentWritersInSeveralProcessesLoseNothing) {
  TempDir dir;
  const auto file = dir.path() / "tuning" / (GpuFileStem(kH100) + ".tunedb");
  std::filesystem::create_directories(file.parent_path());
  constexpr int kProcs = 4, kEach = 15;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      TuningDb db(file, kH100);
      for (int i = 0; i < kEach; ++i)
        if (!db.Store({Entry("rms_norm_fwd", 1 << (p + 1), 128 * (i + 1), 32 * (p + 1))}).ok()) _exit(1);
      _exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  TuningDb db(file, kH100);
  const auto entries = db.Entries();
  EXPECT_EQ(entries.size(), static_cast<size_t>(kProcs * kEach)) << "every writer's entries survive the merge";
  EXPECT_EQ(db.rebuilt(), 0u) << "no writer ever saw a torn file";
  for (int p = 0; p < kProcs; ++p) {
    auto hit = db.Lookup(Entry("rms_norm_fwd", 1 << (p + 1), 128 * 7, 0).key);
    ASSERT_TRUE(hit.has_value());
    EXPECT_EQ(hit->config.threads_per_row, 32 * (p + 1));
  }
}

TEST(TuningDb, ListingShowsEveryGpuAndUnreadableFiles) {
  TempDir dir;
  auto db = TuningDb::Shared(dir.path(), kH100);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Store({Entry("rms_norm_fwd", 16384, 4096, 512)}).ok());
  WriteAll(dir.path() / "tuning" / "broken.sm80.1sm.tunedb", "not a db");
  const auto listings = ListTuningDbs(dir.path());
  ASSERT_EQ(listings.size(), 2u);
  int ok = 0, bad = 0;
  for (const auto& l : listings) {
    if (l.status.ok()) {
      ++ok;
      EXPECT_EQ(l.gpu, kH100);
      EXPECT_EQ(l.entries.size(), 1u);
    } else {
      ++bad;
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(bad, 1);
}

// ---- candidates -----------------------------------------------------------------------------

struct Problem {
  std::vector<TensorView> tensors;
  std::vector<double> scalars;
};

// The op's own tuning problem for a shape, on fake addresses.
Problem MakeProblem(const OpSpec& spec, DType dtype, int64_t rows, int64_t cols) {
  auto p = spec.tuning_problem({dtype, rows, cols});
  EXPECT_TRUE(p.ok()) << p.status();
  Problem out;
  out.scalars = p->scalars;
  for (size_t i = 0; i < p->tensors.size(); ++i) {
    const ScratchTensor& t = p->tensors[i];
    out.tensors.push_back(t.present ? Tensor(Addr(static_cast<int>(i)), t.dtype, t.sizes) : TensorView{});
  }
  return out;
}

TEST(Candidates, TunableOpsDeclareEveryHook) {
  std::set<std::string> tunable;
  for (const OpSpec* op : AllOps()) {
    if (!op->candidates) continue;
    tunable.insert(op->name);
    EXPECT_TRUE(op->tuning_shape) << op->name;
    EXPECT_TRUE(op->tuning_problem) << op->name;
  }
  for (const char* name : {"rms_norm_fwd", "rms_norm_bwd", "fused_add_rms_norm_fwd", "fused_add_rms_norm_bwd",
                           "layer_norm_fwd", "layer_norm_bwd", "swiglu_fwd", "swiglu_bwd", "geglu_fwd", "geglu_bwd"})
    EXPECT_TRUE(tunable.count(name)) << name;
}

TEST(Candidates, EveryCandidatePassesTheOpsOwnChecks) {
  const DeviceInfo dev = FakeDevice(4);
  struct Shape {
    DType dtype;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{DType::kBFloat16, 16384, 4096}, {DType::kBFloat16, 16384, 14336},
                          {DType::kFloat32, 4, 128},       {DType::kFloat16, 1000, 5120},
                          {DType::kBFloat16, 3, 8191},     {DType::kFloat32, 1, 2880},
                          {DType::kFloat16, 7, 13},        {DType::kBFloat16, 300, 65536}};
  size_t planned = 0;
  std::map<std::string, size_t> planned_per_op;
  for (const OpSpec* op : AllOps()) {
    if (!op->candidates) continue;
    planned_per_op[op->name] = 0;
    for (const Shape& s : shapes) {
      const std::string what = absl::StrCat(op->name, " ", DTypeName(s.dtype), " ", s.rows, "x", s.cols);
      Problem p = MakeProblem(*op, s.dtype, s.rows, s.cols);
      OpCall call;
      call.tensors = p.tensors;
      call.scalars = p.scalars;
      call.check_workspace = false;
      auto base = PlanOp(op->name, call, dev);
      ASSERT_TRUE(base.ok()) << what << ": " << base.status();
      // The problem's tuning shape is the shape it was made for.
      auto ts = op->tuning_shape(call);
      ASSERT_TRUE(ts.has_value()) << what;
      EXPECT_EQ(ts->rows, s.rows) << what;
      EXPECT_EQ(ts->cols, s.cols) << what;
      EXPECT_EQ(ts->dtype, s.dtype) << what;
      const std::vector<LaunchConfig> cands = op->candidates(call, dev);
      EXPECT_GE(cands.size(), 2u) << what << ": something to choose from";
      std::set<std::string> seen;
      for (const LaunchConfig& c : cands) {
        EXPECT_TRUE(seen.insert(FormatLaunchConfig(c)).second) << what << ": duplicate " << FormatLaunchConfig(c);
        OpCall tuned = call;
        tuned.tuned = &c;
        auto plan = PlanOp(op->name, tuned, dev);
        ASSERT_TRUE(plan.ok()) << what << ": candidate " << FormatLaunchConfig(c) << " refused: " << plan.status();
        EXPECT_TRUE(SameLaunchConfig(plan->config, c)) << what;
        ASSERT_FALSE(plan->launches.empty()) << what;
        const KernelLaunch& k = plan->launches[0];
        EXPECT_LE(int64_t{k.block[0]} * k.block[1] * k.block[2], 1024) << what;
        EXPECT_GE(k.grid[0], 1u) << what;
        ++planned;
        ++planned_per_op[op->name];
      }
    }
  }
  // Every tunable op, not just the total: at least two candidates per shape each.
  for (const auto& [name, n] : planned_per_op)
    EXPECT_GE(n, 2 * std::size(shapes)) << name << ": too few candidates planned";
  EXPECT_GE(planned_per_op.size(), 10u) << "the tunable ops (TunableOpsDeclareEveryHook lists them)";
  EXPECT_GE(planned, 300u) << "10 tunable ops x 8 shapes, most with dozens of candidates";
}

TEST(Candidates, BigGluShapesOfferVectorsPerThreadAndGrids) {
  const DeviceInfo dev = FakeDevice(2);
  Problem p = MakeProblem(*FindOp("swiglu_fwd"), DType::kBFloat16, 16384, 14336);
  OpCall call;
  call.tensors = p.tensors;
  call.scalars = p.scalars;
  std::set<int> iters, blocks, grids;
  for (const LaunchConfig& c : FindOp("swiglu_fwd")->candidates(call, dev)) {
    iters.insert(c.iters);
    blocks.insert(c.threads_per_row);
    grids.insert(c.grid);
    EXPECT_TRUE(c.vectorized);
  }
  EXPECT_EQ(iters, (std::set<int>{1, 2, 4}));
  EXPECT_EQ(blocks, (std::set<int>{128, 256, 512, 1024}));
  EXPECT_EQ(grids.size(), 4u) << "the one-shot grid (0) and 1, 2, 4 waves of resident blocks";
  // The kernel name follows iters (the default positions per thread keeps the plain name).
  EXPECT_EQ(GluKernelName(false, true, 4), "glu_fwd_v4");
  EXPECT_EQ(GluKernelName(true, true, 1), "glu_bwd_v1");
  EXPECT_EQ(GluKernelName(true, true, LIGERD_GLU_POSITIONS_PER_THREAD), "glu_bwd_v");
  EXPECT_EQ(GluKernelName(true, false), "glu_bwd_s");
}

TEST(Candidates, GluChecksVectorsPerThread) {
  LaunchConfig c = GluDefaultConfig(true);
  for (int it : {1, 2, 4}) {
    c.iters = it;
    EXPECT_TRUE(GluCheckConfig(c, true).ok()) << it;
  }
  for (int it : {0, 3, 8}) {
    c.iters = it;
    EXPECT_FALSE(GluCheckConfig(c, true).ok()) << it;
  }
  LaunchConfig s = GluDefaultConfig(false);
  EXPECT_TRUE(GluCheckConfig(s, false).ok());
  s.iters = LIGERD_GLU_POSITIONS_PER_THREAD == 1 ? 2 : 1;
  EXPECT_FALSE(GluCheckConfig(s, false).ok()) << "the scalar kernels come in the default only";
}

TEST(Candidates, GluGridsCoverTheWork) {
  // One-shot candidates (grid 0) launch exactly one block per chunk of block x iters vectors;
  // persistent ones launch fewer blocks than chunks (they loop).
  const DeviceInfo dev = FakeDevice(2);
  Problem p = MakeProblem(*FindOp("geglu_bwd"), DType::kBFloat16, 1000, 2880);
  OpCall call;
  call.tensors = p.tensors;
  call.scalars = p.scalars;
  const int64_t vectors = 1000 * 2880 / 8;
  int one_shot = 0, persistent = 0;
  for (const LaunchConfig& c : FindOp("geglu_bwd")->candidates(call, dev)) {
    OpCall t = call;
    t.tuned = &c;
    auto plan = PlanOp("geglu_bwd", t, dev);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const int64_t per_block = int64_t{c.threads_per_row} * c.iters;
    const int64_t grid = plan->launches[0].grid[0];
    if (c.grid == 0) {
      ++one_shot;
      EXPECT_GE(grid * per_block, vectors) << FormatLaunchConfig(c);
      EXPECT_LT((grid - 1) * per_block, vectors) << FormatLaunchConfig(c) << ": no idle block";
    } else {
      ++persistent;
      EXPECT_EQ(grid, c.grid);
      EXPECT_LT(grid * per_block, vectors) << FormatLaunchConfig(c);
    }
  }
  EXPECT_EQ(one_shot, 12) << "4 block sizes x 3 positions per thread";
  EXPECT_GT(persistent, 0);
}

TEST(PlanCacheTuned, TunedAndDefaultPlansAreCachedSideBySide) {
  const DeviceInfo dev = FakeDevice(2);
  PlanCache cache;
  Problem p = MakeProblem(*FindOp("swiglu_fwd"), DType::kBFloat16, 4096, 14336);
  OpCall call;
  call.tensors = p.tensors;
  call.scalars = p.scalars;
  LaunchConfig tuned = GluDefaultConfig(true);
  tuned.threads_per_row = 512;
  tuned.iters = 4;
  for (int round = 0; round < 3; ++round) {
    auto d = cache.Plan("swiglu_fwd", call, dev);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->config.threads_per_row, 256);
    EXPECT_EQ(d->launches[0].kernel, "glu_fwd_v");
    OpCall t = call;
    t.tuned = &tuned;
    auto q = cache.Plan("swiglu_fwd", t, dev);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(q->config.threads_per_row, 512);
    EXPECT_EQ(q->launches[0].kernel, "glu_fwd_v4");
    EXPECT_EQ(q->launches[0].block[0], 512u);
  }
  EXPECT_EQ(cache.stats().misses, 2u);
  EXPECT_EQ(cache.stats().hits, 4u);
}

TEST(TuneRequestValidation, RefusesWhatCannotBeTuned) {
  TuneRequest r;
  r.op = "rms_norm_fwd";
  r.rows = 16384;
  r.cols = 4096;
  EXPECT_TRUE(ValidateTuneRequest(r).ok());
  auto code = [](TuneRequest x) { return ValidateTuneRequest(x).code(); };
  TuneRequest bad = r;
  bad.op = "no_such_op";
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.rows = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.cols = -5;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.rows = int64_t{1} << 30;
  bad.cols = int64_t{1} << 20;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument) << "2^50 elements";
  bad = r;
  bad.dtype = DType::kInt32;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.trials = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ligerd::kernels
