"""ligerd's compatibility package for code that imports ``liger_kernel`` and cannot be edited (HF
Trainer's ``use_liger_kernel``, TRL, Axolotl's LigerPlugin, LLaMA-Factory).

This is NOT Liger-Kernel: ``liger_kernel.transformers``, ``.chunked_loss``, ``.ops`` and ``.utils``
hand out ligerd's objects where ligerd has them, and stand-ins that raise
:class:`LigerdNotProvidedError` (an ImportError) on use where it does not. Installed on purpose only
(``pip install ./python_client/compat``), removed with ``pip uninstall liger-kernel``; never beside a
real Liger-Kernel. docs/compat.md in the ligerd repository has the whole table."""

from liger_kernel._shim import LigerdCompatWarning, LigerdNotProvidedError
from liger_kernel._version import __version__

__all__ = ["__version__", "LigerdNotProvidedError", "LigerdCompatWarning"]
