"""Loading ``ligerd._C``, the LibTorch extension that holds the executor (local dispatch) and the
remote-session client. Its own module so that both ``_backend`` (which launches ops) and
``_dispatch`` (which opens and closes daemon sessions) can load it without importing each other."""

from __future__ import annotations

import threading
from typing import Optional

from ligerd import _paths
from ligerd._errors import LigerdError

_ext = None
_error: Optional[BaseException] = None
_lock = threading.Lock()


def load():
    """Import ``ligerd._C`` once and point it at the shared JIT cache directory; a LigerdError
    saying how to build it when it is missing."""
    global _ext, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        try:
            from ligerd import _C as ext  # type: ignore[attr-defined]
        except ImportError as e:
            _error = e
            raise LigerdError(
                "ligerd: the local executor extension ligerd._C is not available "
                f"({e}). Build it with `pip install --no-build-isolation --no-deps ./python_client` "
                "(after `import torch` works), or build the CMake target ligerd_python with "
                "-DLIGERD_BUILD_PYTHON=ON and put <build>/python on PYTHONPATH.") from e
        ext.set_cache_dir(str(_paths.cache_dir()))
        _ext = ext
        return _ext
