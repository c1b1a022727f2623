"""One client connection: read a message, run its command, write the reply.

    MongoProtocol frames messages in the read callback -> parse (codec) -> dispatch
    -> reply (unless moreToCome)

A message we cannot parse closes the connection (the node goes on). Commands run one
at a time per connection, as MongoDB does. ``Session`` is the per-connection state:
who is authenticated, the SCRAM conversation in progress, the compressor agreed.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heliosdb.interfaces.mongodb import (
    codec,
    errors,
    hotpath,
    loneupdate,
    registry,
    write_concern,
)
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


# Whole messages waiting for the connection's loop beyond this many bytes pause reading
# (only a client pipelining moreToCome writes gets that far ahead).
QUEUED_LIMIT_BYTES = codec.MAX_MESSAGE_BYTES
_LENGTH = struct.Struct("<i")  # a message's first field


class MongoProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that cuts the received bytes into whole messages itself.

    The connection's loop (``serve``) takes them from ``messages`` and waits on a future
    only when none is there: no StreamReader, no ``readexactly`` coroutines per message.
    A length outside MongoDB's bounds ends the stream (``bad`` says why); so do EOF and a
    lost connection. The StreamReader it was made with only learns about EOF.

    A message that arrives alone while ``serve`` waits for one is first offered to
    ``lone`` (loneupdate.take_lone: an update_one, else hotpath.take_lone's plain find,
    started from here, no task switch); while it is out (``busy``), later messages queue
    and ``serve`` sleeps on, so replies keep the order of the requests. ``lone_done``
    ends it; ``hand_back`` gives the message to ``serve`` instead.
    """

    lone: Callable[[bytes], bool] | None = None
    busy = False
    session: Session | None = None  # whose lone message is in progress (currentOp)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: deque[bytes] = deque()
        self.queued = 0  # bytes in ``messages``
        self.ended = False
        self.bad: str | None = None
        self._partial = bytearray()
        self._need = 0  # bytes ``_partial`` must hold before it is looked at again
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        # the connection's transport, None before it is made (uvloop's is no
        # asyncio.ReadTransport; an attribute, not a property: read twice per lone find)
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        if (
            self.lone is not None
            and self._waiter is not None
            and not self.busy
            and not self._partial
            and not self.messages
            and len(data) >= codec.HEADER.size
            and _LENGTH.unpack_from(data)[0] == len(data)
            and len(data) <= codec.MAX_MESSAGE_BYTES
        ):
            # One whole message while serve waits (so nothing waits before it): offered
            # to ``lone`` as below, without a trip through the queue
            if not self._offer(data):
                self.messages.append(data)
                self.queued += len(data)
                self._need = 4
                self._wake()
            return
        if self._partial:
            self._partial += data
            if len(self._partial) < self._need:
                return
            data = bytes(self._partial)
            self._partial.clear()
        offset, end = 0, len(data)
        messages = self.messages
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length < codec.HEADER.size or length > codec.MAX_MESSAGE_BYTES:
                self.bad = f"message length {length} out of range"
                self.ended = True
                break
            if end - offset < length:
                self._need = length
                break
            messages.append(data if length == end else data[offset : offset + length])
            self.queued += length
            offset += length
        else:
            self._need = 4
        if offset < end and not self.ended:
            self._partial += memoryview(data)[offset:]
        if self.queued > QUEUED_LIMIT_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if messages or self.ended:
            if (
                len(messages) == 1
                and not self.busy
                and self._waiter is not None
                and not self.ended
                and self.lone is not None
            ):
                data = messages[0]
                if self._offer(data):
                    messages.popleft()
                    self.taken(len(data))
                    return
            self._wake()

    def _offer(self, data: bytes) -> bool:
        """Whether ``lone`` took the message ``data`` (then the connection is busy)."""
        try:
            taken = self.lone(data)  # type: ignore[misc]  # the callers checked it
        except Exception:  # the connection's loop answers it instead
            log.exception("the lone find path failed; the command table answers")
            return False
        if taken:
            self.busy = True
            session = self.session
            if session is not None:  # what currentOp shows (no op_task: killOp waits)
                session.op_data = data
                session.op_since = time.monotonic()
        return taken

    def lone_done(self) -> None:
        """The message ``lone`` took is answered: ``serve`` goes on."""
        self.busy = False
        if self.session is not None:
            self.session.op_data = None
        if self.messages or self.ended:
            self._wake()

    def hand_back(self, data: bytes) -> None:
        """The message ``lone`` took goes to ``serve`` after all (first in the queue)."""
        self.messages.appendleft(data)
        self.queued += len(data)
        self.lone_done()

    def taken(self, size: int) -> None:
        """``serve`` took a message of ``size`` bytes off the queue."""
        self.queued -= size
        if self._paused and self.queued <= QUEUED_LIMIT_BYTES // 2:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def wait(self) -> asyncio.Future[None]:
        """A future that is done once a message is queued or the stream has ended."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def _wake(self) -> None:
        if self.busy:
            return  # lone_done wakes serve once the lone message is answered
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._wake()
        super().connection_lost(exc)


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
    # the open connections by id, and the opids currentOp hands out (commands/operations.py)
    connections: dict[int, Session] = field(default_factory=dict)
    op_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


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
    # find bodies seen on this connection, around their filters (hotpath._known)
    finds: dict[tuple[bytes, bytes], tuple[str, str, int, int, bool]] = field(default_factory=dict)
    # The message in progress and since when (time.monotonic()), for currentOp and killOp
    # (commands/operations.py): a few stores per message; its opid is given only when a
    # currentOp sees it (``op_id``, of the message that started at ``op_id_since``).
    # ``op_task`` is the connection's task while it runs the message (None on the lone
    # path: no task to cancel), ``op_killed`` the message a killOp cancelled it for.
    op_data: bytes | None = None
    op_since: float = 0.0
    op_id: int = 0
    op_id_since: float = -1.0
    op_task: asyncio.Task[None] | None = None
    op_killed: bytes | None = None
    # the driver's client metadata from its first hello (appName, driver, os)
    client_metadata: dict[str, Any] | None = None

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
    protocol = transport.get_protocol()
    assert isinstance(protocol, MongoProtocol)
    messages = protocol.messages
    session = Session(state, next(state.ids), f"{peer[0]}:{peer[1]}" if peer else "unknown")
    protocol.lone = functools.partial(loneupdate.take_lone, session, protocol)
    protocol.session = session
    task = asyncio.current_task()
    state.current += 1
    state.total_created += 1
    state.connections[session.connection_id] = session
    try:
        while True:
            if not messages:
                if protocol.ended:
                    if protocol.bad is not None:
                        _closing(session, protocol.bad)
                    return
                await protocol.wait()
                continue
            data = messages.popleft()
            protocol.taken(len(data))
            try:
                message = codec.parse_frame(data)
            except codec.ProtocolError as exc:
                _closing(session, str(exc))
                return
            out = reply = None
            session.op_data = data
            session.op_since = time.monotonic()
            session.op_task = task
            try:
                if hotpath.eligible(session, message):
                    out = await hotpath.answer_find(session, message, next(state.request_ids))
                if out is None:
                    reply = await handle(session, message)
            except asyncio.CancelledError:
                if session.op_killed is not data:
                    raise  # the node stops, or the connection's task is cancelled
                reply = errors.error_document(11601, "operation was interrupted")
            if session.op_killed is not None and task is not None:
                # a killOp's cancel is spent (answered above, or caught on the way)
                session.op_killed = None
                task.uncancel()
            session.op_data = session.op_task = None
            if out is None:
                if reply is None or message.more_to_come:
                    continue
                compressor = message.compressor if message.compressor else None
                out = codec.encode_reply(
                    next(state.request_ids), message.request_id, reply, message.op_code, compressor
                )
                if compressor is not None:
                    compressed = state.compressed_in
                    compressed[compressor] = compressed.get(compressor, 0) + len(data)
                    compressed = state.compressed_out
                    compressed[compressor] = compressed.get(compressor, 0) + len(out)
            elif message.more_to_come:
                continue
            transport.write(out)  # writer.write(), one frame less
            if transport.get_write_buffer_size() > DRAIN_ABOVE_BYTES:
                await writer.drain()  # only a slow reader makes us wait
    finally:
        protocol.lone = None
        protocol.session = None
        session.op_data = None
        state.connections.pop(session.connection_id, None)
        state.current -= 1
        state.cursors.disconnected(session.connection_id)


def _closing(session: Session, why: str) -> None:
    log.info("closing mongodb connection %s from %s: %s", session.connection_id, session.peer, why)


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
        if entry.writes or request.name in write_concern.WITH_WRITE_CONCERN:
            refused = write_concern.refusal(body)
            if refused is not None:
                raise refused
        if "txnNumber" in body and "lsid" in body:
            # A transaction's statement or a retryable write: sessions decide.
            reply = await session.state.sessions.run(session, request, entry.handler)
        elif "autocommit" in body or "startTransaction" in body:
            raise errors.CommandError(
                50768, "'autocommit' and 'startTransaction' need a txnNumber and an lsid"
            )
        else:
            reply = await entry.handler(session, request)
    except Exception as exc:  # noqa: BLE001 - every failure is an error reply
        return errors.reply_for(request.name, exc)
    reply.setdefault("ok", 1.0)
    return reply
