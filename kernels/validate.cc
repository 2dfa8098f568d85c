#include "kernels/validate.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ligerd::kernels {

int64_t NumElements(const TensorView& t) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) n *= t.sizes[i];
  return n;
}

bool ByteExtent(const TensorView& t, uint64_t* bytes) {
  // Callers have checked sizes and strides are non-negative and ndim is in range.
  unsigned __int128 last = 0;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.sizes[i] == 0) {
      *bytes = 0;
      return true;
    }
    last += static_cast<unsigned __int128>(t.sizes[i] - 1) * static_cast<uint64_t>(t.strides[i]);
  }
  const unsigned __int128 total = (last + 1) * static_cast<unsigned>(DTypeBytes(t.dtype));
  // Keep well inside int64 so every later element/byte computation is safe.
  if (total > static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max() / 2)) return false;
  *bytes = static_cast<uint64_t>(total);
  return true;
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
    span += dims[i].first * (dims[i].second - 1);
  }
  return true;
}

bool IsContiguous(const TensorView& t) {
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.sizes[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    expected *= t.sizes[i];
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
                                                     ShapeString(t), " is too large (overflow)"));
    }
    if (reinterpret_cast<uintptr_t>(t.data) % DTypeBytes(t.dtype) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor '", p.name,
                                                     "' is not aligned to its element size"));
    }
  }
  // An output must not overlap any other tensor (we would read what we already overwrote, or
  // write the same memory twice), except an exact, declared alias such as dX over dY.
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const TensorView& out = call.tensors[i];
    if (!spec.tensors[i].output || !out.present() || extents[i] == 0) continue;
    const auto lo = reinterpret_cast<uintptr_t>(out.data);
    for (size_t j = 0; j < spec.tensors.size(); ++j) {
      const TensorView& other = call.tensors[j];
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

absl::StatusOr<RowMatrix> AsRows(std::string_view op_view, std::string_view name_view,
                                 const TensorView& t) {
  const std::string op(op_view), name(name_view);  // absl::StrCat takes absl::string_view only
  RowMatrix m;
  m.cols = t.sizes[t.ndim - 1];
  if (m.cols > 1 && t.strides[t.ndim - 1] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": tensor '", name, "' must have a contiguous last dim (stride 1), got stride ",
        t.strides[t.ndim - 1], "; make it contiguous"));
  }
  m.rows = 1;
  for (int i = 0; i < t.ndim - 1; ++i) m.rows *= t.sizes[i];
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
    expected = (expected < 0 ? m.row_stride : expected) * t.sizes[i];
  }
  if (expected < 0) m.row_stride = m.cols;  // at most one row: any stride will do
  return m;
}

}  // namespace ligerd::kernels
