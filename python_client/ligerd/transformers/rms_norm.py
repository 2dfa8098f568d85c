"""``LigerRMSNorm`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch
import torch.nn as nn

from ligerd.ops.rms_norm import casting_mode_id, rms_norm


class LigerRMSNorm(nn.Module):
    """RMSNorm over the last dimension: ``y = x / sqrt(mean(x^2) + eps) * (offset + weight)``.

    Args (as in Liger-Kernel):
        hidden_size: size of the last dimension.
        eps: added to the mean square.
        offset: added to the weight (1.0 for Gemma's ``(1 + w)``).
        casting_mode: ``"llama"`` (rstd in fp32, normalised x cast back before the weight multiply),
            ``"gemma"`` (all in fp32), or ``"none"`` (all in the input dtype).
        init_fn: ``"ones"`` or ``"zeros"`` for the weight.
        in_place: write dX over dY in the backward (saves memory; do not use where dY is needed
            elsewhere, e.g. Gemma2-style sandwich norms). Eager mode only; see ligerd.ops.rms_norm.
        row_mode: accepted for compatibility and ignored. In Liger it forces the one-row-per-program
            Triton kernel instead of the multi-row block kernel; ligerd's executor picks its kernel
            shape per (dtype, hidden size, rows) itself, from its tuning table, so there is nothing
            for the caller to force.
        elementwise_affine: if False there is no weight (``y = x / rms(x)``).
    """

    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", init_fn="ones",
                 in_place=True, row_mode=None, elementwise_affine=True):
        super().__init__()
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"init_fn must be 'ones' or 'zeros', got {init_fn!r}")
        casting_mode_id(casting_mode)  # reject an unknown mode at construction, like Liger
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            init = torch.ones if init_fn == "ones" else torch.zeros
            self.weight = nn.Parameter(init(hidden_size))
        else:
            self.register_parameter("weight", None)
        self.variance_epsilon = eps
        self.offset = offset
        self.casting_mode = casting_mode
        self.in_place = in_place
        self.row_mode = row_mode

    def forward(self, hidden_states):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon, offset=self.offset,
                        casting_mode=self.casting_mode, in_place=self.in_place)

    def extra_repr(self):
        return (f"{self.hidden_size}, eps={self.variance_epsilon}, offset={self.offset}, "
                f"casting_mode={self.casting_mode!r}, in_place={self.in_place}, "
                f"elementwise_affine={self.elementwise_affine}")


class LigerRMSNormForGemma(LigerRMSNorm):
    """Gemma: ``(1 + w)`` with zero-initialised w, all in fp32."""

    def __init__(self, hidden_size, eps=1e-6, offset=1.0, casting_mode="gemma", init_fn="zeros",
                 in_place=True, row_mode=None, elementwise_affine=True):
        super().__init__(hidden_size, eps, offset, casting_mode, init_fn, in_place, row_mode,
                         elementwise_affine)


class LigerRMSNormForGemma2(LigerRMSNorm):
    """Gemma2: as Gemma but not in place (its sandwich norms reuse dY)."""

    def __init__(self, hidden_size, eps=1e-6, offset=1.0, casting_mode="gemma", init_fn="zeros",
                 in_place=False, row_mode=None, elementwise_affine=True):
        super().__init__(hidden_size, eps, offset, casting_mode, init_fn, in_place, row_mode,
                         elementwise_affine)


class LigerRMSNormForGemma3(LigerRMSNormForGemma2):
    """Gemma3: same settings as Gemma2. The first parameter is named ``dim`` as in Liger-Kernel
    and in transformers' ``Gemma3RMSNorm`` (whose q_norm/k_norm are built with ``dim=``)."""

    def __init__(self, dim, eps=1e-6, offset=1.0, casting_mode="gemma", init_fn="zeros",
                 in_place=False, row_mode=None, elementwise_affine=True):
        super().__init__(dim, eps, offset, casting_mode, init_fn, in_place, row_mode,
                         elementwise_affine)


class LigerRMSNormForOlmo2(LigerRMSNorm):
    """OLMo2: llama casting, not in place."""

    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", init_fn="ones",
                 in_place=False, row_mode=None, elementwise_affine=True):
        super().__init__(hidden_size, eps, offset, casting_mode, init_fn, in_place, row_mode,
                         elementwise_affine)


class LigerRMSNormForGlm4(LigerRMSNormForOlmo2):
    """GLM-4: same settings as OLMo2."""
