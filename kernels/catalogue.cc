#include "kernels/catalogue.h"

#include "absl/strings/str_cat.h"
#include "kernels/ops/entries/all_ops.h"
#include "kernels/status_macros.h"
#include "kernels/validate.h"

namespace ligerd::kernels {

const std::vector<const OpSpec*>& AllOps() {
  // Generated from the entries (kernels/ops/entries/all_ops.h) rather than static registrars: a
  // static library drops object files that nothing references, and with them any registration.
  static const auto* ops = new std::vector<const OpSpec*>(AllOpsList());
  return *ops;
}

const OpSpec* FindOp(std::string_view name) {
  for (const OpSpec* op : AllOps())
    if (op->name == name) return op;
  return nullptr;
}

std::vector<OpInfo> ListOps() {
  std::vector<OpInfo> out;
  for (const OpSpec* op : AllOps()) {
    OpInfo info;
    info.name = op->name;
    info.doc = op->doc;
    info.variant_count = op->variants.size();
    for (const TensorParam& t : op->tensors)
      info.tensors.push_back(absl::StrCat(t.name, t.optional ? "?" : "", t.output ? "->" : ""));
    info.scalars = op->scalars;
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<OpPlan> PlanOp(std::string_view op, const OpCall& call, const DeviceInfo& device) {
  const OpSpec* spec = FindOp(op);
  if (spec == nullptr) return absl::NotFoundError(absl::StrCat("unknown op '", std::string(op), "'"));
  LIGERD_RETURN_IF_ERROR(CheckCall(*spec, call, device));
  return spec->plan(*spec, call, device);
}

std::function<std::optional<TuningShape>(const OpCall&)> RowTuningShape(int index) {
  return [index](const OpCall& call) -> std::optional<TuningShape> {
    if (index < 0 || static_cast<size_t>(index) >= call.tensors.size()) return std::nullopt;
    const TensorView& t = call.tensors[index];
    if (!t.present() || t.ndim < 1 || t.ndim > kMaxDims) return std::nullopt;
    TuningShape s;
    s.dtype = t.dtype;
    s.cols = t.sizes[t.ndim - 1];
    if (s.cols < 0) return std::nullopt;
    s.rows = 1;
    for (int d = 0; d + 1 < t.ndim; ++d)  // checked: this may run before the call's checks
      if (t.sizes[d] < 0 || __builtin_mul_overflow(s.rows, t.sizes[d], &s.rows)) return std::nullopt;
    return s;
  };
}

CompileRequest MakeCompileRequest(const OpSpec& spec, const KernelVariant& variant,
                                  std::string_view arch) {
  CompileRequest r;
  r.op = spec.name;
  r.variant = variant.tag;
  r.main = spec.main;
  r.headers = spec.headers;
  r.options = spec.options;
  for (const std::string& d : variant.defines) r.options.push_back(absl::StrCat("-D", d));
  r.arch = std::string(arch);
  return r;
}

}  // namespace ligerd::kernels
