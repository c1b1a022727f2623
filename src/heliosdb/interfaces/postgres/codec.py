"""PostgreSQL protocol 3 messages the gateway reads or writes itself (sans-IO).

Only the startup phase is decoded here: the first packet (SSLRequest, GSSENCRequest,
CancelRequest, StartupMessage), the client's password messages, and what the gateway
sends before the session is relayed. After startup the gateway relays bytes untouched.
All integers are big-endian, as on the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 196608
PROTOCOL_3_2 = 196610
NEWEST_MINOR = 2
MAX_CANCEL_KEY = 256

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

TERMINATE = b"X\x00\x00\x00\x04"


class ProtocolViolation(Exception):
    """The client sent something the protocol does not allow: FATAL 08P01 and close."""


@dataclass(slots=True)
class Startup:
    major: int
    minor: int
    parameters: dict[str, str] = field(default_factory=dict)
    # _pq_.* protocol options the client asked for (we implement none).
    protocol_options: list[str] = field(default_factory=list)

    @property
    def user(self) -> str | None:
        return self.parameters.get("user")


@dataclass(frozen=True, slots=True)
class CancelKey:
    pid: int
    secret: bytes


def parse_first_packet(body: bytes) -> int:
    """The request code of a startup-phase packet (its body after the length)."""
    if len(body) < 4:
        raise ProtocolViolation("invalid length of startup packet")
    code: int = struct.unpack_from("!i", body)[0]
    return code


def parse_cancel(body: bytes) -> CancelKey:
    # code (4) + pid (4) + key: 4 bytes under 3.0, 4..256 under 3.2.
    if not 12 <= len(body) <= 8 + MAX_CANCEL_KEY:
        raise ProtocolViolation("invalid length of cancel request")
    pid = struct.unpack_from("!i", body, 4)[0]
    return CancelKey(pid, bytes(body[8:]))


def parse_startup(body: bytes) -> Startup:
    version = parse_first_packet(body)
    startup = Startup(version >> 16, version & 0xFFFF)
    if startup.major != 3:
        return startup
    if not body.endswith(b"\0"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    pairs = body[4:-1]
    if pairs and not pairs.endswith(b"\0"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    fields = pairs[:-1].split(b"\0") if pairs else []
    if len(fields) % 2:
        raise ProtocolViolation("invalid startup packet layout: expected name=value pairs")
    try:
        for raw_name, raw_value in zip(fields[::2], fields[1::2], strict=True):
            name, value = raw_name.decode(), raw_value.decode()
            if not name:
                raise ProtocolViolation("invalid startup packet layout: empty parameter name")
            if name.startswith("_pq_."):
                startup.protocol_options.append(name)
            else:
                startup.parameters[name] = value
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid byte sequence in startup packet") from None
    return startup


_INT32 = struct.Struct("!i").pack  # compiled once: struct.pack looks its format up per call


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _INT32(len(body) + 4) + body


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def encode_auth(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!i", code) + data)


def encode_sasl_mechanisms(*names: str) -> bytes:
    return encode_auth(AUTH_SASL, b"".join(cstring(n) for n in names) + b"\0")


def encode_parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstring(name) + cstring(value))


def encode_backend_key(key: CancelKey) -> bytes:
    return message(b"K", struct.pack("!i", key.pid) + key.secret)


def encode_ready(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def encode_negotiate_version(minor: int, rejected: list[str]) -> bytes:
    body = struct.pack("!ii", (3 << 16) | minor, len(rejected))
    return message(b"v", body + b"".join(cstring(n) for n in rejected))


def encode_error(sqlstate: str, text: str, *, severity: str = "FATAL", hint: str = "") -> bytes:
    body = (
        b"S" + cstring(severity) + b"V" + cstring(severity) + b"C" + cstring(sqlstate)
        + b"M" + cstring(text)
    )  # fmt: skip
    if hint:
        body += b"H" + cstring(hint)
    return message(b"E", body + b"\0")


def parse_password(body: bytes) -> str:
    """A PasswordMessage: one C string."""
    if not body.endswith(b"\0") or b"\0" in body[:-1]:
        raise ProtocolViolation("invalid password packet")
    try:
        return body[:-1].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid byte sequence in password packet") from None


def parse_sasl_initial(body: bytes) -> tuple[str, bytes]:
    """SASLInitialResponse: mechanism C string, int32 length (-1: none), data."""
    end = body.find(b"\0")
    if end < 0 or len(body) < end + 5:
        raise ProtocolViolation("invalid SASL initial response")
    mechanism = body[:end].decode(errors="replace")
    (length,) = struct.unpack_from("!i", body, end + 1)
    data = body[end + 5 :]
    if length != len(data) and not (length == -1 and not data):
        raise ProtocolViolation("invalid SASL initial response length")
    return mechanism, bytes(data)
