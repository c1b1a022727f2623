"""One Redis client connection: read, parse, dispatch in order, reply.

    Server     what every connection shares: services, settings, clients, counters
    Client     one connection's state (RESP version, principal, db, MULTI queue, WATCHes,
               subscriptions); RESET puts it back as it was at connect
    serve()    the per-connection loop handed to the shared TCP listener

    Session    one connection's flow: idle, a coalesced run out (hotpath.py), or its task
               running commands through ``dispatch`` (lookup, arity, auth, subscriber-mode
               rule, MULTI queueing, NOPERM, handler)

Leading runs of plain GET/SET, or of one kind of batched write (INCR, LPUSH, HSET ...), go
from the read callback to the service's coalescer (one engine round trip for many clients);
anything else wakes the connection's task. One run is in flight at a time, so replies keep
the order of the commands.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import (
    QUEUED,
    ProtocolError,
    Push,
    RequestParser,
    encode,
)
from heliosdb.interfaces.redis.errors import RedisError, to_redis
from heliosdb.interfaces.redis.hotpath import (
    BATCHED_KINDS,
    FAST,
    FIRST_RUN,
    IDLE,
    MAX_RUN,
    READ_CHUNK,
    RUN_REPLY_BYTES,
    SLOW,
    SMALL_RUN_REPLIES,
    WRITE_LIMIT,
    ZADD_FLAGS,
    Gathered,
    RedisProtocol,
    start_batched,
    submit_run,
)
from heliosdb.interfaces.redis.registry import Call, Command, lookup
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.keyvalue import KeyValue, Tx
from heliosdb.settings import Settings

log = logging.getLogger("heliosdb.interfaces.redis")

UNAUTHENTICATED_BUFFER = 10 * (16384 + 32) + 64
BACKLOG_LIMIT = 4 * 1024 * 1024  # received while busy: past this, stop reading the socket
QUEUE_LIMIT = 10_000
OUTPUT_LIMIT = 64 * 1024 * 1024


@dataclass
class Server:
    services: Services
    settings: Settings
    kv: KeyValue
    started: float = field(default_factory=time.time)
    clients: dict[int, Client] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    commands_processed: int = 0
    connections_received: int = 0
    rejected_connections: int = 0
    port: int = 0
    config: dict[str, str] = field(default_factory=dict)

    @property
    def require_auth(self) -> bool:
        return self.settings.redis.require_auth


@dataclass(eq=False)
class Client:
    id: int
    writer: asyncio.StreamWriter | None
    addr: str = ""
    laddr: str = ""
    proto: int = 2
    db: int = 0
    name: bytes | None = None
    lib_name: bytes = b""
    lib_ver: bytes = b""
    principal: Principal | None = None
    multi: list[tuple[Command, list[bytes]]] | None = None
    dirty: bool = False
    watched: dict[tuple[int, bytes], int | None] = field(default_factory=dict)
    channels: set[bytes] = field(default_factory=set)
    patterns: set[bytes] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    last_command: str = "NULL"
    closing: bool = False
    killed: bool = False
    busy: bool = False  # a batch is running: its replies and pushes go out together, in order
    outbox: list[bytes] = field(default_factory=list)

    @property
    def subscriptions(self) -> int:
        return len(self.channels) + len(self.patterns)

    @property
    def subscriber_mode(self) -> bool:
        """RESP2 clients with subscriptions may only (un)subscribe, PING, QUIT and RESET."""
        return self.proto == 2 and self.subscriptions > 0

    def deliver(self, channel: bytes, message: bytes, pattern: bytes | None) -> None:
        if pattern is None:
            self.push([b"message", channel, message])
        else:
            self.push([b"pmessage", pattern, channel, message])

    def push(self, items: list[Any]) -> None:
        self.outbox.append(encode(Push(items), self.proto))
        if not self.busy:
            self.flush(limit=True)

    def flush(self, *, limit: bool = False) -> None:
        if self.outbox and self.writer is not None and not self.writer.is_closing():
            self.writer.write(b"".join(self.outbox))
            if limit and self.writer.transport.get_write_buffer_size() > OUTPUT_LIMIT:
                # A client that does not read (a stuck subscriber) is dropped, as Redis's
                # client-output-buffer-limit does, before it can exhaust the node's memory.
                log.warning("closing Redis client %d: over %d bytes unread", self.id, OUTPUT_LIMIT)
                self.closing = True
                self.writer.transport.abort()
        self.outbox.clear()

    def info_line(self) -> str:
        now = time.time()
        flags = "x" if self.multi is not None else ("P" if self.subscriptions else "N")
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd=8 "
            f"name={(self.name or b'').decode(errors='replace')} age={int(now - self.created)} "
            f"idle={int(now - self.last_active)} flags={flags} db={self.db} "
            f"sub={len(self.channels)} psub={len(self.patterns)} ssub=0 "
            f"multi={-1 if self.multi is None else len(self.multi)} watch={len(self.watched)} "
            f"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 "
            f"tot-mem=0 events=r cmd={self.last_command} "
            f"user={'default' if self.principal is None else self.principal.name} redir=-1 "
            f"resp={self.proto} lib-name={self.lib_name.decode(errors='replace')} "
            f"lib-ver={self.lib_ver.decode(errors='replace')}"
        )


class Session:
    """Runs one connection.

    Bytes arrive through :class:`RedisProtocol`, which hands them to :meth:`received` as
    the event loop reads them. An idle session takes a leading run of plain GET/SET straight
    to the coalescer and writes their replies when the batch is done, with no task switch
    (the hot path of many clients doing one command each). Everything else wakes the
    connection's task (:meth:`run`), which runs commands one by one through ``dispatch``.
    One run of commands is in flight at a time, so replies keep the commands' order.
    """

    def __init__(self, server: Server, client: Client) -> None:
        self.server = server
        self.client = client
        self.reader: asyncio.StreamReader | None = None
        self.transport: asyncio.Transport | None = None
        redis = server.settings.redis
        self.parser = RequestParser(
            max_inline=redis.max_inline_bytes, max_buffer=UNAUTHENTICATED_BUFFER
        )
        if not server.require_auth:
            self.parser.max_buffer = redis.max_query_buffer_bytes
        self.state = IDLE
        self.backlog: list[bytes] = []  # received, not yet parsed
        self.backlog_bytes = 0
        self.paused = False
        self.ready: list[list[bytes]] = []  # parsed, not yet run
        self.error: ProtocolError | None = None
        self.eof = False
        self.wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.starting = False
        # The run out was a lone command (submit_lone): the parser held nothing after it,
        # and bytes received since wait in the backlog, so there is nothing to look for.
        self.lone = False
        self.run_length = 1  # commands in the run out (when not lone)
        self.run_cap = FIRST_RUN  # plain GET/SETs one run may take (size_runs)

    def peer_gone(self) -> bool:
        """The client hung up (seen even while a blocking command is not reading)."""
        return self.eof or (self.reader is not None and self.reader.at_eof())

    # -- called by the protocol, on the event loop's read callbacks --------------------------

    def received(self, data: bytes) -> None:
        if self.state is IDLE and not self.backlog and len(data) <= READ_CHUNK:
            try:  # the common case: straight to the parser
                self.parser.feed(data)
            except ProtocolError as exc:
                self.error = exc
            self.advance()
            return
        self.backlog.append(data)
        self.backlog_bytes += len(data)
        if self.state is IDLE:
            self.advance()
        elif self.backlog_bytes > BACKLOG_LIMIT and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()

    def peer_closed(self) -> None:
        self.eof = True
        self.wakeup.set()

    def advance(self) -> None:
        """Idle: start on whatever has arrived (coalesced GET/SET here, the rest in run())."""
        if self.client.closing:
            self.wakeup.set()
            return
        self.fill()
        if self.error is not None:
            self.state = SLOW
            self.wakeup.set()
            return
        ready = self.ready
        if not ready:
            if self.eof:
                self.wakeup.set()
            return
        if self.transport is not None and self.transport.get_write_buffer_size() > WRITE_LIMIT:
            self.state = SLOW  # the client is not reading its replies: the task waits for it
            self.wakeup.set()
            return
        run = self._coalescable_run(ready, 0)
        batched = None if run else self._batched_run(ready)
        if batched is not None:
            run = len(batched)
        if run == 0:
            self.state = SLOW
            self.wakeup.set()
            return
        self.state = FAST
        if run == len(ready):
            self.ready = []
        else:
            ready, self.ready = ready[:run], ready[run:]
        self.client.last_active = time.time()
        self.lone = False
        self.run_length = run
        if batched is None:
            submit_run(self, ready)
        else:
            start_batched(self, batched, ready)

    def fast_done(self, replies: bytes) -> None:
        """The coalesced run is answered: write its replies, go on with what came meanwhile."""
        self.answer(0, replies)

    def answer(self, _index: int, replies: bytes) -> None:
        """The reply of a run of one command (what _Replies gathers for longer runs), or
        the run's replies from _Replies (fast_done)."""
        client, transport = self.client, self.transport
        if not self.lone:  # (a lone command says nothing of a run's length)
            size = len(replies)
            if size > SMALL_RUN_REPLIES or MAX_RUN > self.run_cap <= self.run_length:
                # replies that may call for shorter runs, or a full run of small ones
                self.size_runs(self.run_length, size)
        if client.writer is not None and transport is not None and not transport.is_closing():
            if client.outbox:
                client.outbox.append(replies)
                client.flush()
            else:
                transport.write(replies)
        self.state = IDLE
        if self.starting:  # answered while being started (errors): no recursion
            asyncio.get_running_loop().call_soon(self.advance)
        elif (
            self.ready
            or self.backlog
            or (not self.lone and self.parser.has_data())
            or self.eof
            or client.closing
            or self.error is not None
        ):
            self.advance()

    def run_cut(self, replies: bytes, rest: list[list[bytes]]) -> None:
        """The coalescer answered the run's commands before ``rest`` (GETs whose values
        came past its bytes bound for one round trip): write those replies (the next runs
        sized from them), and run ``rest`` next, once the client has read enough."""
        self.run_length -= len(rest)
        self.ready[0:0] = rest
        self.server.commands_processed -= len(rest)  # (counted again when run)
        self.answer(0, replies)

    def size_runs(self, commands: int, size: int) -> None:
        """A run of ``commands`` was answered with ``size`` bytes: the next runs of plain
        GET/SETs take as many commands as make about RUN_REPLY_BYTES of replies at that
        size per command, at least one; more than now only after a run as long as allowed
        (then up to twice as many)."""
        cap = self.run_cap
        fit = RUN_REPLY_BYTES * commands // size if size else MAX_RUN
        self.run_cap = max(1, min(fit, 2 * cap if commands >= cap else cap, MAX_RUN))

    def fill(self) -> None:
        """Parse received bytes into ``ready`` (64 KiB at a time, up to 1024 commands)."""
        parser, ready = self.parser, self.ready
        try:
            while len(ready) < 1024:
                while (args := parser.next()) is not None:
                    ready.append(args)
                    if len(ready) >= 1024:
                        return
                if not self.backlog:
                    break
                data = self.backlog.pop(0)
                if len(data) > READ_CHUNK:
                    self.backlog.insert(0, data[READ_CHUNK:])
                    data = data[:READ_CHUNK]
                self.backlog_bytes -= len(data)
                parser.feed(data)
        except ProtocolError as exc:
            self.error = exc
        finally:
            if self.paused and self.backlog_bytes <= BACKLOG_LIMIT // 2 and self.transport:
                self.paused = False
                self.transport.resume_reading()

    # -- the connection's task ---------------------------------------------------------------

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.transport = writer.transport  # type: ignore[assignment]
        protocol = writer.transport.get_protocol()
        if isinstance(protocol, RedisProtocol):
            protocol.attach(self)
        else:  # a plain stream (tests): read here and feed the same path
            self._pump = asyncio.create_task(self._read_stream(reader))
        idle = self.server.settings.redis.idle_timeout_seconds
        client = self.client
        try:
            while not client.closing:
                if self.state is not SLOW:
                    if self.eof and self.state is IDLE and not self.ready and not self.backlog:
                        break
                    self.wakeup.clear()
                    if idle > 0 and not client.subscriptions:
                        try:
                            await asyncio.wait_for(self.wakeup.wait(), idle)
                        except TimeoutError:
                            if time.time() - client.last_active >= idle and self.state is IDLE:
                                break
                    else:
                        await self.wakeup.wait()
                    continue
                client.last_active = time.time()
                if writer.transport.get_write_buffer_size() > WRITE_LIMIT:
                    await writer.drain()
                await self.run_ready()
                client.flush()
                if writer.transport.get_write_buffer_size() > WRITE_LIMIT:
                    await writer.drain()
                self.state = IDLE
                if not client.closing:
                    self.advance()
        finally:
            client.closing = True
            if isinstance(protocol, RedisProtocol):
                protocol.attach(None)
            if self._pump is not None:
                self._pump.cancel()
        if not writer.is_closing():
            await writer.drain()

    async def run_ready(self) -> None:
        """Run every parsed and received command (the connection's task, state SLOW)."""
        client = self.client
        client.busy = True
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if not self.ready:
                    self.fill()
                    if not self.ready:
                        if self.error is not None:
                            continue
                        break
                batch, self.ready = self.ready, []
                await self.run_batch(batch)
                if client.closing:
                    break
        except ProtocolError as exc:
            client.outbox.append(encode(RedisError(f"ERR Protocol error: {exc}"), client.proto))
            client.closing = True
        finally:
            client.busy = False

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(READ_CHUNK):
            self.received(data)
        self.peer_closed()

    async def run_batch(self, batch: list[list[bytes]]) -> None:
        replies = self.client.outbox
        i = 0
        while i < len(batch):
            run = self._coalescable_run(batch, i)
            if run:
                answered, run = await self._run_coalesced(batch[i : i + run])
                replies.append(answered)
                size = len(answered)
                if run:
                    self.size_runs(run, size)
                i += run  # (GETs the coalescer left for later: run again from here)
            else:
                reply = await self.dispatch(batch[i])
                encoded = encode(reply, self.client.proto)
                replies.append(encoded)
                size = len(encoded)
                i += 1
            if len(replies) > 64 or size > READ_CHUNK:
                self.client.flush()
                writer = self.client.writer
                if writer is not None and writer.transport.get_write_buffer_size() > WRITE_LIMIT:
                    # A client that sends without reading (a pipeline of big LRANGEs or
                    # GETs) waits here, as between batches, instead of the node holding
                    # every reply.
                    await writer.drain()
            if self.client.closing:
                break

    def _batched_run(self, ready: list[list[bytes]]) -> list[Command] | None:
        """Leading commands the service batches itself (INCR, LPUSH, HSET, SADD, plain
        ZADD ...), all of one kind so the group applies them in the order sent; None if the
        first is not one (or needs the full dispatch: arity, auth, NOPERM, MULTI ...)."""
        client = self.client
        if (
            client.multi is not None
            or client.subscriber_mode
            or client.principal is None
            or client.principal.read_only
        ):
            return None
        run: list[Command] = []
        kind = None
        for args in ready:
            name = args[0].lower()
            this = BATCHED_KINDS.get(name)
            if this is None or (kind is not None and this != kind):
                break
            if name == b"zadd" and len(args) > 2 and args[2].upper() in ZADD_FLAGS:
                break  # ZADD with options runs its own transaction
            command = lookup(name)
            if command is None or not command.arity_ok(len(args)):
                break
            kind = this
            run.append(command)
        return run or None

    def coalescing_barred(self) -> bool:
        """Whether the connection's state decides a plain GET/SET's answer (MULTI queues
        it, subscriber mode refuses it, NOAUTH before AUTH), so it may not be coalesced."""
        client = self.client
        return (
            client.multi is not None
            or (client.proto == 2 and bool(client.channels or client.patterns))  # subscriber
            or (client.principal is None and self.server.require_auth)
        )

    def _coalescable_run(self, batch: list[list[bytes]], start: int) -> int:
        """How many commands from ``start`` are plain GET/SET we may submit together (at
        most ``run_cap``)."""
        if self.coalescing_barred():
            return 0
        principal = self.client.principal
        read_only = principal is not None and principal.read_only
        seen_get = False
        n = 0
        for args in batch[start : start + self.run_cap]:
            name = args[0].lower()
            if name == b"get" and len(args) == 2:
                seen_get = True
            elif name == b"set" and len(args) == 3 and not seen_get and not read_only:
                pass
            else:
                break
            n += 1
        return n

    async def _run_coalesced(self, run: list[list[bytes]]) -> tuple[bytes, int]:
        """The run as the hot path runs it (submit_run): its replies, and how many of its
        commands they answer (all but GETs the coalescer left for a later round trip)."""
        gathered = Gathered(asyncio.get_running_loop().create_future())
        submit_run(self, run, gathered)
        replies, rest = await gathered.future
        self.server.commands_processed -= len(rest)  # (counted again when run)
        return replies, len(run) - len(rest)

    async def dispatch(self, args: list[bytes]) -> Any:
        client = self.client
        self.server.commands_processed += 1
        command = lookup(args[0])
        try:
            if command is None:
                raise errors.unknown_command(args[0], args[1:])
            command.check_arity(len(args))
            client.last_command = command.name
            if (
                client.principal is None
                and self.server.require_auth
                and "noauth" not in command.flags
            ):
                raise RedisError(errors.NOAUTH)
            if client.subscriber_mode and "pubsub" not in command.flags:
                raise RedisError(
                    f"ERR Can't execute '{command.name}': only (P|S)SUBSCRIBE / "
                    "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                )
            if client.multi is not None and "noqueue" not in command.flags:
                if len(client.multi) >= QUEUE_LIMIT:
                    raise RedisError("ERR too many commands queued in this transaction")
                client.multi.append((command, args))
                return QUEUED
            self.check_permission(command)
            return await self.execute(command, args)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
            if client.multi is not None:
                client.dirty = True
            return to_redis(exc)

    def check_permission(self, command: Command) -> None:
        principal = self.client.principal
        if command.writes and principal is not None and principal.read_only:
            raise RedisError(errors.NOPERM_WRITE.format(command.name))

    async def execute(self, command: Command, args: list[bytes]) -> Any:
        if command.writes and not command.flags & {"blocking", "batched"}:
            # Many clients' writes share one engine transaction (group commit).
            def work(tx: Tx) -> Awaitable[Any]:
                call = Call(command, args, self.client, self.server, shared_tx=tx, session=self)
                return command.handler(call)

            return await self.server.kv.write(self.client.db, work)
        async with AsyncExitStack() as stack:
            call = Call(command, args, self.client, self.server, stack=stack, session=self)
            return await command.handler(call)

    def authenticated(self, principal: Principal) -> None:
        self.client.principal = principal
        self.parser.max_buffer = self.server.settings.redis.max_query_buffer_bytes


def new_client(server: Server, writer: asyncio.StreamWriter | None) -> Client:
    client = Client(next(server.ids), writer)
    if writer is not None:
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        if peer:
            client.addr = f"{peer[0]}:{peer[1]}"
        if sock:
            client.laddr = f"{sock[0]}:{sock[1]}"
    return client


def reset_client(server: Server, client: Client) -> None:
    """RESET: everything back to the state of a fresh connection (keeps the id)."""
    for channel in client.channels:
        server.kv.unsubscribe(channel, client.deliver)
    for pattern in client.patterns:
        server.kv.punsubscribe(pattern, client.deliver)
    client.channels.clear()
    client.patterns.clear()
    client.proto = 2
    client.db = 0
    client.name = None
    client.multi = None
    client.dirty = False
    client.watched.clear()
    if server.require_auth:
        client.principal = None


async def serve(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    client = new_client(server, writer)
    server.connections_received += 1
    if len(server.clients) >= server.settings.redis.max_clients:
        server.rejected_connections += 1
        writer.write(encode(RedisError(errors.MAX_CLIENTS), 2))
        await writer.drain()
        return
    server.clients[client.id] = client
    session = Session(server, client)
    try:
        await session.run(reader, writer)
    finally:
        reset_client(server, client)
        client.writer = None
        server.clients.pop(client.id, None)
