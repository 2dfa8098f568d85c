// The catalogue's ops, one accessor per kernels/ops/<op>.cc (listed in AllOps()).
#pragma once

#include "kernels/catalogue.h"

namespace ligerd::kernels {

const OpSpec& RmsNormForwardSpec();   // rms_norm_fwd
const OpSpec& RmsNormBackwardSpec();  // rms_norm_bwd
const OpSpec& SwiGluForwardSpec();    // swiglu_fwd
const OpSpec& SwiGluBackwardSpec();   // swiglu_bwd
const OpSpec& GeGluForwardSpec();     // geglu_fwd
const OpSpec& GeGluBackwardSpec();    // geglu_bwd
const OpSpec& RopeForwardSpec();      // rope_fwd
const OpSpec& RopeBackwardSpec();     // rope_bwd
const OpSpec& CrossEntropyCountSpec();    // cross_entropy_count
const OpSpec& CrossEntropyForwardSpec();  // cross_entropy_fwd
const OpSpec& CrossEntropyScaleSpec();    // cross_entropy_scale
const OpSpec& LayerNormForwardSpec();          // layer_norm_fwd
const OpSpec& LayerNormBackwardSpec();         // layer_norm_bwd
const OpSpec& FusedAddRmsNormForwardSpec();    // fused_add_rms_norm_fwd
const OpSpec& FusedAddRmsNormBackwardSpec();   // fused_add_rms_norm_bwd
const OpSpec& GemmSpec();                      // gemm (cuBLASLt, kernels/ops/gemm.cc)

}  // namespace ligerd::kernels
