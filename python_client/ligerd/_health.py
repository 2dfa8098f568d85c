"""The standard gRPC health check (``grpc.health.v1.Health/Check``), spoken without generated stubs.

Why hand-written: the two messages are tiny (HealthCheckRequest{string service = 1},
HealthCheckResponse{ServingStatus status = 1}), and generating stubs needs protoc and grpcio-tools
matching the protobuf runtime of whatever environment the trainer runs in. A generic unary call with
ten lines of protobuf wire encoding works with any grpcio, imports no protobuf at all, and lets
``import ligerd`` stay cheap. The ligerd.v1 services (sessions, kernels, ...) will use stubs
generated from proto/ at build time; this one must work before anything else does.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Tuple

from ligerd._errors import DaemonUnavailableError

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"

# grpc.health.v1.HealthCheckResponse.ServingStatus
UNKNOWN = 0
SERVING = 1
NOT_SERVING = 2
SERVICE_UNKNOWN = 3
STATUS_NAMES = {UNKNOWN: "UNKNOWN", SERVING: "SERVING", NOT_SERVING: "NOT_SERVING",
                SERVICE_UNKNOWN: "SERVICE_UNKNOWN"}


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # protobuf encodes negative int32/enum as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def encode_request(service: str = "") -> bytes:
    """HealthCheckRequest{service}. The empty service (the server as a whole) encodes to no bytes."""
    if not service:
        return b""
    data = service.encode("utf-8")
    return b"\x0a" + _encode_varint(len(data)) + data  # field 1, wire type 2 (length-delimited)


def decode_request(buf: bytes) -> str:
    """Inverse of encode_request (used by the test fake daemon)."""
    service = ""
    for field, wire, value in _fields(buf):
        if field == 1 and wire == 2:
            service = value.decode("utf-8")
    return service


def encode_response(status: int) -> bytes:
    """HealthCheckResponse{status}. Status 0 (UNKNOWN) is the proto3 default and encodes to nothing."""
    if status == 0:
        return b""
    return b"\x08" + _encode_varint(status)  # field 1, wire type 0 (varint)


def decode_response(buf: bytes) -> int:
    """The ServingStatus in a HealthCheckResponse; unknown fields are skipped as protobuf requires."""
    status = UNKNOWN
    for field, wire, value in _fields(buf):
        if field == 1 and wire == 0:
            status = value if value < (1 << 63) else value - (1 << 64)
    return status


def _fields(buf: bytes):
    pos = 0
    buf = bytes(buf)
    while pos < len(buf):
        key, pos = _decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _decode_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _decode_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


# A fresh channel per attempt with short reconnect backoff: a channel that once failed to connect
# waits out gRPC's default backoff (1 s and growing) before trying again, which would blow the 2 s
# budget for noticing a daemon that is starting (or dead).
_CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)


def check(socket_path: str, timeout: float = 0.5, service: str = "") -> int:
    """One health check over the Unix socket; returns the ServingStatus.

    Raises DaemonUnavailableError (never hangs: the call carries a ``timeout`` second deadline) when
    the socket does not exist, nothing answers, or grpcio is not installed."""
    socket_path = str(socket_path)
    if not os.path.exists(socket_path):
        raise DaemonUnavailableError(f"no ligerd socket at {socket_path}")
    try:
        import grpc
    except ImportError as e:
        raise DaemonUnavailableError(
            "cannot talk to ligerd: the Python package grpcio is not installed") from e
    channel = grpc.insecure_channel("unix://" + os.path.abspath(socket_path), options=_CHANNEL_OPTIONS)
    try:
        call = channel.unary_unary(HEALTH_CHECK_METHOD, request_serializer=encode_request,
                                   response_deserializer=decode_response)
        return call(service, timeout=max(0.01, float(timeout)))
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        detail = e.details() if hasattr(e, "details") else str(e)
        name = code.name if code is not None else "error"
        raise DaemonUnavailableError(
            f"ligerd at {socket_path} did not answer a health check ({name}: {detail})") from None
    finally:
        channel.close()


INFO_METHOD = "/ligerd.v1.Info/GetInfo"


def decode_info(buf: bytes) -> dict:
    """The fields of a GetInfoResponse (proto/ligerd/v1/info.proto) a client needs to share the
    daemon's caches: socket_path (8), cache_dir (9), pid (11). Other fields are skipped."""
    out = {"socket_path": "", "cache_dir": "", "pid": 0}
    for field, wire, value in _fields(buf):
        if field == 8 and wire == 2:
            out["socket_path"] = value.decode("utf-8", errors="replace")
        elif field == 9 and wire == 2:
            out["cache_dir"] = value.decode("utf-8", errors="replace")
        elif field == 11 and wire == 0:
            out["pid"] = value
    return out


def info(socket_path: str, timeout: float = 0.5) -> dict:
    """Info.GetInfo without the op catalogue (decode_info's fields); DaemonUnavailableError when
    nothing answers within ``timeout``."""
    socket_path = str(socket_path)
    try:
        import grpc
    except ImportError as e:
        raise DaemonUnavailableError(
            "cannot talk to ligerd: the Python package grpcio is not installed") from e
    channel = grpc.insecure_channel("unix://" + os.path.abspath(socket_path), options=_CHANNEL_OPTIONS)
    try:
        call = channel.unary_unary(INFO_METHOD, request_serializer=lambda _: b"\x10\x01",  # omit_catalogue
                                   response_deserializer=decode_info)
        return call(None, timeout=max(0.01, float(timeout)))
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        detail = e.details() if hasattr(e, "details") else str(e)
        raise DaemonUnavailableError(
            f"ligerd at {socket_path} did not answer Info ({code.name if code else 'error'}: {detail})") from None
    finally:
        channel.close()


def wait_serving(socket_path: str, deadline: float, poll: float = 0.05,
                 alive=None) -> Optional[int]:
    """Poll until the daemon answers SERVING or ``time.monotonic()`` passes ``deadline``.

    ``alive`` (optional callable) is checked between attempts so a daemon process that exited stops
    the wait at once. Returns SERVING, or the last status seen (None if nothing ever answered)."""
    last: Optional[int] = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last
        if alive is not None and not alive():
            return last
        try:
            last = check(socket_path, timeout=min(0.25, remaining))
            if last == SERVING:
                return last
        except DaemonUnavailableError:
            pass
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
