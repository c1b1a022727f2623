"""One client connection: read a message, run its command, write the reply.

    read header -> read payload -> parse (codec) -> dispatch -> reply (unless moreToCome)

A message we cannot parse closes the connection (the node goes on). Commands run one
at a time per connection, as MongoDB does. ``Session`` is the per-connection state:
who is authenticated, the SCRAM conversation in progress, the compressor agreed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from heliosdb.errors import HeliosError
from heliosdb.interfaces.mongodb import codec, errors, registry
from heliosdb.interfaces.mongodb.cursors import CursorStore
from heliosdb.interfaces.mongodb.transactions import SessionTable
from heliosdb.security.principals import Principal
from heliosdb.security.scram import ServerExchange, Verifier
from heliosdb.services.container import Services

log = logging.getLogger("heliosdb.interfaces.mongodb")
# Replies smaller than this wait in the transport's buffer without a drain() per reply
# (two coroutine frames each time); a client that stops reading still stops the loop.
DRAIN_ABOVE_BYTES = 64 * 1024
# Commands a client may send before it authenticates.
_OPEN_ON_QUERY = {
    "isMaster",
    "ismaster",
    "hello",
    "buildInfo",
    "buildinfo",
    "saslStart",
    "saslContinue",
    "getnonce",
    "ping",
    "authenticate",
}


@dataclass
class ServerState:
    """What every connection of the listener shares."""

    services: Services
    cursors: CursorStore = field(default_factory=CursorStore)
    sessions: SessionTable = field(default_factory=lambda: SessionTable(60.0, 5, 4))
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    current: int = 0
    total_created: int = 0
    opcounters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("insert", "query", "update", "delete", "getmore", "command"), 0
        )
    )
    max_connections: int = 1000
    # serverStatus network.compression: compressed bytes received and sent, by compressor id
    compressed_in: dict[int, int] = field(default_factory=dict)
    compressed_out: dict[int, int] = field(default_factory=dict)
    request_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


@dataclass
class Session:
    state: ServerState
    connection_id: int
    peer: str
    principal: Principal | None = None
    user: str = ""
    auth_db: str = "admin"
    scram: ServerExchange | None = None
    scram_user: str = ""
    scram_done: bool = False
    pending_final: bytes | None = None
    pending_verifier: Verifier | None = None
    pending_principal: Principal | None = None
    scram_mechanism: str = "SCRAM-SHA-256"
    compressors: list[str] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return self.state.services

    @property
    def owner(self) -> str:
        return self.principal.id if self.principal is not None else ""


@dataclass
class Request:
    name: str
    db: str
    body: dict[str, Any]
    sequences: dict[str, list[bytes]]
    legacy: bool = False


async def serve(
    state: ServerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    peer = writer.get_extra_info("peername")
    transport = writer.transport
    session = Session(state, next(state.ids), f"{peer[0]}:{peer[1]}" if peer else "unknown")
    state.current += 1
    state.total_created += 1
    try:
        while True:
            try:
                head = await reader.readexactly(codec.HEADER.size)
            except asyncio.IncompleteReadError:
                return
            try:
                header = codec.parse_header(head)
                payload = await reader.readexactly(header.length - codec.HEADER.size)
                message = codec.parse_message(header, payload)
            except codec.ProtocolError as exc:
                log.info(
                    "closing mongodb connection %s from %s: %s",
                    session.connection_id,
                    session.peer,
                    exc,
                )
                return
            reply = await handle(session, message)
            if reply is None or message.more_to_come:
                continue
            compressor = message.compressor if message.compressor else None
            data = codec.encode_reply(
                next(state.request_ids), message.request_id, reply, message.op_code, compressor
            )
            if compressor is not None:
                state.compressed_in[compressor] = (
                    state.compressed_in.get(compressor, 0) + header.length
                )
                state.compressed_out[compressor] = state.compressed_out.get(compressor, 0) + len(
                    data
                )
            writer.write(data)
            if transport.get_write_buffer_size() > DRAIN_ABOVE_BYTES:
                await writer.drain()  # only a slow reader makes us wait
    finally:
        state.current -= 1


async def handle(session: Session, message: codec.Message) -> dict[str, Any] | None:
    legacy = message.op_code == codec.OP_QUERY
    body = message.body
    if legacy:
        if not message.namespace.endswith(".$cmd"):
            return {"$err": "OP_QUERY is only supported for commands", "code": 352, "ok": 0.0}
        db = message.namespace[: -len(".$cmd")]
    else:
        db = body.pop("$db", None)
        if not isinstance(db, str):
            return errors.error_document(40571, "OP_MSG requests require a $db argument")
    if not body:
        return errors.error_document(59, "no command given")
    name = next(iter(body))
    for identifier in message.sequences:
        if identifier in body:
            return errors.error_document(
                40, f"duplicate field {identifier} in body and document sequence"
            )
    request = Request(name, db, body, message.sequences, legacy)
    return await dispatch(session, request)


async def dispatch(session: Session, request: Request) -> dict[str, Any]:
    entry = registry.lookup(request.name)
    try:
        if entry is None:
            raise errors.command_not_found(request.name)
        if entry.auth and session.principal is None:
            raise errors.unauthorized(request.name)
        if entry.writes and session.principal is not None and session.principal.read_only:
            raise errors.CommandError(
                13,
                f"not authorized on {request.db} to execute command "
                f"{{ {request.name}: ... }}: the key is read-only",
            )
        session.state.opcounters["command"] += 1
        body = request.body
        if "txnNumber" in body and "lsid" in body:
            # A transaction's statement or a retryable write: sessions decide.
            reply = await session.state.sessions.run(session, request, entry.handler)
        elif "autocommit" in body or "startTransaction" in body:
            raise errors.CommandError(
                50768, "'autocommit' and 'startTransaction' need a txnNumber and an lsid"
            )
        else:
            reply = await entry.handler(session, request)
    except (HeliosError, errors.CommandError) as exc:
        return errors.from_exception(exc)
    except Exception:
        log.exception("mongodb command %s failed", request.name)
        return errors.error_document(1, "internal error")
    reply.setdefault("ok", 1.0)
    return reply
