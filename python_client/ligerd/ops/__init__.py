"""Torch custom ops (``torch.ops.ligerd.*``) with autograd and fake kernels.

Importing this package registers the ops (it imports torch). One submodule per op family:
``ligerd.ops.rms_norm`` (``rms_norm()``), ``ligerd.ops.glu`` (``swiglu()``, ``geglu()``),
``ligerd.ops.rope`` (``rotary_pos_emb()``)."""

from ligerd.ops import glu  # noqa: F401  (module; registers ligerd::glu_*)
from ligerd.ops import rms_norm  # noqa: F401  (module; registers ligerd::rms_norm_*)
from ligerd.ops import rope  # noqa: F401  (module; registers ligerd::rope, ligerd::rope_inplace)

__all__ = ["glu", "rms_norm", "rope"]
