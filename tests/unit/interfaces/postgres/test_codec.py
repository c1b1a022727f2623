"""Startup-phase messages, fed as bytes."""

from __future__ import annotations

import struct

import pytest

from heliosdb.interfaces.postgres import codec
from heliosdb.interfaces.postgres.codec import ProtocolViolation


def _startup(pairs: bytes, version: int = codec.PROTOCOL_3_0) -> bytes:
    return struct.pack("!i", version) + pairs


def test_parse_startup_parameters_and_protocol_options() -> None:
    body = _startup(b"user\0u\0database\0d\0_pq_.x\0y\0options\0-c a=b\0\0", 0x0003270F)
    startup = codec.parse_startup(body)
    assert (startup.major, startup.minor) == (3, 9999)
    assert startup.parameters == {"user": "u", "database": "d", "options": "-c a=b"}
    assert startup.protocol_options == ["_pq_.x"]


def test_parse_startup_empty_value_and_no_parameters() -> None:
    assert codec.parse_startup(_startup(b"application_name\0\0\0")).parameters == {
        "application_name": ""
    }
    assert codec.parse_startup(_startup(b"\0")).parameters == {}


@pytest.mark.parametrize(
    "pairs", [b"user\0u\0", b"user\0u\0db\0", b"user\0u", b"\0u\0\0", b"user\0\xff\0\0"]
)
def test_parse_startup_rejects_bad_layout(pairs: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        codec.parse_startup(_startup(pairs))


def test_parse_cancel_keys() -> None:
    body = struct.pack("!ii", codec.CANCEL_REQUEST, 42)
    assert codec.parse_cancel(body + b"abcd") == codec.CancelKey(42, b"abcd")
    assert codec.parse_cancel(body + b"k" * 32).secret == b"k" * 32
    for bad in (body, body + b"k" * 257):
        with pytest.raises(ProtocolViolation):
            codec.parse_cancel(bad)


def test_encode_negotiate_version() -> None:
    assert codec.encode_negotiate_version(2, ["_pq_.a"]) == (
        b"v" + struct.pack("!iii", 4 + 8 + 7, 196610, 1) + b"_pq_.a\0"
    )


def test_encode_error_fields() -> None:
    message = codec.encode_error("28P01", "nope", hint="try again")
    assert message[:1] == b"E"
    assert struct.unpack_from("!i", message, 1)[0] == len(message) - 1
    assert message[5:] == b"SFATAL\0VFATAL\0C28P01\0Mnope\0Htry again\0\0"


def test_parse_sasl_initial_and_password() -> None:
    body = b"SCRAM-SHA-256\0" + struct.pack("!i", 3) + b"abc"
    assert codec.parse_sasl_initial(body) == ("SCRAM-SHA-256", b"abc")
    assert codec.parse_sasl_initial(b"M\0" + struct.pack("!i", -1)) == ("M", b"")
    for bad in (b"no-nul", b"M\0\0\0", b"M\0" + struct.pack("!i", 5) + b"abc"):
        with pytest.raises(ProtocolViolation):
            codec.parse_sasl_initial(bad)
    assert codec.parse_password(b"secret\0") == "secret"
    for bad in (b"secret", b"a\0b\0"):
        with pytest.raises(ProtocolViolation):
            codec.parse_password(bad)
