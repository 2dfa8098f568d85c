"""Torch custom ops (``torch.ops.ligerd.*``) with autograd and fake kernels.

Importing this package registers the ops (it imports torch). One submodule per op family:
``ligerd.ops.rms_norm`` (``rms_norm()``), ``ligerd.ops.glu`` (``swiglu()``, ``geglu()``)."""

from ligerd.ops import glu  # noqa: F401  (module; registers ligerd::glu_*)
from ligerd.ops import rms_norm  # noqa: F401  (module; registers ligerd::rms_norm_*)

__all__ = ["glu", "rms_norm"]
