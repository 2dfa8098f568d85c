#include "kernels/validate.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ligerd::kernels {

int64_t NumElements(const TensorView& t) {
  const int nd = t.ndim < 0 ? 0 : (t.ndim > kMaxDims ? kMaxDims : t.ndim);
  for (int i = 0; i < nd; ++i)
    if (t.sizes[i] == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < nd; ++i)
    if (t.sizes[i] < 0 || __builtin_mul_overflow(n, t.sizes[i], &n)) return std::numeric_limits<int64_t>::max();
  return n;
}

bool ByteExtent(const TensorView& t, uint64_t* bytes) {
  if (t.ndim < 1 || t.ndim > kMaxDims) return false;
  // Every dim is checked; an empty one only makes the result 0 at the end.
  bool empty = false;
  uint64_t last = 0;   // element index of the last element, empty dims left out
  uint64_t count = 1;  // product of the non-empty sizes
  for (int i = 0; i < t.ndim; ++i) {
    if (t.sizes[i] < 0 || t.strides[i] < 0) return false;
    if (t.sizes[i] == 0) {
      empty = true;
      continue;
    }
    uint64_t step = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(t.sizes[i] - 1), static_cast<uint64_t>(t.strides[i]), &step) ||
        __builtin_add_overflow(last, step, &last) ||
        __builtin_mul_overflow(count, static_cast<uint64_t>(t.sizes[i]), &count) ||
        count > static_cast<uint64_t>(kMaxTensorElements))
      return false;
  }
  uint64_t total = 0;
  if (__builtin_add_overflow(last, uint64_t{1}, &total) ||
      __builtin_mul_overflow(total, static_cast<uint64_t>(DTypeBytes(t.dtype)), &total) ||
      // Keep well inside int64 so every later element/byte computation is safe.
      total > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 2))
    return false;
  *bytes = empty ? 0 : total;
  return true;
}

int64_t NextPow2Saturating(int64_t v) {
  if (v > (int64_t{1} << 62)) return std::numeric_limits<int64_t>::max();
  int64_t p = 1;
  while (p < v) p <<= 1;  // at most 62 doublings
  return p;
}

std::string ShapeString(const TensorView& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes, t.sizes + std::max(0, t.ndim), ", "), "]");
}

bool SameView(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.sizes[i] != b.sizes[i] || (a.sizes[i] > 1 && a.strides[i] != b.strides[i])) return false;
  return true;
}

bool NoInternalOverlap(const TensorView& t) {
  std::pair<int64_t, int64_t> dims[kMaxDims];  // (stride, size) of dims with size > 1
  int n = 0;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.sizes[i] == 0) return true;
    if (t.sizes[i] > 1) dims[n++] = {t.strides[i], t.sizes[i]};
  }
  for (int i = 1; i < n; ++i)  // insertion sort by stride: at most kMaxDims entries
    for (int j = i; j > 0 && dims[j].first < dims[j - 1].first; --j) std::swap(dims[j], dims[j - 1]);
  int64_t span = 0;  // elements covered by the dims sorted so far, minus one
  for (int i = 0; i < n; ++i) {
    if (dims[i].first <= span) return false;
    int64_t step = 0;
    if (__builtin_mul_overflow(dims[i].first, dims[i].second - 1, &step) ||
        __builtin_add_overflow(span, step, &span))
      return false;  // a span int64 cannot hold: not a tensor CheckCall lets through
  }
  return true;
}

bool IsContiguous(const TensorView& t) {
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.sizes[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    if (__builtin_mul_overflow(expected, t.sizes[i], &expected)) return false;
  }
  return true;
}

absl::Status CheckSameShape(absl::string_view op, absl::string_view name, const TensorView& t,
                            absl::string_view ref_name, const TensorView& ref) {
  bool same = t.ndim == ref.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.sizes[i] == ref.sizes[i];
  if (!same)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has shape ",
                                                   ShapeString(t), ", expected ",
                                                   ShapeString(ref), " (shape of ", ref_name, ")"));
  if (t.dtype != ref.dtype)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has dtype ",
                                                   DTypeName(t.dtype), ", expected ",
                                                   DTypeName(ref.dtype), " (dtype of ", ref_name,
                                                   ")"));
  return absl::OkStatus();
}

namespace {

// Where one tensor lies: aligned to its element size, [data, data + extent) inside the address
// space (a range that wraps would defeat the overlap checks and is no real allocation).
absl::Status CheckAddress(absl::string_view op, absl::string_view name, const TensorView& t,
                          uint64_t extent) {
  const auto lo = reinterpret_cast<uintptr_t>(t.data);
  if (lo % static_cast<uintptr_t>(std::max(DTypeBytes(t.dtype), 1)) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tensor '", name, "' is not aligned to its element size"));
  uintptr_t end = 0;
  if (__builtin_add_overflow(lo, static_cast<uintptr_t>(extent), &end))
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' at address 0x",
                                                   absl::Hex(lo), " with ", extent,
                                                   " bytes wraps around the address space"));
  return absl::OkStatus();
}

absl::Status CheckOverlaps(const OpSpec& spec, std::span<const TensorView> tensors,
                           std::span<const uint64_t> extents) {
  const std::string& op = spec.name;
  // An output must not overlap any other tensor (we would read what we already overwrote, or
  // write the same memory twice), except an exact, declared alias such as dX over dY. Ranges
  // do not wrap (CheckAddress), so the sums below do not either.
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const TensorView& out = tensors[i];
    if (!spec.tensors[i].output || !out.present() || extents[i] == 0) continue;
    const auto lo = reinterpret_cast<uintptr_t>(out.data);
    for (size_t j = 0; j < spec.tensors.size(); ++j) {
      const TensorView& other = tensors[j];
      if (j == i || !other.present() || extents[j] == 0) continue;
      const auto olo = reinterpret_cast<uintptr_t>(other.data);
      if (lo >= olo + extents[j] || olo >= lo + extents[i]) continue;
      if (spec.tensors[i].may_alias == spec.tensors[j].name && SameView(out, other)) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": output '", spec.tensors[i].name, "' overlaps tensor '", spec.tensors[j].name, "'",
          spec.tensors[i].may_alias.empty()
              ? ""
              : absl::StrCat(" (it may only be exactly '", spec.tensors[i].may_alias, "')")));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckCall(const OpSpec& spec, const OpCall& call, const DeviceInfo& device) {
  const std::string& op = spec.name;
  if (call.tensors.size() != spec.tensors.size()) {
    std::vector<std::string> names;
    for (const TensorParam& p : spec.tensors) names.push_back(p.name);
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected ", spec.tensors.size(),
                                                   " tensors (", absl::StrJoin(names, ", "),
                                                   "), got ", call.tensors.size()));
  }
  if (call.scalars.size() != spec.scalars.size()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected ", spec.scalars.size(),
                                                   " scalars (", absl::StrJoin(spec.scalars, ", "),
                                                   "), got ", call.scalars.size()));
  }
  std::vector<uint64_t> extents(call.tensors.size(), 0);
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const TensorParam& p = spec.tensors[i];
    const TensorView& t = call.tensors[i];
    if (!t.present()) {
      if (p.optional) continue;
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": tensor '", p.name, "' is required but was not given"));
    }
    if (std::find(p.dtypes.begin(), p.dtypes.end(), t.dtype) == p.dtypes.end()) {
      std::vector<std::string> ok;
      for (DType d : p.dtypes) ok.push_back(DTypeName(d));
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name, "' has dtype ",
                                                     DTypeName(t.dtype), ", expected one of ",
                                                     absl::StrJoin(ok, ", ")));
    }
    if (t.ndim < 1 || t.ndim > kMaxDims) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name, "' has ", t.ndim,
                                                     " dims, expected 1 to ", kMaxDims));
    }
    for (int d = 0; d < t.ndim; ++d) {
      if (t.sizes[d] < 0)
        return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name, "' has size ",
                                                       t.sizes[d], " in dim ", d));
      if (t.strides[d] < 0)
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": tensor '", p.name, "' has negative stride ", t.strides[d], " in dim ", d));
    }
    if (t.device != device.ordinal) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name, "' is on device ",
                                                     t.device, ", this executor runs on device ",
                                                     device.ordinal));
    }
    if (!ByteExtent(t, &extents[i])) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name, "' of shape ",
                                                     ShapeString(t),
                                                     " is too large (overflow): at most 2^62 elements "
                                                     "and bytes, the dims of an empty tensor included"));
    }
    if (absl::Status s = CheckAddress(op, p.name, t, extents[i]); !s.ok()) return s;
  }
  return CheckOverlaps(spec, call.tensors, extents);
}

absl::Status CheckAddresses(const OpSpec& spec, std::span<const TensorView> tensors,
                            std::span<const uint64_t> extents) {
  if (tensors.size() != spec.tensors.size() || extents.size() != spec.tensors.size())
    return absl::InternalError(absl::StrCat(spec.name, ": address check of ", tensors.size(),
                                            " tensors against a spec of ", spec.tensors.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].present()) continue;
    if (absl::Status s = CheckAddress(spec.name, spec.tensors[i].name, tensors[i], extents[i]); !s.ok())
      return s;
  }
  return CheckOverlaps(spec, tensors, extents);
}

absl::StatusOr<RowMatrix> AsRows(std::string_view op_view, std::string_view name_view,
                                 const TensorView& t) {
  const std::string op(op_view), name(name_view);  // absl::StrCat takes absl::string_view only
  if (t.ndim < 1 || t.ndim > kMaxDims)
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' has ", t.ndim,
                                                   " dims, expected 1 to ", kMaxDims));
  for (int i = 0; i < t.ndim; ++i)
    if (t.sizes[i] < 0)
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": tensor '", name, "' has size ", t.sizes[i], " in dim ", i));
  RowMatrix m;
  m.cols = t.sizes[t.ndim - 1];
  if (m.cols > 1 && t.strides[t.ndim - 1] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": tensor '", name, "' must have a contiguous last dim (stride 1), got stride ",
        t.strides[t.ndim - 1], "; make it contiguous"));
  }
  const auto too_many_rows = [&] {
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", name, "' of shape ",
                                                   ShapeString(t), " has too many rows (overflow)"));
  };
  m.rows = 1;
  for (int i = 0; i < t.ndim - 1; ++i)
    if (__builtin_mul_overflow(m.rows, t.sizes[i], &m.rows)) return too_many_rows();
  // The innermost leading dim of size > 1 sets the row stride; every outer one must continue it.
  int64_t expected = -1;
  for (int i = t.ndim - 2; i >= 0; --i) {
    if (t.sizes[i] == 1) continue;
    if (expected < 0) {
      m.row_stride = t.strides[i];
    } else if (t.strides[i] != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": tensor '", name, "' of shape ", ShapeString(t),
          " has leading dims that do not flatten into rows with one stride (dim ", i,
          " stride ", t.strides[i], ", expected ", expected, "); make it contiguous"));
    }
    if (__builtin_mul_overflow(expected < 0 ? m.row_stride : expected, t.sizes[i], &expected))
      return too_many_rows();
  }
  if (expected < 0) m.row_stride = m.cols;  // at most one row: any stride will do
  return m;
}

}  // namespace ligerd::kernels
