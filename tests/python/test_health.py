import pytest

from ligerd import _health


def test_request_encoding():
    assert _health.encode_request("") == b""
    assert _health.encode_request("ligerd.v1.Info") == b"\x0a\x0eligerd.v1.Info"
    long = "s" * 300
    enc = _health.encode_request(long)
    assert enc[:3] == b"\x0a\xac\x02"  # 300 as a varint
    assert _health.decode_request(enc) == long


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_response_roundtrip(status):
    assert _health.decode_response(_health.encode_response(status)) == status


def test_response_known_bytes():
    assert _health.encode_response(_health.SERVING) == b"\x08\x01"
    assert _health.decode_response(b"") == _health.UNKNOWN
    assert _health.decode_response(b"\x08\x02") == _health.NOT_SERVING


def test_response_skips_unknown_fields():
    # field 2 varint, field 3 bytes, field 4 fixed64, field 5 fixed32, then status
    buf = b"\x10\x96\x01" + b"\x1a\x03abc" + b"\x21" + b"\0" * 8 + b"\x2d" + b"\0" * 4 + b"\x08\x01"
    assert _health.decode_response(buf) == _health.SERVING


@pytest.mark.parametrize("bad", [b"\x08", b"\x1a\x05ab", b"\x0f", b"\x21\0\0"])
def test_response_rejects_garbage(bad):
    with pytest.raises(ValueError):
        _health.decode_response(bad)


def test_varint_negative_enum():
    # proto3 enums are int32; a negative value is sent as 10 bytes
    enc = b"\x08" + _health._encode_varint(-1)
    assert len(enc) == 11
    assert _health.decode_response(enc) == -1


def test_check_missing_socket_is_fast(tmp_path):
    import time
    from ligerd import DaemonUnavailableError
    t = time.monotonic()
    with pytest.raises(DaemonUnavailableError, match="no ligerd socket"):
        _health.check(str(tmp_path / "none.sock"), timeout=5)
    assert time.monotonic() - t < 0.5
