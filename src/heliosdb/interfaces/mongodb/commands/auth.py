"""SCRAM-SHA-256 through saslStart/saslContinue (and speculatively inside hello).

The user is a HeliosDB user, or ``apikey`` with an API key as the password. Both
kinds of verifier are SCRAM-SHA-256 over SASLprep(password), exactly what MongoDB
drivers compute, so one ServerExchange (security/scram.py) serves every protocol.
SCRAM-SHA-1 uses the separate verifiers over MongoDB's hex(md5("user:mongo:pw")).
A proof for ``apikey`` is checked against every active key's verifier (they share one
salt). Unknown users go through the same steps with a throwaway salt and fail at the
end with the same message as a wrong password.
"""

from __future__ import annotations

import secrets
from typing import Any

from bson.binary import Binary

from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.security.principals import Principal
from heliosdb.security.scram import SHA1_MECHANISM, ScramError, ServerExchange, Verifier
from heliosdb.services.keys import (
    API_KEY_SCRAM_ITERATIONS,
    API_KEY_SCRAM_SALT,
    API_KEY_SCRAM_SHA1_ITERATIONS,
)

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
API_KEY_USER = "apikey"
CONVERSATION_ID = 1


def auth_failed() -> CommandError:
    return CommandError(18, "Authentication failed.")


def _user_of(client_first: bytes) -> str:
    try:
        text = client_first.decode()
        bare = text.split(",", 2)[2]
        for part in bare.split(","):
            if part.startswith("n="):
                return part[2:].replace("=2C", ",").replace("=3D", "=")
    except (UnicodeDecodeError, IndexError):
        pass
    raise auth_failed()


def _payload(value: Any) -> bytes:
    if isinstance(value, (bytes, Binary)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise CommandError(14, "payload must be BinData")


async def _start(session: Session, mechanism: Any, payload: Any, db: str) -> dict[str, Any]:
    if mechanism not in MECHANISMS:
        raise CommandError(
            334,
            f"Received authentication for mechanism {mechanism} which is not enabled",
        )
    client_first = _payload(payload)
    user = _user_of(client_first)
    sha1 = mechanism == SHA1_MECHANISM
    if user == API_KEY_USER:
        iterations = API_KEY_SCRAM_SHA1_ITERATIONS if sha1 else API_KEY_SCRAM_ITERATIONS
        exchange = ServerExchange(API_KEY_SCRAM_SALT, iterations, mechanism=mechanism)
        session.pending_verifier = None
    else:
        users = session.services.users
        entry = await (users.sha1_verifier_of(user) if sha1 else users.verifier(user))
        if entry is None:
            exchange = ServerExchange(
                secrets.token_bytes(16), API_KEY_SCRAM_SHA1_ITERATIONS, mechanism=mechanism
            )
            session.pending_verifier = None
            session.pending_principal = None
        else:
            exchange = ServerExchange(entry[0].salt, entry[0].iterations, mechanism=mechanism)
            session.pending_verifier = entry[0]
            session.pending_principal = entry[1]
    session.scram_mechanism = mechanism
    try:
        server_first = exchange.first(client_first)
    except ScramError:
        raise auth_failed() from None
    session.scram = exchange
    session.scram_user = user
    session.auth_db = db
    session.pending_final = None
    return {"conversationId": CONVERSATION_ID, "done": False, "payload": Binary(server_first)}


async def _finish(session: Session, client_final: bytes) -> bytes:
    exchange = session.scram
    if exchange is None:
        raise CommandError(17, "No SASL session state found")
    session.scram = None
    user = session.scram_user
    principal: Principal | None = None
    try:
        if user == API_KEY_USER:
            for refresh in (False, True):
                candidates = await session.services.keys.scram_candidates(
                    refresh=refresh, mechanism=session.scram_mechanism
                )
                try:
                    index, server_final = exchange.final(client_final, [v for v, _ in candidates])
                except ScramError:
                    continue
                principal = candidates[index][1]
                break
            else:
                raise ScramError("no key matches")
        else:
            verifier: Verifier | None = session.pending_verifier
            if verifier is None:
                raise ScramError("no such user")
            _, server_final = exchange.final(client_final, [verifier])
            principal = session.pending_principal
    except ScramError:
        raise auth_failed() from None
    if principal is None:
        raise auth_failed()
    session.principal = principal
    session.user = user
    return server_final


@command("saslStart", auth=False)
async def sasl_start(session: Session, request: Request) -> dict[str, Any]:
    """First SCRAM step: client-first in, server-first out."""
    return await _start(
        session, request.body.get("mechanism"), request.body.get("payload"), request.db
    )


@command("saslContinue", auth=False)
async def sasl_continue(session: Session, request: Request) -> dict[str, Any]:
    """Second SCRAM step (proof -> signature), then the optional empty third step."""
    payload = _payload(request.body.get("payload", b""))
    if session.scram is None and session.pending_final is not None and session.principal:
        session.pending_final = None
        return {"conversationId": CONVERSATION_ID, "done": True, "payload": Binary(b"")}
    server_final = await _finish(session, payload)
    options = request.body.get("options") or {}
    skip_empty = bool(options.get("skipEmptyExchange")) if isinstance(options, dict) else False
    if not skip_empty:
        session.pending_final = server_final
    return {"conversationId": CONVERSATION_ID, "done": skip_empty, "payload": Binary(server_final)}


async def speculative_start(session: Session, spec: dict[str, Any]) -> dict[str, Any] | None:
    if spec.get("saslStart") is None:
        return None
    try:
        return await _start(
            session, spec.get("mechanism"), spec.get("payload"), str(spec.get("db", "admin"))
        )
    except CommandError:
        return None


@command("logout", auth=False)
async def logout(session: Session, request: Request) -> dict[str, Any]:
    """Forget this connection's login."""
    session.principal = None
    session.user = ""
    return {}


@command("authenticate", auth=False)
async def authenticate(session: Session, request: Request) -> dict[str, Any]:
    """MONGODB-X509 and MONGODB-CR are not offered."""
    raise CommandError(
        334,
        f"Received authentication for mechanism "
        f"{request.body.get('mechanism')} which is not enabled",
    )
