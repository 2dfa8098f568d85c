"""Torch custom ops (``torch.ops.ligerd.*``) with autograd and fake kernels.

Importing this package registers the ops (it imports torch). One submodule per op family:
``ligerd.ops.rms_norm`` (``rms_norm()``), ``ligerd.ops.fused_add_rms_norm``
(``fused_add_rms_norm()``), ``ligerd.ops.layer_norm`` (``layer_norm()``), ``ligerd.ops.glu``
(``swiglu()``, ``geglu()``), ``ligerd.ops.rope`` (``rotary_pos_emb()``),
``ligerd.ops.cross_entropy`` (``cross_entropy()``), ``ligerd.ops.fused_linear_cross_entropy``,
``ligerd.ops.softmax`` (``softmax()``), ``ligerd.ops.relu_squared`` (``relu_squared()``),
``ligerd.ops.clamped_glu`` (``clamped_glu()``: the MoE experts' clamped GLU), the
distillation losses ``ligerd.ops.kl_div`` (``kl_div()``), ``ligerd.ops.jsd`` (``jsd()``),
``ligerd.ops.tvd`` (``tvd()``)."""

from ligerd.ops import clamped_glu  # noqa: F401  (module; registers ligerd::clamped_glu_*)
from ligerd.ops import cross_entropy  # noqa: F401  (module; registers ligerd::cross_entropy_*)
from ligerd.ops import fused_add_rms_norm  # noqa: F401  (registers ligerd::fused_add_rms_norm_*)
from ligerd.ops import fused_linear_cross_entropy  # noqa: F401  (module; uses cross_entropy)
from ligerd.ops import glu  # noqa: F401  (module; registers ligerd::glu_*)
from ligerd.ops import jsd  # noqa: F401  (module; registers ligerd::jsd_fwd)
from ligerd.ops import kl_div  # noqa: F401  (module; registers ligerd::kl_div_*)
from ligerd.ops import layer_norm  # noqa: F401  (module; registers ligerd::layer_norm_*)
from ligerd.ops import rms_norm  # noqa: F401  (module; registers ligerd::rms_norm_*)
from ligerd.ops import rope  # noqa: F401  (module; registers ligerd::rope, ligerd::rope_inplace)
from ligerd.ops import relu_squared  # noqa: F401  (module; registers ligerd::relu_squared_*)
from ligerd.ops import softmax  # noqa: F401  (module; registers ligerd::softmax_*)
from ligerd.ops import tvd  # noqa: F401  (module; registers ligerd::tvd_fwd)

__all__ = ["cross_entropy", "fused_add_rms_norm", "fused_linear_cross_entropy", "glu", "layer_norm",
           "rms_norm", "rope", "softmax"]
__all__ += ["jsd", "kl_div", "tvd"]
__all__ += ["relu_squared"]
__all__ += ["clamped_glu"]
