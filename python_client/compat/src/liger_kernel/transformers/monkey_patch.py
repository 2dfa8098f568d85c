"""``liger_kernel.transformers.monkey_patch`` (Axolotl reads MODEL_TYPE_TO_APPLY_LIGER_FN here, verl
calls _apply_liger_kernel_to_instance here): ligerd.transformers.monkey_patch's names, with the
model-type checks of liger_kernel.transformers. MODEL_TYPE_TO_APPLY_LIGER_FN lists only the model
types ligerd patches."""

from liger_kernel import _shim
from liger_kernel.transformers import (_apply_factories, _apply_liger_kernel,
                                       _apply_liger_kernel_to_instance)

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.monkey_patch", (),
                                               _apply_factories(__name__))
