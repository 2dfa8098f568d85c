// The ring-record fuzzer's input format and harness (tests/fuzz/README.md): bytes -> a ring
// OpRecord over a fake session's registered buffers -> the path a remote session's runner takes
// for a record before it touches the GPU (RemoteRunner::RunOne: ValidateRecord, then the
// executor's planning for the workspace size and for the launch), on a fake H100.
//
// The format is structure-aware, so that mutations stay mostly well-formed and reach the op
// planners: counts and dtypes default to the op's spec, strides default to row-major, a tensor
// can copy an earlier one's geometry or alias it exactly, and every size, stride, offset and
// scalar can also be given raw (any 64-bit value). Every read past the end gives 0.
//
// Used by the libFuzzer target (ring_record_fuzzer.cc), the corpus replay driver
// (ring_record_replay.cc, for compilers without libFuzzer) and the seed writer in the latter.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/blas/gemm_params.h"
#include "kernels/catalogue.h"
#include "kernels/planner.h"
#include "kernels/tuning/tuning_db.h"
#include "proto/ligerd/ring_layout.h"
#include "server/dataplane/buffer_registry.h"
#include "server/dataplane/record_validation.h"
#include "tests/cpp/fake_ipc.h"

namespace ligerd::fuzz {

// The fake session: buffer ids and what they are.
inline constexpr uint64_t kSmallBuffer = 1;    // 4096 real bytes (the CPU tests' fake IPC)
inline constexpr uint64_t kOddBuffer = 2;      // 1 MiB real, 1 MiB - 8 claimed
inline constexpr uint64_t kHugeBuffer = 3;     // 1 TiB of reserved, inaccessible address space
inline constexpr uint64_t kTinyBuffer = 4;     // 64 real bytes
inline constexpr uint64_t kUnknownBuffer = 0xdeadbeef;  // never registered
inline constexpr uint64_t kHugeBytes = uint64_t{1} << 40;
inline constexpr uint64_t kSlotBytes = uint64_t{1} << 32;  // offset mode 1: 4 GiB slots of the huge buffer
inline constexpr uint64_t kSequence = 1000;                 // the sequence the runner expects
inline constexpr uint32_t kStreamSlots = 4;

// Reads the format; past the end every read is 0.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t U8() { return i_ < n_ ? p_[i_++] : 0; }
  uint64_t Bytes(int k) {
    uint64_t v = 0;
    for (int b = 0; b < k; ++b) v |= uint64_t{U8()} << (8 * b);
    return v;
  }
  // A size or stride: 0 small (0..255), 1 a u16, 2 a power of two plus a delta in -128..127,
  // 3 any 64-bit value.
  int64_t Value() {
    switch (U8() % 4) {
      case 0: return U8();
      case 1: return static_cast<int64_t>(Bytes(2));
      case 2: {
        const int shift = U8() % 63;
        const int delta = static_cast<int8_t>(U8());
        return (int64_t{1} << shift) + delta;
      }
      default: return static_cast<int64_t>(Bytes(8));
    }
  }
  double Scalar() {
    static constexpr double kTable[] = {1e-6, 0.5, 1.0, -100.0, 9007199254740992.0, 1e30, -0.0, 0.1,
                                        2.0, -1.0, 1e-12, 0.0, 4096.0, 1e308, -1e308, 3.5};
    switch (U8() % 4) {
      case 0: return static_cast<int8_t>(U8());
      case 1: {
        const uint64_t bits = Bytes(8);
        double d;
        std::memcpy(&d, &bits, sizeof(d));
        return d;  // NaN and infinities included: the record's check must refuse them
      }
      case 2: return kTable[U8() % 16];
      default: return static_cast<int16_t>(Bytes(2)) * 0.125;
    }
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
};

// Writes the format (the seed writer): each call appends what the matching Reader call reads.
class Writer {
 public:
  Writer& U8(uint8_t v) { bytes_.push_back(v); return *this; }
  Writer& Bytes(uint64_t v, int k) {
    for (int b = 0; b < k; ++b) bytes_.push_back(static_cast<uint8_t>(v >> (8 * b)));
    return *this;
  }
  Writer& Value(int64_t v) { return U8(3).Bytes(static_cast<uint64_t>(v), 8); }
  Writer& Scalar(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    return U8(1).Bytes(bits, 8);
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Layout byte of a tensor (low 3 bits; the rest picks the earlier tensor for copy and alias).
enum Layout : uint8_t {
  kContiguous = 0,  // ndim, sizes; row-major strides
  kExplicit = 1,    // ndim, sizes, strides
  kCopy = 2,        // an earlier tensor's dtype and geometry, its own buffer and offset
  kAlias = 3,       // exactly an earlier tensor (buffer, offset, dtype, geometry)
  kPadded = 4,      // ndim, sizes, row padding (u8): row-major with a longer row stride
};

// Row-major strides of `sizes` (saturating: a fuzzed shape may overflow; the checks refuse it).
inline void RowMajor(int ndim, const int64_t* sizes, int64_t* strides, int64_t pad) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    strides[d] = s;
    int64_t extent = sizes[d] < 0 ? 0 : sizes[d];
    if (d == ndim - 1 && __builtin_add_overflow(extent, pad, &extent)) extent = INT64_MAX;
    if (__builtin_mul_overflow(s, extent < 1 ? 1 : extent, &s)) s = INT64_MAX;
  }
}

// Decodes the input into `record` (sequence kSequence unless the input asks for a wrong one).
// `num_ops` is the catalogue size; the op's spec (when the id names one) gives the defaults.
inline void DecodeRecord(const uint8_t* data, size_t size, ring::OpRecord& record) {
  const std::vector<const kernels::OpSpec*>& ops = kernels::AllOps();
  const uint32_t num_ops = static_cast<uint32_t>(ops.size());
  Reader in(data, size);
  std::memset(&record, 0, sizeof(record));
  const uint8_t op_byte = in.U8();
  record.op_id = op_byte < 0xF0 ? op_byte % num_ops : num_ops + (op_byte - 0xF0) * 1000;
  const kernels::OpSpec* spec = record.op_id < num_ops ? ops[record.op_id] : nullptr;
  const uint8_t flags = in.U8();
  record.sequence = kSequence + ((flags & 1) ? 1 : 0);
  record.stream_slot = (flags >> 5) % kStreamSlots + ((flags & 2) ? kStreamSlots : 0);
  record.flags = (flags & 4) ? 1 : 0;
  record.reserved0 = (flags & 8) ? 7 : 0;
  const uint8_t tensor_byte = in.U8();
  const uint8_t scalar_byte = in.U8();
  record.num_tensors = tensor_byte < 0xE0 && spec != nullptr ? static_cast<uint32_t>(spec->tensors.size())
                                                              : (tensor_byte - 0xE0u) % (ring::kMaxTensors + 2);
  record.num_scalars = scalar_byte < 0xE0 && spec != nullptr ? static_cast<uint32_t>(spec->scalars.size())
                                                              : (scalar_byte - 0xE0u) % (ring::kMaxScalars + 2);
  const int tensors = std::min<int>(record.num_tensors, ring::kMaxTensors);
  for (int i = 0; i < tensors; ++i) {
    ring::TensorRef& t = record.tensors[i];
    static constexpr uint64_t kIds[] = {0, kSmallBuffer, kOddBuffer, kHugeBuffer, kTinyBuffer, kUnknownBuffer};
    t.buffer_id = kIds[in.U8() % 6];
    const uint8_t dtype_byte = in.U8();
    const bool from_spec = dtype_byte < 0x80 && spec != nullptr && static_cast<size_t>(i) < spec->tensors.size() &&
                           !spec->tensors[i].dtypes.empty();
    t.dtype = from_spec ? static_cast<uint8_t>(spec->tensors[i].dtypes[dtype_byte % spec->tensors[i].dtypes.size()])
                        : static_cast<uint8_t>(dtype_byte & 7);
    const uint8_t layout = in.U8();
    const int earlier = i > 0 ? (layout >> 3) % i : -1;
    if ((layout & 7) == kAlias && earlier >= 0) {
      t = record.tensors[earlier];
      continue;
    }
    if ((layout & 7) == kCopy && earlier >= 0) {
      const ring::TensorRef& e = record.tensors[earlier];
      t.dtype = e.dtype;
      t.ndim = e.ndim;
      std::memcpy(t.sizes, e.sizes, sizeof(t.sizes));
      std::memcpy(t.strides, e.strides, sizeof(t.strides));
    } else {
      t.ndim = in.U8() % (ring::kMaxDims + 2);  // 0..5: 0 and 5 are refused
      const int nd = std::min<int>(t.ndim, ring::kMaxDims);
      for (int d = 0; d < nd; ++d) t.sizes[d] = in.Value();
      if ((layout & 7) == kExplicit) {
        for (int d = 0; d < nd; ++d) t.strides[d] = in.Value();
      } else {
        RowMajor(nd, t.sizes, t.strides, (layout & 7) == kPadded ? in.U8() : 0);
      }
    }
    const int elem = t.dtype >= 1 && t.dtype <= 5 ? kernels::DTypeBytes(static_cast<kernels::DType>(t.dtype)) : 1;
    switch (in.U8() % 4) {
      case 0: t.byte_offset = 0; break;
      case 1: t.byte_offset = (uint64_t{in.U8()} % (kHugeBytes / kSlotBytes)) * kSlotBytes; break;
      case 2: t.byte_offset = in.Bytes(2) * static_cast<uint64_t>(elem); break;
      default: t.byte_offset = in.Bytes(8); break;
    }
    if (i == 0 && (flags & 16)) t.reserved[3] = 1;
  }
  const int scalars = std::min<int>(record.num_scalars, ring::kMaxScalars);
  for (int i = 0; i < scalars; ++i) record.scalars[i] = in.Scalar();
}

// Opens "handles" for the fake session: the CPU tests' FakeIpcOpener, and for the huge buffer a
// reservation of address space that is never readable (so planning provably reads no tensor).
class FuzzOpener : public dataplane::IpcOpener {
 public:
  absl::StatusOr<std::unique_ptr<dataplane::IpcMapping>> Open(const std::string& handle, int device) override {
    uint64_t size;
    std::memcpy(&size, handle.data(), sizeof(size));
    if (size != kHugeBytes) return fake_.Open(handle, device);
    void* base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return absl::ResourceExhaustedError("fuzz: cannot reserve 1 TiB of address space");
    return std::unique_ptr<dataplane::IpcMapping>(new Reserved(base, size));
  }

 private:
  class Reserved : public dataplane::IpcMapping {
   public:
    Reserved(void* base, uint64_t size) : base_(base), size_(size) {}
    ~Reserved() override { munmap(base_, size_); }
    void* base() const override { return base_; }
    uint64_t size_bytes() const override { return size_; }

   private:
    void* base_;
    uint64_t size_;
  };
  testing::FakeIpcOpener fake_;
};

// A fake H100 for the planners: occupancy from the block size and shared memory as the driver
// would answer (0 blocks when a block cannot fit), clusters of up to 8 CTAs.
inline kernels::DeviceInfo FuzzDevice() {
  kernels::DeviceInfo d;
  d.ordinal = 0;
  d.name = "ligerd fuzz H100";
  d.sm_count = 132;
  d.compute_capability = 90;
  d.blocks_per_sm = [](std::string_view, const kernels::KernelVariant&, std::string_view, int threads,
                       size_t smem) -> absl::StatusOr<int> {
    if (threads < 1 || threads > 1024) return absl::InvalidArgumentError(absl::StrCat("block of ", threads));
    if (smem > (227u << 10)) return 0;
    int blocks = std::min(32, 2048 / threads);
    if (smem > 0) blocks = std::min<int>(blocks, static_cast<int>((228u << 10) / (smem + 1024)));
    return blocks;
  };
  d.active_clusters = [d](std::string_view op, const kernels::KernelVariant& v, std::string_view k, int threads,
                          size_t smem, int cluster) -> absl::StatusOr<int> {
    if (cluster < 1 || cluster > 8) return 0;
    absl::StatusOr<int> blocks = d.blocks_per_sm(op, v, k, threads, smem);
    if (!blocks.ok()) return blocks.status();
    return 132 * *blocks / cluster;
  };
  return d;
}

// Launch configs stored in the fake tuning DB: sensible ones and hostile ones (a tuning DB is a
// file; the op must check a stored config like any input and fall back to its default).
inline std::vector<kernels::LaunchConfig> StoredConfigs() {
  std::vector<kernels::LaunchConfig> c(12);
  c[0] = {.threads_per_row = 32, .rows_per_block = 4, .iters = 0};
  c[1] = {.threads_per_row = 128, .rows_per_block = 1, .iters = 4};
  c[2] = {.threads_per_row = 1024, .rows_per_block = 1, .iters = 0, .vectorized = false};
  c[3] = {.threads_per_row = 8, .rows_per_block = 16, .iters = 2, .grid = 264};
  c[4] = {.threads_per_row = 256, .rows_per_block = 1, .iters = 1, .cluster = 2, .shared_bytes = 64 << 10};
  c[5] = {.threads_per_row = 3, .rows_per_block = 1};                          // not a power of two
  c[6] = {.threads_per_row = 64, .rows_per_block = 64};                        // 4096 threads
  c[7] = {.threads_per_row = -32, .rows_per_block = -1, .iters = -4, .grid = -1, .cluster = -2};
  c[8] = {.threads_per_row = 32, .rows_per_block = 1, .iters = 1 << 20, .grid = 1 << 30};
  c[9] = {.threads_per_row = 512, .rows_per_block = 2, .iters = 0, .cluster = 16, .shared_bytes = 1 << 30};
  c[10] = {.threads_per_row = 0, .rows_per_block = 0};
  c[11] = {.threads_per_row = 1, .rows_per_block = 1024, .iters = 64, .grid = 1};
  return c;
}

// What one record does to the runner's state, kept across inputs like a session's.
struct Session {
  FuzzOpener opener;
  dataplane::BufferRegistry buffers{&opener, 0, 16};
  std::string tuning_dir;
  std::unique_ptr<kernels::Planner> planner;
  std::vector<std::string> op_names;  // the catalogue in op-id order, as the daemon passes it
  // The runner's scratch (RemoteRunner::EnsureWorkspace): it only grows, and every launch gets all
  // of it. A fake device address, 256-byte aligned like cuMemAlloc's, far from every buffer.
  size_t workspace_bytes = 0;
  static constexpr uintptr_t kWorkspaceAddress = 0x7e0000000000;
  static constexpr size_t kGpuBytes = size_t{80} << 30;  // more: cuMemAlloc fails, an error

  Session() {
    auto must = [](const absl::Status& s) {
      if (!s.ok()) {
        std::fprintf(stderr, "ring_record fuzz: session setup: %s\n", std::string(s.message()).c_str());
        std::abort();
      }
    };
    must(buffers.Register(kSmallBuffer, testing::FakeIpcOpener::Handle(4096), 4096, 0));
    must(buffers.Register(kOddBuffer, testing::FakeIpcOpener::Handle(1 << 20), (1 << 20) - 8, 0));
    must(buffers.Register(kHugeBuffer, testing::FakeIpcOpener::Handle(kHugeBytes), kHugeBytes, 0));
    must(buffers.Register(kTinyBuffer, testing::FakeIpcOpener::Handle(64), 64, 0));
    for (const kernels::OpSpec* op : kernels::AllOps()) op_names.push_back(op->name);
    kernels::SetTuningLogSink([](std::string_view) {});  // rejected stored configs: expected here
    // A tuning DB of this fake GPU, with a stored config for every tunable op's small buckets.
    char tmpl[] = "/tmp/ligerd_fuzz_tuning.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) must(absl::InternalError("mkdtemp failed"));
    tuning_dir = tmpl;
    const kernels::DeviceInfo device = FuzzDevice();
    const kernels::GpuIdentity gpu = kernels::GpuIdentityOf(device);
    auto db = std::make_shared<kernels::TuningDb>(std::string(tmpl) + "/fuzz.tunedb", gpu);
    const std::vector<kernels::LaunchConfig> configs = StoredConfigs();
    std::vector<kernels::TuningEntry> entries;
    size_t n = 0;
    for (const kernels::OpSpec* op : kernels::AllOps()) {
      if (!op->candidates || !op->tuning_shape) continue;
      for (kernels::DType dt : {kernels::DType::kFloat32, kernels::DType::kBFloat16, kernels::DType::kFloat16})
        for (int64_t rows : {1, 2, 4, 8, 16, 32})
          for (int64_t cols : {1, 2, 3, 4, 7, 8, 16, 64, 128, 255, 256, 1024, 4096}) {
            kernels::TuningEntry e;
            e.key = kernels::MakeTuningKey(op->name, {dt, rows, cols});
            e.config = configs[n++ % configs.size()];
            entries.push_back(e);
          }
    }
    must(db->Store(entries));
    planner = std::make_unique<kernels::Planner>(device, std::move(db));
  }
  ~Session() {
    std::error_code ec;
    std::filesystem::remove_all(tuning_dir, ec);
  }
};

// A finding that is not a crash: print it and abort (libFuzzer and the replay driver both keep
// the input).
[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "ring_record fuzz: %s\n", what.c_str());
  std::abort();
}

// Every plan the executor would launch has launch dimensions the driver accepts.
inline void CheckPlan(const std::string& op, const kernels::OpPlan& plan) {
  for (const kernels::KernelLaunch& k : plan.launches) {
    if (k.kernel == kernels::kGemmLaunchName) continue;  // a cuBLASLt step: its params are a GemmParams
    const uint64_t threads = uint64_t{k.block[0]} * k.block[1] * k.block[2];
    const bool ok = k.grid[0] >= 1 && k.grid[0] <= 0x7fffffffu && k.grid[1] >= 1 && k.grid[1] <= 65535 &&
                    k.grid[2] >= 1 && k.grid[2] <= 65535 && k.block[0] >= 1 && k.block[1] >= 1 &&
                    k.block[2] >= 1 && k.block[2] <= 64 && threads <= 1024 &&
                    (k.cluster == 0 || k.grid[0] % k.cluster == 0) && k.shared_bytes <= (227u << 10);
    if (!ok) {
      Fail(absl::StrCat(op, ": plan launches ", k.kernel, " with grid ", k.grid[0], "x", k.grid[1], "x", k.grid[2],
                        " block ", k.block[0], "x", k.block[1], "x", k.block[2], " cluster ", k.cluster,
                        " shared ", k.shared_bytes));
    }
  }
}

inline bool SamePlan(const kernels::OpPlan& a, const kernels::OpPlan& b) {
  if (a.variant.tag != b.variant.tag || a.workspace_bytes != b.workspace_bytes || a.tuned != b.tuned ||
      a.launches.size() != b.launches.size())
    return false;
  for (size_t i = 0; i < a.launches.size(); ++i) {
    const kernels::KernelLaunch& k = a.launches[i];
    const kernels::KernelLaunch& l = b.launches[i];
    if (k.kernel != l.kernel || k.params != l.params || k.shared_bytes != l.shared_bytes || k.cluster != l.cluster ||
        std::memcmp(k.grid, l.grid, sizeof(k.grid)) != 0 || std::memcmp(k.block, l.block, sizeof(k.block)) != 0)
      return false;
  }
  return true;
}

// Where a record ended (the replay driver counts them).
enum class Outcome { kRefusedRecord, kRefusedPlan, kRefusedLaunch, kPlanned };

inline void CheckRefusal(const absl::Status& s, const char* step) {
  if (s.ok()) return;
  if (s.message().empty()) Fail(absl::StrCat(step, ": refused with an empty message"));
  if (std::getenv("LIGERD_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "  %s: %s\n", step, s.ToString().c_str());
}

// One input, as the runner handles one record (RemoteRunner::RunOne up to the launch).
inline Outcome RunRecord(Session& session, const uint8_t* data, size_t size) {
  ring::OpRecord record;
  DecodeRecord(data, size, record);
  const dataplane::RecordLimits limits{static_cast<uint32_t>(session.op_names.size()), kStreamSlots, 0};
  absl::StatusOr<dataplane::ValidatedOp> op = dataplane::ValidateRecord(record, kSequence, limits, session.buffers);
  if (!op.ok()) {
    CheckRefusal(op.status(), "record validation");
    return Outcome::kRefusedRecord;
  }
  const std::string& name = session.op_names[op->op_id];
  kernels::Planner& planner = *session.planner;
  // Executor::WorkspaceBytes, then Executor::Launch's plan with the runner's workspace grown to
  // that size.
  absl::StatusOr<kernels::OpPlan> ask =
      planner.Plan(name, op->tensors, op->scalars, nullptr, 0, {.check_workspace = false});
  if (!ask.ok()) {
    CheckRefusal(ask.status(), "workspace planning");
    return Outcome::kRefusedPlan;
  }
  CheckPlan(name, *ask);
  if (ask->workspace_bytes > Session::kGpuBytes) return Outcome::kRefusedLaunch;  // the allocation fails
  session.workspace_bytes = std::max(session.workspace_bytes, ask->workspace_bytes);
  const size_t ws_bytes = session.workspace_bytes;
  void* ws = ws_bytes > 0 ? reinterpret_cast<void*>(Session::kWorkspaceAddress) : nullptr;
  absl::StatusOr<kernels::OpPlan> plan = planner.Plan(name, op->tensors, op->scalars, ws, ws_bytes, {});
  if (!plan.ok()) {
    CheckRefusal(plan.status(), "launch planning");
  } else {
    CheckPlan(name, *plan);
  }
  // The next record of the same geometry is a plan-cache hit: the same plan or the same error.
  absl::StatusOr<kernels::OpPlan> again = planner.Plan(name, op->tensors, op->scalars, ws, ws_bytes, {});
  if (again.ok() != plan.ok() || (!again.ok() && again.status() != plan.status()) ||
      (again.ok() && !SamePlan(*again, *plan))) {
    Fail(absl::StrCat(name, ": a plan-cache hit differs from the miss before it: ",
                      plan.ok() ? "plan" : plan.status().ToString(), " then ",
                      again.ok() ? "plan" : again.status().ToString()));
  }
  // The plan cache against planning from scratch (PlanOp), without the tuning DB: the same
  // result for the record, and for the same geometry moved by 4 KiB (a hit whose addresses are
  // patched in, and whose address checks run again).
  for (uintptr_t shift : {uintptr_t{0}, uintptr_t{4096}}) {
    std::vector<kernels::TensorView> moved = op->tensors;
    for (kernels::TensorView& t : moved)
      if (t.data != nullptr) t.data = reinterpret_cast<char*>(t.data) + shift;
    kernels::OpCall call;
    call.tensors = moved;
    call.scalars = op->scalars;
    call.workspace = ws;
    call.workspace_bytes = ws_bytes;
    absl::StatusOr<kernels::OpPlan> direct = kernels::PlanOp(name, call, planner.device_info());
    absl::StatusOr<kernels::OpPlan> cached =
        planner.Plan(name, moved, op->scalars, ws, ws_bytes, {.use_tuning_db = false});
    if (direct.ok() != cached.ok() || (!direct.ok() && direct.status() != cached.status()) ||
        (direct.ok() && !SamePlan(*direct, *cached))) {
      Fail(absl::StrCat(name, ": the plan cache (moved by ", shift, ") differs from PlanOp: ",
                        cached.ok() ? "plan" : cached.status().ToString(), " vs ",
                        direct.ok() ? "plan" : direct.status().ToString()));
    }
  }
  return plan.ok() ? Outcome::kPlanned : Outcome::kRefusedLaunch;
}

}  // namespace ligerd::fuzz
