// The ring-record fuzzer's seed inputs (tests/fuzz/corpus/ring_record/, written by
// `ring_record_replay --write_seeds DIR`): a valid call of every tunable op at a few shapes (the
// op's own TuningProblem, so the planners' full paths are reached from the start), a generic
// call of every op, and the edge cases ring records have had bugs in (an empty dim before huge
// ones, overflowing offsets and strides, aliasing outputs, bad counts, ids and scalars).
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/fuzz/ring_record_input.h"

namespace ligerd::fuzz {

struct SeedTensor {
  int buffer = 3;  // index into the decoder's ids: 0 absent, 1 small, 2 odd, 3 huge, 4 tiny, 5 unknown
  int dtype = 1;   // ring dtype code, written raw
  uint8_t layout = kContiguous;
  int ndim = 2;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // kExplicit only
  int earlier = 0;               // kCopy / kAlias
  uint8_t offset_mode = 1;       // 1: 4 GiB slot `offset` of the huge buffer; 3: raw bytes
  uint64_t offset = 0;
};

struct Seed {
  std::string name;
  uint8_t op_byte = 0;
  uint8_t flags = 0;
  uint8_t tensor_byte = 0xE0;  // 0xE0 + n: n tensors; below 0xE0 the spec's count
  uint8_t scalar_byte = 0xE0;
  std::vector<SeedTensor> tensors;
  std::vector<double> scalars;
};

inline std::vector<uint8_t> Encode(const Seed& s) {
  Writer w;
  w.U8(s.op_byte).U8(s.flags).U8(s.tensor_byte).U8(s.scalar_byte);
  for (const SeedTensor& t : s.tensors) {
    w.U8(static_cast<uint8_t>(t.buffer)).U8(static_cast<uint8_t>(0x80 | t.dtype));
    w.U8(static_cast<uint8_t>(t.layout | (t.earlier << 3)));
    if (t.layout == kAlias) continue;
    if (t.layout != kCopy) {
      w.U8(static_cast<uint8_t>(t.ndim));
      for (int64_t v : t.sizes) w.Value(v);
      if (t.layout == kExplicit)
        for (int64_t v : t.strides) w.Value(v);
      if (t.layout == kPadded) w.U8(8);
    }
    w.U8(t.offset_mode);
    if (t.offset_mode == 1) w.U8(static_cast<uint8_t>(t.offset));
    if (t.offset_mode == 3) w.Bytes(t.offset, 8);
  }
  for (double d : s.scalars) w.Scalar(d);
  return w.bytes();
}

inline int OpByte(std::string_view name) {
  const auto& ops = kernels::AllOps();
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i]->name == name) return static_cast<int>(i);
  return -1;
}

// A call of `op` with every tensor [rows, cols] of its first dtype, each in its own slot.
inline Seed Generic(const kernels::OpSpec& op, int op_byte, int64_t rows, int64_t cols) {
  Seed s;
  s.name = absl::StrCat("generic_", op.name);
  s.op_byte = static_cast<uint8_t>(op_byte);
  s.tensor_byte = static_cast<uint8_t>(0xE0 + op.tensors.size());
  s.scalar_byte = static_cast<uint8_t>(0xE0 + op.scalars.size());
  for (size_t i = 0; i < op.tensors.size(); ++i) {
    SeedTensor t;
    t.dtype = op.tensors[i].dtypes.empty() ? 1 : static_cast<int>(op.tensors[i].dtypes[0]);
    t.sizes = {rows, cols};
    t.offset = i + 1;
    s.tensors.push_back(t);
  }
  s.scalars.assign(op.scalars.size(), 0.0);
  return s;
}

inline std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  const auto& ops = kernels::AllOps();
  for (size_t i = 0; i < ops.size(); ++i) {
    const kernels::OpSpec& op = *ops[i];
    seeds.push_back(Generic(op, static_cast<int>(i), 4, 64));
    if (!op.tuning_problem) continue;
    struct Shape { kernels::DType dt; int64_t rows, cols; const char* tag; };
    for (const Shape& sh : {Shape{kernels::DType::kBFloat16, 4, 64, "bf16_4x64"},
                            Shape{kernels::DType::kFloat32, 3, 4096, "f32_3x4096"},
                            Shape{kernels::DType::kFloat16, 5, 7, "f16_5x7"}}) {
      absl::StatusOr<kernels::TuningProblem> p = op.tuning_problem({sh.dt, sh.rows, sh.cols});
      if (!p.ok()) continue;
      Seed s;
      s.name = absl::StrCat(op.name, "_", sh.tag);
      s.op_byte = static_cast<uint8_t>(i);
      s.tensor_byte = static_cast<uint8_t>(0xE0 + p->tensors.size());
      s.scalar_byte = static_cast<uint8_t>(0xE0 + p->scalars.size());
      for (size_t k = 0; k < p->tensors.size(); ++k) {
        const kernels::ScratchTensor& st = p->tensors[k];
        SeedTensor t;
        t.buffer = st.present ? 3 : 0;
        t.dtype = static_cast<int>(st.dtype);
        t.ndim = static_cast<int>(st.sizes.size());
        t.sizes = st.sizes;
        t.offset = k + 1;
        s.tensors.push_back(t);
      }
      s.scalars = p->scalars;
      seeds.push_back(s);
    }
  }
  // Valid calls of the ops without a tuning problem (their generic call above is refused).
  auto call = [&](std::string name, std::string_view op, std::vector<SeedTensor> tensors,
                  std::vector<double> scalars) {
    Seed s;
    s.name = std::move(name);
    s.op_byte = static_cast<uint8_t>(OpByte(op));
    s.tensor_byte = static_cast<uint8_t>(0xE0 + tensors.size());
    s.scalar_byte = static_cast<uint8_t>(0xE0 + scalars.size());
    for (size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].layout != kAlias) tensors[i].offset = i + 1;
    s.tensors = std::move(tensors);
    s.scalars = std::move(scalars);
    seeds.push_back(s);
  };
  constexpr int bf16 = static_cast<int>(kernels::DType::kBFloat16);
  constexpr int f32 = static_cast<int>(kernels::DType::kFloat32);
  constexpr int i64 = static_cast<int>(kernels::DType::kInt64);
  auto t = [](int dtype, std::vector<int64_t> sizes) {
    return SeedTensor{.dtype = dtype, .ndim = static_cast<int>(sizes.size()), .sizes = sizes, .strides = {}};
  };
  SeedTensor absent;
  absent.buffer = 0;
  absent.ndim = 0;
  SeedTensor alias_of_0;
  alias_of_0.layout = kAlias;
  alias_of_0.earlier = 0;
  for (const char* op : {"rope_fwd", "rope_bwd"}) {
    call(absl::StrCat(op, "_bf16"), op,
         {t(bf16, {2, 4, 8, 64}), t(bf16, {2, 2, 8, 64}), t(bf16, {1, 8, 64}), t(bf16, {1, 8, 64}),
          t(bf16, {2, 4, 8, 64}), t(bf16, {2, 2, 8, 64})},
         {});
  }
  call("gemm_bf16", "gemm", {t(bf16, {16, 32}), t(bf16, {32, 8}), absent, t(bf16, {16, 8}), absent}, {1.0, 0.0});
  {
    SeedTensor at = t(bf16, {16, 32});  // A as a transposed view
    at.layout = kExplicit;
    at.strides = {1, 16};
    SeedTensor d_over_c = t(f32, {16, 8});
    call("gemm_transposed_c_is_d_bias", "gemm",
         {at, t(bf16, {32, 8}), t(f32, {16, 8}), d_over_c, t(f32, {8})}, {0.5, 1.0});
    seeds.back().tensors[3].layout = kAlias;  // D is C
    seeds.back().tensors[3].earlier = 2;
  }
  call("cross_entropy_count", "cross_entropy_count", {t(i64, {12}), t(f32, {1000}), t(f32, {4})}, {-100, 1000});
  call("cross_entropy_fwd_f32", "cross_entropy_fwd",
       {t(f32, {12, 1000}), t(i64, {12}), absent, t(f32, {4}), absent, alias_of_0, t(f32, {12}), absent, absent},
       {-100, 0, 0, 1, 0, 0});
  call("cross_entropy_scale_bf16", "cross_entropy_scale", {t(bf16, {12, 1000}), t(f32, {1})}, {});

  // Edge cases, on a valid rms_norm_fwd call (X [3, 4096], W, Y, RSTD; tensors 0 and 2 are
  // X and Y).
  const int rms = OpByte("rms_norm_fwd");
  const kernels::OpSpec& rms_spec = *ops[rms];
  Seed base = Generic(rms_spec, rms, 4, 64);
  for (const Seed& s : seeds)
    if (s.name == "rms_norm_fwd_f32_3x4096") base = s;
  auto edge = [&](std::string name, auto change) {
    Seed s = base;
    s.name = "edge_" + name;
    change(s);
    seeds.push_back(s);
  };
  constexpr int64_t k62 = int64_t{1} << 62;
  edge("empty_dim_then_huge", [&](Seed& s) {
    s.tensors[0] = {.layout = kExplicit, .ndim = 3, .sizes = {0, k62, k62}, .strides = {1, 1, 1}, .offset = 1};
  });
  edge("broadcast_input_2p20_rows", [&](Seed& s) {  // X one row seen 2^20 times; Y 16 GiB
    s.tensors[0].layout = kExplicit;
    s.tensors[0].sizes[0] = int64_t{1} << 20;
    s.tensors[0].strides = {0, 1};
    s.tensors[2].sizes[0] = int64_t{1} << 20;
    s.tensors[3].sizes[0] = int64_t{1} << 20;
    s.tensors[3].offset = 100;  // past Y
  });
  edge("broadcast_output", [&](Seed& s) {  // Y with a stride-0 dim: refused
    s.tensors[2].layout = kExplicit;
    s.tensors[2].strides = {0, 1};
  });
  edge("negative_stride", [&](Seed& s) {
    s.tensors[0].layout = kExplicit;
    s.tensors[0].strides = {-4096, 1};
  });
  edge("unaligned_offset", [&](Seed& s) { s.tensors[0].offset_mode = 3, s.tensors[0].offset = 3; });
  edge("offset_wraps", [&](Seed& s) { s.tensors[0].offset_mode = 3, s.tensors[0].offset = ~uint64_t{0} - 3; });
  edge("outside_small_buffer", [&](Seed& s) {
    s.tensors[0].buffer = 1;
    s.tensors[0].offset_mode = 0;
    s.tensors[0].sizes = {32, 4096};
  });
  edge("stride_overflow", [&](Seed& s) {
    s.tensors[0].layout = kExplicit;
    s.tensors[0].strides = {INT64_MAX, 1};
  });
  edge("output_aliases_input", [&](Seed& s) {
    s.tensors[2].layout = kAlias;
    s.tensors[2].earlier = 0;
  });
  edge("output_overlaps_input", [&](Seed& s) {
    s.tensors[2].offset_mode = 3;
    s.tensors[2].offset = (uint64_t{1} << 32) + 128;  // inside X, which is in slot 1
  });
  edge("nan_scalar", [&](Seed& s) { s.scalars[0] = std::nan(""); });
  edge("inf_scalar", [&](Seed& s) { s.scalars[0] = -INFINITY; });
  edge("op_not_in_catalogue", [&](Seed& s) { s.op_byte = 0xF5; });
  edge("wrong_sequence", [&](Seed& s) { s.flags = 1; });
  edge("stream_slot_out_of_range", [&](Seed& s) { s.flags = 2; });
  edge("reserved_fields", [&](Seed& s) { s.flags = 4 | 8; });
  edge("tensor_reserved_bytes", [&](Seed& s) { s.flags = 16; });
  edge("too_many_tensors", [&](Seed& s) { s.tensor_byte = 0xE0 + 13; });
  edge("too_many_scalars", [&](Seed& s) { s.scalar_byte = 0xE0 + 9; });
  edge("unknown_buffer", [&](Seed& s) { s.tensors[1].buffer = 5; });
  edge("ndim_0", [&](Seed& s) { s.tensors[0].ndim = 0, s.tensors[0].sizes = {}; });
  edge("ndim_5", [&](Seed& s) { s.tensors[0].ndim = 5, s.tensors[0].sizes = {1, 1, 1, 3, 4096}; });
  edge("invalid_dtype", [&](Seed& s) { s.tensors[0].dtype = 6; });
  edge("padded_rows", [&](Seed& s) {
    for (SeedTensor& t : s.tensors) t.layout = kPadded;
  });
  edge("empty_rows", [&](Seed& s) {
    for (SeedTensor& t : s.tensors) t.sizes[0] = 0;
  });
  edge("four_dims", [&](Seed& s) {
    for (SeedTensor& t : s.tensors)
      if (t.ndim == 2) t.ndim = 4, t.sizes = {2, 3, 5, t.sizes[1]};
    s.tensors[3].sizes = {30};  // RSTD: one per row
  });
  return seeds;
}

// Writes every seed as DIR/<name>; 0 on success.
inline int WriteSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (const Seed& s : Seeds()) {
    const std::vector<uint8_t> bytes = Encode(s);
    std::ofstream out(dir / s.name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "ring_record_replay: cannot write %s\n", (dir / s.name).c_str());
      return 1;
    }
    ++n;
  }
  std::fprintf(stderr, "ring_record_replay: wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}

}  // namespace ligerd::fuzz
