// What to compile and what comes out: the contract between the catalogue (which names kernel
// sources and specialisations), the JIT cache (which keys and stores results) and the compiler.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ligerd::kernels {

// A source file held in memory. Kernel sources are embedded in the binary at build time, so
// `text` normally points at static storage.
struct SourceFile {
  std::string name;  // the name `#include "..."` uses, e.g. "kernels/ops/common.cuh"
  std::string_view text;
};

struct CompileRequest {
  std::string op;       // catalogue op, e.g. "rms_norm_fwd" (file names, messages)
  std::string variant;  // specialisation tag, e.g. "bf16.wbf16.llama" (file names, messages)
  SourceFile main;
  std::vector<SourceFile> headers;   // resolvable by #include "name" without a file system
  std::vector<std::string> options;  // compiler options, -D defines included
  std::string arch;                  // "sm_90" -> CUBIN, "compute_90" -> PTX
};

enum class BinaryKind : uint8_t { kCubin = 1, kPtx = 2 };

struct CompiledModule {
  BinaryKind kind = BinaryKind::kCubin;
  std::string image;  // cubin bytes, or NUL-terminated PTX text (cuModuleLoadData takes either)
  std::string log;    // compiler log (warnings), may be empty
};

class Compiler {
 public:
  virtual ~Compiler() = default;
  // Identifies the compiler and its version; part of every cache key, so upgrading NVRTC
  // never serves a stale binary.
  virtual std::string VersionTag() const = 0;
  virtual absl::StatusOr<CompiledModule> Compile(const CompileRequest& request) const = 0;
};

}  // namespace ligerd::kernels
