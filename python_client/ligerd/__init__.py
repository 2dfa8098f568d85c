"""ligerd: fused GPU kernels for LLM training, served by a per-node daemon.

``ligerd.transformers`` mirrors ``liger_kernel.transformers`` (switch by changing an import),
``ligerd.chunked_loss`` mirrors ``liger_kernel.chunked_loss`` (docs/chunked_loss.md);
``ligerd.ops`` holds the torch custom ops. Importing ``ligerd`` itself is cheap: it does not import
torch, start a daemon or load the extension; that happens at the first op.
"""

from ligerd._version import __version__
from ligerd._errors import (ConfigError, DaemonUnavailableError, DispatchUnavailableError,
                            KernelError, LigerdError, LigerdWarning, OpInputError)
from ligerd._dispatch import dispatch_info, get_dispatch_mode, session_info, set_dispatch_mode, synchronize

__all__ = [
    "__version__",
    "LigerdError",
    "DaemonUnavailableError",
    "OpInputError",
    "KernelError",
    "DispatchUnavailableError",
    "ConfigError",
    "LigerdWarning",
    "set_dispatch_mode",
    "get_dispatch_mode",
    "dispatch_info",
    "session_info",
    "synchronize",
]
