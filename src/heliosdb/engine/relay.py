"""Raw protocol-3 connections to the engine, for gateways that relay a client's session.

asyncpg decodes everything it receives; a gateway must not. Here we open a plain
socket to the engine, log in as an engine role (SCRAM, MD5, cleartext or trust, as the
engine asks), collect what the engine says during startup (ParameterStatus,
BackendKeyData) and hand back the open streams, ready for ReadyForQuery traffic.
``cancel`` sends a CancelRequest for one engine backend.

Only engine/ talks to PostgreSQL; the wire gateway (interfaces/postgres) relays bytes
between a client and the streams opened here.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from heliosdb.engine.pools import Engine
from heliosdb.engine.roles import Access
from heliosdb.security.scram import MECHANISM, ClientExchange, ScramError

PROTOCOL_3_0 = 196608
CANCEL_REQUEST_CODE = 80877102
CONNECT_TIMEOUT_SECONDS = 10.0
STREAM_LIMIT = 1 << 20
# Startup parameters that belong to the gateway, never passed to the engine.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})


class EngineLoginError(Exception):
    """The engine refused the session. ``error`` is its raw ErrorResponse ('E' message),
    which a gateway relays as is (e.g. an invalid startup parameter), or empty."""

    def __init__(self, message: str, error: bytes = b"") -> None:
        super().__init__(message)
        self.error = error


@dataclass(slots=True)
class EngineSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    secret: bytes
    # The engine's ParameterStatus values, in the order it sent them.
    parameters: dict[str, str] = field(default_factory=dict)
    # Raw 'S' and 'N' messages of the startup phase, to relay verbatim.
    startup_messages: bytes = b""

    def take_buffered(self) -> bytes:
        """Bytes the reader holds beyond what startup consumed (relay them first)."""
        buffer: bytearray = getattr(self.reader, "_buffer", bytearray())
        data = bytes(buffer)
        buffer.clear()
        return data

    def close(self) -> None:
        self.writer.transport.abort()


def message(kind: bytes, body: bytes) -> bytes:
    """A protocol-3 message: type byte, length, body."""
    return kind + struct.pack("!i", len(body) + 4) + body


def _startup_packet(user: str, database: str, parameters: Mapping[str, str]) -> bytes:
    body = struct.pack("!i", PROTOCOL_3_0)
    pairs = {"user": user, "database": database}
    for name, value in parameters.items():
        if name not in _NOT_FORWARDED and not name.startswith("_pq_."):
            pairs[name] = value
    for name, value in pairs.items():
        body += name.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if host.startswith("/"):
        return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}", limit=STREAM_LIMIT)
    reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack_from("!i", header, 1)
    if length < 4:
        raise EngineLoginError("the engine sent a malformed message")
    return header[:1], await reader.readexactly(length - 4)


async def open_session(
    engine: Engine, access: Access, parameters: Mapping[str, str]
) -> EngineSession:
    """A logged-in raw connection as ``access``'s role, after its first ReadyForQuery."""
    login = engine.role_login(access)
    try:
        reader, writer = await asyncio.wait_for(
            _open(login.host, login.port), CONNECT_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError) as exc:
        raise EngineLoginError(f"cannot reach the engine: {exc}") from None
    try:
        return await asyncio.wait_for(
            _login(reader, writer, login.user, login.password, login.database, parameters),
            CONNECT_TIMEOUT_SECONDS,
        )
    except BaseException:
        writer.transport.abort()
        raise


async def _login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str,
    password: str,
    database: str,
    parameters: Mapping[str, str],
) -> EngineSession:
    writer.write(_startup_packet(user, database, parameters))
    scram: ClientExchange | None = None
    session = EngineSession(reader, writer, 0, b"")
    relayed = bytearray()
    try:
        while True:
            kind, body = await _read_message(reader)
            if kind == b"R":
                (code,) = struct.unpack_from("!i", body)
                if code == 0:
                    continue
                if code == 10:  # SASL: mechanisms
                    if MECHANISM.encode() not in body[4:].split(b"\0"):
                        raise EngineLoginError("the engine offers no SCRAM-SHA-256")
                    scram = ClientExchange(password)
                    first = scram.first()
                    writer.write(
                        message(
                            b"p",
                            MECHANISM.encode() + b"\0" + struct.pack("!i", len(first)) + first,
                        )
                    )
                elif code == 11 and scram is not None:
                    writer.write(message(b"p", scram.final(body[4:])))
                elif code == 12 and scram is not None:
                    scram.verify(body[4:])
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 3:
                    writer.write(message(b"p", password.encode() + b"\0"))
                else:
                    raise EngineLoginError(f"unsupported engine authentication request {code}")
            elif kind == b"S":
                name, value, _ = body.split(b"\0", 2)
                session.parameters[name.decode()] = value.decode()
                relayed += message(kind, body)
            elif kind == b"K":
                session.pid = struct.unpack_from("!i", body)[0]
                session.secret = bytes(body[4:])
            elif kind == b"N":
                relayed += message(kind, body)
            elif kind == b"E":
                raise EngineLoginError("the engine refused the session", message(kind, body))
            elif kind == b"Z":
                session.startup_messages = bytes(relayed)
                return session
            elif kind == b"v":
                continue  # NegotiateProtocolVersion: we ask for 3.0, nothing to adopt
            else:
                raise EngineLoginError(f"unexpected engine message {kind!r} during startup")
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise EngineLoginError(f"the engine closed the connection during login: {exc}") from None
    except (ScramError, UnicodeDecodeError, ValueError, struct.error) as exc:
        raise EngineLoginError(f"engine login failed: {exc}") from None


async def cancel(engine: Engine, access: Access, pid: int, secret: bytes) -> None:
    """Ask the engine to cancel what backend ``pid`` runs now (best effort, no answer)."""
    login = engine.role_login(access)
    try:
        reader, writer = await asyncio.wait_for(
            _open(login.host, login.port), CONNECT_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError):
        return
    try:
        body = struct.pack("!ii", CANCEL_REQUEST_CODE, pid) + secret
        writer.write(struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
        # The engine closes the socket once it has handled the request.
        await asyncio.wait_for(reader.read(1), CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()
