// Kernel sources embedded in the binary at build time (cmake/EmbedSource.cmake generates the
// table from the .cuh/.h files listed in kernels/CMakeLists.txt), so a deployed ligerd needs no
// source tree and the JIT cache key covers exactly the text that is compiled.
#pragma once

#include <string_view>

namespace ligerd::kernels {

// The text of an embedded file by its repository path ("kernels/ops/rms_norm.cuh"); empty
// if there is no such file.
std::string_view EmbeddedSource(std::string_view path);

}  // namespace ligerd::kernels
