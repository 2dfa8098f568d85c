// gemm: D = alpha * A @ B + beta * C (+ bias), row-major as torch sees it, run by cuBLASLt in
// the executor (kernels/blas/). See gemm.cc.
#pragma once

#include "kernels/catalogue.h"

namespace ligerd::kernels {

const OpSpec& GemmSpec();  // gemm

}  // namespace ligerd::kernels
