"""One exception family for everything ligerd raises in Python.

Inside C++ errors are ``absl::Status`` values; their codes are the gRPC codes, so one table here maps
both a status coming out of the local executor (``ligerd._C``) and one a daemon answers with.
Messages name the op, the tensor and what was wrong.
"""

from __future__ import annotations

import warnings
from typing import Optional


class LigerdError(RuntimeError):
    """Base class of every error ligerd raises. ``code`` is the absl/gRPC status code (int)."""

    def __init__(self, message: str, *, code: Optional[int] = None, op: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.op = op


class DaemonUnavailableError(LigerdError):
    """No ligerd daemon answered (or it died, or did not start in time)."""


class OpInputError(LigerdError, ValueError):
    """Bad input to an op: wrong device, dtype, shape, stride or argument. Names the op and tensor."""


class KernelError(LigerdError):
    """A kernel failed to compile, launch or run, or the executor hit an internal error."""


class DispatchUnavailableError(LigerdError, NotImplementedError):
    """The requested dispatch mode cannot be used here (e.g. ``remote`` without a CUDA device)."""


class ConfigError(LigerdError, ValueError):
    """A setting (environment variable or API argument) has a value ligerd does not understand."""


class LigerdWarning(UserWarning):
    """Things ligerd tells the user once: a private daemon was started, no daemon could be used, ..."""


# absl::StatusCode / grpc.StatusCode numbering (identical by design).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

STATUS_NAMES = {
    OK: "OK", CANCELLED: "CANCELLED", UNKNOWN: "UNKNOWN", INVALID_ARGUMENT: "INVALID_ARGUMENT",
    DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED", NOT_FOUND: "NOT_FOUND", ALREADY_EXISTS: "ALREADY_EXISTS",
    PERMISSION_DENIED: "PERMISSION_DENIED", RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    FAILED_PRECONDITION: "FAILED_PRECONDITION", ABORTED: "ABORTED", OUT_OF_RANGE: "OUT_OF_RANGE",
    UNIMPLEMENTED: "UNIMPLEMENTED", INTERNAL: "INTERNAL", UNAVAILABLE: "UNAVAILABLE",
    DATA_LOSS: "DATA_LOSS", UNAUTHENTICATED: "UNAUTHENTICATED",
}

# Which Python class a status code becomes. Input problems (INVALID_ARGUMENT, OUT_OF_RANGE) are
# ValueErrors (OpInputError), the daemon being gone is DaemonUnavailableError, everything else
# (no driver or context: FAILED_PRECONDITION; compile or launch failures, out of memory,
# internal bugs) is KernelError.
_CLASS_FOR_CODE = {
    INVALID_ARGUMENT: OpInputError,
    OUT_OF_RANGE: OpInputError,
    UNAVAILABLE: DaemonUnavailableError,
    DEADLINE_EXCEEDED: DaemonUnavailableError,
    UNIMPLEMENTED: DispatchUnavailableError,
}


def error_from_status(code: int, message: str, op: Optional[str] = None) -> LigerdError:
    """Build (not raise) the exception for a non-OK status. Used by ligerd._C and the daemon client."""
    code = int(code)
    cls = _CLASS_FOR_CODE.get(code, KernelError)
    name = STATUS_NAMES.get(code, f"code {code}")
    text = message or "(no message)"
    if op and op not in text:
        text = f"ligerd op {op}: {text}"
    return cls(f"{text} [{name}]", code=code, op=op)


_warned: set = set()


def warn_once(key: str, message: str, stacklevel: int = 3) -> bool:
    """Emit ``message`` as a LigerdWarning the first time ``key`` is seen in this process."""
    if key in _warned:
        return False
    _warned.add(key)
    warnings.warn(message, LigerdWarning, stacklevel=stacklevel)
    return True
