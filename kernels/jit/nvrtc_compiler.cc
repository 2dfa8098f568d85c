#include "kernels/jit/nvrtc_compiler.h"

#include <nvrtc.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"

namespace ligerd::kernels {
namespace {

absl::Status NvrtcError(nvrtcResult r, const char* call, const char* file, int line,
                        absl::string_view context = {}) {
  std::string msg = absl::StrCat(call, " failed: ", nvrtcGetErrorString(r), " at ", file, ":",
                                 line, context.empty() ? "" : "; ", context);
  if (r == NVRTC_ERROR_OUT_OF_MEMORY) return absl::ResourceExhaustedError(msg);
  if (r == NVRTC_ERROR_INVALID_OPTION) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// Like LIGERD_CU_CHECK for NVRTC calls: the status names the call and its file:line.
#define LIGERD_NVRTC_CHECK(call)                                                   \
  do {                                                                             \
    nvrtcResult ligerd_nvrtc_result_ = (call);                                     \
    if (ligerd_nvrtc_result_ != NVRTC_SUCCESS)                                     \
      return NvrtcError(ligerd_nvrtc_result_, #call, __FILE__, __LINE__);          \
  } while (0)

// Owns an nvrtcProgram for the duration of one compile.
class Program {
 public:
  ~Program() {
    if (prog_ != nullptr) nvrtcDestroyProgram(&prog_);
  }
  nvrtcProgram* out() { return &prog_; }
  nvrtcProgram get() const { return prog_; }

 private:
  nvrtcProgram prog_ = nullptr;
};

absl::StatusOr<std::string> ProgramLog(nvrtcProgram prog) {
  size_t size = 0;
  LIGERD_NVRTC_CHECK(nvrtcGetProgramLogSize(prog, &size));
  std::string log(size, '\0');
  if (size > 0) LIGERD_NVRTC_CHECK(nvrtcGetProgramLog(prog, log.data()));
  while (!log.empty() && (log.back() == '\0' || std::isspace(static_cast<unsigned char>(log.back()))))
    log.pop_back();
  return log;
}

class NvrtcCompilerImpl final : public Compiler {
 public:
  std::string VersionTag() const override { return NvrtcVersionTag(); }

  absl::StatusOr<CompiledModule> Compile(const CompileRequest& req) const override {
    LIGERD_ASSIGN_OR_RETURN(ParsedArch arch, ParseArch(req.arch));
    std::vector<const char*> header_texts, header_names;
    // NVRTC wants NUL-terminated strings; string_views from embedded sources are, but copies
    // make that independent of where the text came from.
    std::vector<std::string> owned;
    owned.reserve(req.headers.size() + 1);
    for (const SourceFile& h : req.headers) {
      owned.emplace_back(h.text);
      header_texts.push_back(owned.back().c_str());
      header_names.push_back(h.name.c_str());
    }
    owned.emplace_back(req.main.text);
    const std::string& main_text = owned.back();

    Program prog;
    LIGERD_NVRTC_CHECK(nvrtcCreateProgram(prog.out(), main_text.c_str(), req.main.name.c_str(),
                                          static_cast<int>(header_texts.size()),
                                          header_texts.data(), header_names.data()));
    std::vector<std::string> opts = req.options;
    opts.push_back(absl::StrCat("--gpu-architecture=", req.arch));
    std::vector<const char*> opt_ptrs;
    for (const std::string& o : opts) opt_ptrs.push_back(o.c_str());

    nvrtcResult r = nvrtcCompileProgram(prog.get(), static_cast<int>(opt_ptrs.size()),
                                        opt_ptrs.data());
    LIGERD_ASSIGN_OR_RETURN(std::string log, ProgramLog(prog.get()));
    if (r != NVRTC_SUCCESS) {
      return NvrtcError(r, "nvrtcCompileProgram", __FILE__, __LINE__,
                        absl::StrCat("op ", req.op, " variant ", req.variant, " for ", req.arch,
                                     " with options [", absl::StrJoin(opts, " "), "]:\n", log));
    }
    CompiledModule out;
    out.log = std::move(log);
    size_t size = 0;
    if (arch.real) {
      out.kind = BinaryKind::kCubin;
      LIGERD_NVRTC_CHECK(nvrtcGetCUBINSize(prog.get(), &size));
      out.image.resize(size);
      LIGERD_NVRTC_CHECK(nvrtcGetCUBIN(prog.get(), out.image.data()));
    } else {
      out.kind = BinaryKind::kPtx;
      LIGERD_NVRTC_CHECK(nvrtcGetPTXSize(prog.get(), &size));  // includes the trailing NUL
      out.image.resize(size);
      LIGERD_NVRTC_CHECK(nvrtcGetPTX(prog.get(), out.image.data()));
    }
    if (out.image.empty()) {
      return absl::InternalError(absl::StrCat("NVRTC produced an empty image for ", req.op, " ",
                                              req.variant, " ", req.arch));
    }
    return out;
  }
};

}  // namespace

std::string NvrtcVersionTag() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "nvrtc-unknown";
  return absl::StrCat("nvrtc-", major, ".", minor);
}

std::vector<int> NvrtcSupportedArchs() {
  int n = 0;
  if (nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0) return {};
  std::vector<int> archs(n);
  if (nvrtcGetSupportedArchs(archs.data()) != NVRTC_SUCCESS) return {};
  std::sort(archs.begin(), archs.end());
  return archs;
}

absl::StatusOr<ParsedArch> ParseArch(std::string_view arch_view) {
  const std::string arch(arch_view);
  ParsedArch out;
  absl::string_view rest = arch;
  if (absl::ConsumePrefix(&rest, "sm_")) {
    out.real = true;
  } else if (absl::ConsumePrefix(&rest, "compute_")) {
    out.real = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("bad GPU arch '", arch, "': expected sm_XY (CUBIN) or compute_XY (PTX)"));
  }
  if (!rest.empty() && (rest.back() == 'a' || rest.back() == 'f')) {
    out.suffix = std::string(1, rest.back());
    rest.remove_suffix(1);
  }
  if (rest.empty() || !std::all_of(rest.begin(), rest.end(), ::isdigit) ||
      !absl::SimpleAtoi(rest, &out.sm)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad GPU arch '", arch, "': expected sm_XY (CUBIN) or compute_XY (PTX)"));
  }
  std::vector<int> supported = NvrtcSupportedArchs();
  if (std::find(supported.begin(), supported.end(), out.sm) == supported.end()) {
    return absl::InvalidArgumentError(absl::StrCat("GPU arch '", arch, "' is not supported by ",
                                                   NvrtcVersionTag(), " (supported: ",
                                                   absl::StrJoin(supported, ", "), ")"));
  }
  return out;
}

std::shared_ptr<const Compiler> NvrtcCompiler() {
  static const auto* compiler = new std::shared_ptr<const Compiler>(
      std::make_shared<NvrtcCompilerImpl>());
  return *compiler;
}

}  // namespace ligerd::kernels
