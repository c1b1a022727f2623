"""Who is connecting: the password exchanges the gateway runs as the server.

The startup ``user`` picks what the password is:

- a HeliosDB user's name (``heliosdb users create``): that user's password;
- ``apikey`` or any other name: an API key (``hdb_sk_`` read-write, ``hdb_pk_`` read-only).

SCRAM-SHA-256 (default) checks the proof against the user's verifier, or against every
active key's verifier (keys share one salt, so the salt can be announced before the
key is known). Cleartext (``auth_method: password``) receives the password itself.
MD5 (``auth_method: md5``) needs md5(password ‖ user name), which HeliosDB holds only
for users created with ``--md5``: API keys are stored as a SHA-256 hash and SCRAM
verifiers, from which no MD5 answer can be checked, so MD5 is refused for them (and
for SCRAM-only users) before any password step, with one message for all of them.
Failures never say which part was wrong; the caller sends FATAL 28P01.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import struct
import time
from collections import deque

from heliosdb.errors import HeliosError
from heliosdb.interfaces.postgres.codec import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    ProtocolViolation,
    encode_auth,
    encode_sasl_mechanisms,
    parse_password,
    parse_sasl_initial,
)
from heliosdb.security.md5 import md5_matches
from heliosdb.security.principals import Principal
from heliosdb.security.scram import (
    MECHANISM,
    MECHANISM_PLUS,
    ScramError,
    ServerExchange,
    Verifier,
    make_verifier,
)
from heliosdb.services.container import Services
from heliosdb.services.keys import API_KEY_SCRAM_ITERATIONS, API_KEY_SCRAM_SALT

API_KEY_USER = "apikey"
FAILURE_WINDOW_SECONDS = 60.0


class AuthFailed(Exception):
    """Wrong or missing credentials (reported as FATAL 28P01, nothing more)."""


class Md5Unavailable(Exception):
    """MD5 was configured, but this login has no MD5 verifier (an API key, or a user
    created without ``--md5``): reported as FATAL 28000 with the reason."""


class Channel:
    """The client socket during login: typed messages in, raw bytes out."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_bytes = max_bytes

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_password_message(self) -> bytes:
        await self.writer.drain()
        header = await self.reader.readexactly(5)
        kind = header[:1]
        (length,) = struct.unpack_from("!i", header, 1)
        if kind != b"p":
            raise ProtocolViolation(f"expected a password response, got message type {kind!r}")
        if not 4 <= length <= self.max_bytes:
            raise ProtocolViolation("invalid length of password packet")
        return await self.reader.readexactly(length - 4)


class FailureLimiter:
    """Failed logins per source address in the last minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        now = time.monotonic()
        failures = self._failures.setdefault(address, deque())
        while failures and now - failures[0] > FAILURE_WINDOW_SECONDS:
            failures.popleft()
        return failures

    def blocked(self, address: str) -> bool:
        if self.per_minute <= 0:
            return False
        blocked = len(self._recent(address)) >= self.per_minute
        if not self._failures.get(address):
            self._failures.pop(address, None)
        return blocked

    def record(self, address: str) -> None:
        if self.per_minute <= 0:
            return
        if len(self._failures) > 100_000:
            self._failures.clear()
        self._recent(address).append(time.monotonic())


async def authenticate(
    channel: Channel, user: str, method: str, services: Services, binding: bytes | None = None
) -> Principal:
    """Run ``method``'s exchange for ``user``; the principal, or AuthFailed.

    ``binding``: the server certificate's tls-server-end-point data on a TLS connection;
    SCRAM-SHA-256-PLUS is offered (first) only then.
    """
    if method == "password":
        return await _cleartext(channel, user, services)
    if method == "md5":
        return await _md5(channel, user, services)
    return await _scram(channel, user, services, binding)


async def authenticate_certificate(name: str, user: str, services: Services) -> Principal:
    """A verified client certificate whose subject CN is a HeliosDB user logs in as that
    user with no password, but only under that user name (PostgreSQL's ``cert`` rule)."""
    if name != user:
        raise AuthFailed
    entry = await _user_entry(user, services)
    if entry is None:
        raise AuthFailed
    return entry[1]


async def _user_entry(user: str, services: Services) -> tuple[Verifier, Principal] | None:
    if user == API_KEY_USER:
        return None
    return await services.users.verifier(user)


async def _scram(
    channel: Channel, user: str, services: Services, binding: bytes | None
) -> Principal:
    offered = (MECHANISM_PLUS, MECHANISM) if binding is not None else (MECHANISM,)
    channel.send(encode_sasl_mechanisms(*offered))
    mechanism, client_first = parse_sasl_initial(await channel.read_password_message())
    if mechanism not in offered:
        raise ProtocolViolation("client selected an invalid SASL authentication mechanism")
    entry = await _user_entry(user, services)
    salt, iterations = (
        (entry[0].salt, entry[0].iterations)
        if entry is not None
        else (API_KEY_SCRAM_SALT, API_KEY_SCRAM_ITERATIONS)
    )
    exchange = ServerExchange(salt, iterations, binding=binding, plus=mechanism == MECHANISM_PLUS)
    try:
        server_first = exchange.first(client_first)
    except ScramError:
        raise AuthFailed from None
    channel.send(encode_auth(AUTH_SASL_CONTINUE, server_first))
    client_final = await channel.read_password_message()
    try:
        if entry is not None:
            _, server_final = exchange.final(client_final, [entry[0]])
            principal = entry[1]
        else:
            principal, server_final = await _match_key(exchange, client_final, services)
    except ScramError:
        raise AuthFailed from None
    channel.send(encode_auth(AUTH_SASL_FINAL, server_final))
    return principal


async def _match_key(
    exchange: ServerExchange, client_final: bytes, services: Services
) -> tuple[Principal, bytes]:
    for refresh in (False, True):
        candidates = await services.keys.scram_candidates(refresh=refresh)
        try:
            index, server_final = exchange.final(client_final, [v for v, _ in candidates])
            return candidates[index][1], server_final
        except ScramError:
            continue
    raise ScramError("no key matches")


async def _md5(channel: Channel, user: str, services: Services) -> Principal:
    entry = None if user == API_KEY_USER else await services.users.md5_entry(user)
    verifier, principal = entry if entry is not None else (None, None)
    if verifier is None or principal is None:
        raise Md5Unavailable
    salt = secrets.token_bytes(4)
    channel.send(encode_auth(AUTH_MD5, salt))
    response = parse_password(await channel.read_password_message())
    if not md5_matches(verifier, salt, response):
        raise AuthFailed
    return principal


async def _cleartext(channel: Channel, user: str, services: Services) -> Principal:
    channel.send(encode_auth(AUTH_CLEARTEXT))
    password = parse_password(await channel.read_password_message())
    entry = await _user_entry(user, services)
    if entry is not None:
        stored, principal = entry
        # PBKDF2 takes milliseconds: keep it off the event loop.
        made = await asyncio.to_thread(
            make_verifier, password, salt=stored.salt, iterations=stored.iterations
        )
        if not hmac.compare_digest(made.stored_key, stored.stored_key):
            raise AuthFailed
        return principal
    try:
        return await services.keys.authenticate(password)
    except HeliosError:
        raise AuthFailed from None
