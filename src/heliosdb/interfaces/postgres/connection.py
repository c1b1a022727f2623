"""One client connection through the startup phase, then handed to the relay.

    first packet ── SSLRequest ──> 'S' + TLS, or 'N'      (then read the next packet)
                 ── GSSENCRequest ──> 'N'                 (then read the next packet)
                 ── CancelRequest ──> cancel the engine backend, close, no reply
                 ── StartupMessage ──> [NegotiateProtocolVersion] -> limits -> password
                    exchange -> engine login as the principal's role -> R/0, S..., K, Z
                    -> relay (relay.py)

Every failure before the relay is one FATAL ErrorResponse, then close. The whole
startup phase runs under ``postgres.auth_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from typing import TYPE_CHECKING, cast

from heliosdb.engine.relay import EngineLoginError, open_session
from heliosdb.interfaces.postgres import errors
from heliosdb.interfaces.postgres.auth import (
    AuthFailed,
    Channel,
    Md5Unavailable,
    authenticate,
    authenticate_certificate,
)
from heliosdb.interfaces.postgres.codec import (
    AUTH_OK,
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    NEWEST_MINOR,
    SSL_REQUEST,
    CancelKey,
    ProtocolViolation,
    Startup,
    encode_auth,
    encode_backend_key,
    encode_error,
    encode_negotiate_version,
    encode_parameter_status,
    encode_ready,
    parse_cancel,
    parse_first_packet,
    parse_startup,
)
from heliosdb.interfaces.postgres.pooling import TxnClient
from heliosdb.interfaces.postgres.relay import Session
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal

log = logging.getLogger("heliosdb.interfaces.postgres")

if TYPE_CHECKING:  # server.py imports this module
    from heliosdb.interfaces.postgres.server import Gateway


class Refused(Exception):
    """End the connection after sending ``reply`` (an ErrorResponse) to the client."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply


async def _read_packet(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    if not 8 <= length <= max_bytes:
        raise ProtocolViolation("invalid length of startup packet")
    return await reader.readexactly(length - 4)


def _buffered(reader: asyncio.StreamReader) -> bytes:
    buffer: bytearray = getattr(reader, "_buffer", bytearray())
    data = bytes(buffer)
    buffer.clear()
    return data


class Connection:
    def __init__(
        self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "local"
        self.tls = False  # an SSLRequest was answered (a second one is a protocol error)
        self.tls_active = False
        self.minor = 0
        self.relayed = False
        self.admitted: Principal | None = None  # counted against the limits: leave() once

    async def run(self) -> None:
        settings = self.gateway.settings
        try:
            async with asyncio.timeout(settings.auth_timeout):
                startup = await self._first_packets()
                if startup is None:
                    return
                principal = await self._login(startup)
                session = await self._open(startup, principal)
        except Refused as exc:
            await self._reply_and_close(exc.reply)
            return
        except ProtocolViolation as exc:
            await self._reply_and_close(encode_error(errors.PROTOCOL_VIOLATION, str(exc)))
            return
        except TimeoutError:
            await self._reply_and_close(
                encode_error(errors.PROTOCOL_VIOLATION, "canceling authentication due to timeout")
            )
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        await session.done

    async def _reply_and_close(self, reply: bytes) -> None:
        try:
            self.writer.write(reply)
            await asyncio.wait_for(self.writer.drain(), 5)
        except (ConnectionError, TimeoutError):
            pass

    async def _first_packets(self) -> Startup | None:
        max_bytes = self.gateway.settings.max_startup_packet_bytes
        gss_answered = False
        while True:
            body = await _read_packet(self.reader, max_bytes)
            code = parse_first_packet(body)
            if code == SSL_REQUEST and len(body) == 4 and not self.tls:
                if _buffered(self.reader):
                    # Sent before the TLS answer, so in clear and possibly injected.
                    log.warning("closing %s: unencrypted data after SSL request", self.address)
                    return None
                await self._answer_ssl()
            elif code == GSSENC_REQUEST and len(body) == 4 and not gss_answered:
                gss_answered = True
                self.writer.write(b"N")
            elif code == CANCEL_REQUEST:
                await self.gateway.cancel(parse_cancel(body), self.address)
                return None
            elif code in (SSL_REQUEST, GSSENC_REQUEST):
                raise ProtocolViolation("unexpected encryption request")
            else:
                return parse_startup(body)

    async def _answer_ssl(self) -> None:
        context = self.gateway.tls_context
        if context is None:
            self.writer.write(b"N")
            self.tls = True  # a second SSLRequest is a protocol error either way
            return
        self.writer.write(b"S")
        await self.writer.drain()
        await self.writer.start_tls(context)
        self.tls = True
        self.tls_active = True

    async def _login(self, startup: Startup) -> Principal:
        gateway, settings = self.gateway, self.gateway.settings
        if startup.major != 3:
            raise Refused(
                encode_error(
                    errors.FEATURE_NOT_SUPPORTED,
                    f"unsupported frontend protocol {startup.major}.{startup.minor}: "
                    f"server supports 3.0 to 3.{NEWEST_MINOR}",
                )
            )
        # 3.1 is reserved and was never a protocol: the newest we have below it is 3.0.
        self.minor = min(startup.minor, NEWEST_MINOR) if startup.minor != 1 else 0
        if self.minor != startup.minor or startup.protocol_options:
            self.writer.write(encode_negotiate_version(self.minor, startup.protocol_options))
        user = startup.user
        if not user:
            raise Refused(
                encode_error(
                    errors.INVALID_AUTHORIZATION,
                    "no PostgreSQL user name specified in startup packet",
                )
            )
        database = startup.parameters.get("database") or gateway.database
        if database != gateway.database:
            raise Refused(
                encode_error(
                    errors.UNKNOWN_DATABASE,
                    f'database "{database}" does not exist',
                    hint=f'HeliosDB serves the database "{gateway.database}".',
                )
            )
        if "replication" in startup.parameters:
            raise Refused(
                encode_error(
                    errors.FEATURE_NOT_SUPPORTED, "replication connections are not supported"
                )
            )
        if gateway.client_count() > settings.max_connections:
            raise Refused(
                encode_error(errors.TOO_MANY_CONNECTIONS, "sorry, too many clients already")
            )
        if gateway.limiter.blocked(self.address):
            raise Refused(
                encode_error(
                    errors.INVALID_AUTHORIZATION,
                    "too many failed authentication attempts; try again later",
                )
            )
        certified = self._certificate_name()
        channel = Channel(self.reader, self.writer, settings.max_startup_packet_bytes)
        try:
            if certified is not None:
                principal = await authenticate_certificate(certified, user, gateway.services)
            else:
                binding = gateway.channel_binding if self.tls_active else None
                principal = await authenticate(
                    channel, user, settings.auth_method, gateway.services, binding
                )
        except Md5Unavailable:
            AUTH_FAILURES.labels("postgres").inc()
            gateway.limiter.record(self.address)
            raise Refused(errors.md5_unavailable(user)) from None
        except AuthFailed:
            AUTH_FAILURES.labels("postgres").inc()
            gateway.limiter.record(self.address)
            if certified is not None:
                raise Refused(
                    encode_error(
                        errors.INVALID_AUTHORIZATION,
                        f'certificate authentication failed for user "{user}"',
                    )
                ) from None
            raise Refused(errors.password_failed(user)) from None
        refusal = await gateway.admit(principal)
        if refusal is not None:
            raise Refused(refusal)
        self.admitted = principal
        return principal

    def _certificate_name(self) -> str | None:
        """The subject CN of a verified TLS client certificate, if the client sent one."""
        if not self.tls_active:
            return None
        certificate = self.writer.get_extra_info("peercert")
        if not certificate:
            return None
        for rdn in certificate.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None

    async def _open(self, startup: Startup, principal: Principal) -> Session | TxnClient:
        gateway = self.gateway
        secret = secrets.token_bytes(32 if self.minor >= 2 else 4)
        transport = cast(asyncio.Transport, self.writer.transport)
        try:
            if gateway.pool_mode == "transaction":
                pool = gateway.pool_for(principal.access, startup.parameters)
                if not pool.status:  # the first client of this pool: learn the parameters
                    pool.release(await pool.acquire(gateway.settings.pool_timeout))
                key = CancelKey(secrets.randbits(31), secret)
                self._send_ready(startup, pool.status, key)
                client = TxnClient(
                    principal, key, pool, transport, gateway.settings.pool_timeout,
                    gateway.session_ended,
                )  # fmt: skip
                gateway.session_started(client)
                self.relayed = True
                # The idle sweep needs the per-chunk counts; without it, the kernel's.
                client.start(_buffered(self.reader), gateway.settings.idle_timeout <= 0)
                return client
            engine = await open_session(gateway.engine, principal.access, startup.parameters)
        except EngineLoginError as exc:
            if exc.error:
                raise Refused(exc.error) from None
            log.warning("engine login failed: %s", exc)
            raise Refused(
                encode_error(errors.CANNOT_CONNECT_NOW, "the engine is not available")
            ) from None
        except TimeoutError:
            raise Refused(
                encode_error(errors.TOO_MANY_CONNECTIONS, "no engine connection became free")
            ) from None
        # Session mode announces the engine backend's real pid, with our own secret.
        key = CancelKey(engine.pid, secret)
        self._send_ready(startup, engine.parameters, key)
        session = Session(gateway.engine, principal, key, engine, transport, gateway.session_ended)
        gateway.session_started(session)
        self.relayed = True
        # The idle sweep needs the counted relay's per-chunk notes; without it, splice.
        session.start(_buffered(self.reader), splice=gateway.settings.idle_timeout <= 0)
        return session

    def _send_ready(self, startup: Startup, status: dict[str, str], key: CancelKey) -> None:
        out = bytearray(encode_auth(AUTH_OK))
        for name, value in status.items():
            if name == "session_authorization":
                value = startup.user or value
            out += encode_parameter_status(name, value)
        out += encode_backend_key(key) + encode_ready()
        self.writer.write(bytes(out))
