"""The Redis hot path: commands that go from the socket's read callback to the coalescer.

    RedisProtocol   hands received bytes to the connection's Session (no StreamReader);
                    a read that is one plain GET key / SET key value and nothing else,
                    on an idle connection, goes to the coalescer from data_received itself
                    (RequestParser.lone; the commonest read: -P 1 benchmarks, caches)
    submit_run      a run of plain GET key / SET key value -> Coalescer.get_into/set_into
    start_batched   a run of INCR/LPUSH/HSET/SADD/plain ZADD ... (one kind) -> the coalescer
                    directly for the common forms, else their handlers, stepped without a
                    Task (each awaits one coalescer future)
    _Replies        the run's replies, written together when the last one is known (a run
                    of one command answers through Session.answer instead)

Many clients doing one command each is the common load; a Task switch, a dispatch and a
Future per command would cost more than the command's share of the engine round trip,
and at one command per read every Python call on the way counts (about 0.5 us each here).
The Session (connection.py) decides what may take this path and keeps one run in flight;
tests/integration/redis/test_lone_commands.py compares the lone path with the others.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from heliosdb.engine import Access
from heliosdb.interfaces.redis.codec import ProtocolError, encode
from heliosdb.interfaces.redis.errors import RedisError, to_redis
from heliosdb.interfaces.redis.registry import Call, Command
from heliosdb.services.keyvalue.numbers import float_or_none

if TYPE_CHECKING:
    from heliosdb.interfaces.redis.connection import Session


class RedisProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol whose bytes go straight to the connection's Session.

    Reading stays in the event loop's callback, so a coalesced GET/SET costs no task
    switch; the StreamReader only learns about EOF (for ``peer_gone``). Bytes that arrive
    before the session is attached are kept and handed over at ``attach``.
    """

    session: Session | None = None
    early: list[bytes] | None = None
    early_eof = False

    def attach(self, session: Session | None) -> None:
        self.session = session
        if session is not None:
            for data in self.early or ():
                session.received(data)
            self.early = None
            if self.early_eof:
                session.peer_closed()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            if self.early is None:
                self.early = [data]
            else:
                self.early.append(data)
            return
        if (
            session.state is not IDLE
            or session.ready
            or session.backlog
            or len(data) > READ_CHUNK
            or session.error is not None
        ):
            session.received(data)
            return
        # The commonest read of all: one plain GET/SET and nothing after it (redis-benchmark
        # -P 1, a cache's lookups) goes to the coalescer here, its slot answering the
        # session itself. Anything else, or a connection whose state decides the answer,
        # takes advance()'s steps.
        try:
            args = session.parser.lone(data)
        except ProtocolError as exc:
            session.error = exc
            session.advance()
            return
        if args is None:
            session.advance()
            return
        n = len(args)
        client = session.client
        principal = client.principal
        if (
            (args[0].lower() != b"get" if n == 2 else n != 3 or args[0].lower() != b"set")
            or client.closing
            or session.coalescing_barred()
            or (n == 3 and principal is not None and principal.access is Access.READ_ONLY)
            or session.transport is None
            or session.transport.get_write_buffer_size() > WRITE_LIMIT
        ):
            session.ready.append(args)
            session.advance()
            return
        session.state = FAST
        session.lone = True
        client.last_active = time.time()
        session.server.commands_processed += 1
        coalescer = session.server.kv.coalescer
        if n == 2:
            client.last_command = "get"
            coalescer.get_into(client.db, args[1], _Slot(session, 0, False, client.proto))
        else:
            client.last_command = "set"
            slot = _Slot(session, 0, True, client.proto)
            coalescer.set_into(client.db, args[1], args[2], None, slot)

    def eof_received(self) -> bool | None:
        self.early_eof = True
        if self.session is not None:
            self.session.peer_closed()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.early_eof = True
        if self.session is not None:
            self.session.peer_closed()
        super().connection_lost(exc)


class Gathered:
    """Where a run's replies go when the connection's task awaits them (its ``future``:
    the replies, and the commands from the first GET the coalescer left for later)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[tuple[bytes, list[list[bytes]]]]) -> None:
        self.future = future

    def fast_done(self, replies: bytes) -> None:
        self.run_cut(replies, [])

    def run_cut(self, replies: bytes, rest: list[list[bytes]]) -> None:
        if not self.future.done():  # (the task was cancelled)
            self.future.set_result((replies, rest))


class _Replies:
    """The replies of one coalesced run, written together when the last one is known.

    GETs the coalescer left for a later round trip (``defer``: values past its bytes
    bound, coalesce.py GET_BOUNDED) end the run there: the replies before the first of
    them are written, and the run's commands from it on are run again next."""

    __slots__ = ("cut", "parts", "remaining", "run", "session")

    def __init__(self, session: Session | Gathered, run: list[list[bytes]]) -> None:
        self.session = session
        self.run = run
        self.parts: list[bytes] = [b""] * len(run)
        self.remaining = len(run)
        self.cut = len(run)

    def answer(self, index: int, reply: bytes) -> None:
        self.parts[index] = reply
        self.remaining -= 1
        if self.remaining == 0:
            parts = self.parts
            if self.cut < len(parts):
                self.session.run_cut(b"".join(parts[: self.cut]), self.run[self.cut :])
            else:
                self.session.fast_done(parts[0] if len(parts) == 1 else b"".join(parts))

    def defer(self, index: int) -> None:
        self.cut = min(self.cut, index)
        self.answer(index, b"")


READ_CHUNK = 65536
IDLE, FAST, SLOW = "idle", "fast", "slow"  # a Session: nothing running / a run out here / its task
WRITE_LIMIT = 1 << 20  # replies the client has not read: past this, wait before running more
# Plain GETs run together, up to MAX_RUN (what one fill parses), but their replies are only
# known once the run is answered, and the run's replies are held until then: runs are sized
# so that they come to about RUN_REPLY_BYTES, from the replies of the connection's last run
# (Session.size_runs). A connection's first run is at most FIRST_RUN commands, and the run
# length at most doubles from one run to the next.
MAX_RUN = 1024
FIRST_RUN = 16
RUN_REPLY_BYTES = 4 << 20
SMALL_RUN_REPLIES = RUN_REPLY_BYTES // MAX_RUN  # a run's replies this small: no shorter runs
_OK = b"+OK\r\n"
# Commands whose handler (outside MULTI) awaits one coalescer operation of this kind.
BATCHED_KINDS = {
    b"incr": "incr", b"decr": "incr", b"incrby": "incr", b"decrby": "incr",
    b"lpush": "push", b"rpush": "push", b"lpushx": "push", b"rpushx": "push",
    b"hset": "add", b"hmset": "add", b"sadd": "add", b"zadd": "add",
}  # fmt: skip
ZADD_FLAGS = {b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"}


class _IntSlot:
    """Where the coalescer puts one command's answer, in place of an asyncio.Future: an
    integer (INCR/LPUSH/HSET/SADD/ZADD)."""

    __slots__ = ("_done", "index", "proto", "replies")

    def __init__(self, replies: _Replies | Session, index: int, proto: int) -> None:
        self.replies = replies
        self.index = index
        self.proto = proto
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any, /) -> None:
        if self._done:  # answered already (cancelled at shutdown): the coalescer's Plain
            return
        self._done = True
        self.replies.answer(self.index, b":%d\r\n" % value)

    def set_exception(self, exc: BaseException, /) -> None:
        if self._done:
            return
        self._done = True
        self.replies.answer(self.index, encode(to_redis(exc), self.proto))

    def cancel(self) -> bool:
        if self._done:
            return False
        self.set_exception(RedisError("ERR server is shutting down"))
        return True


class _Slot(_IntSlot):
    """A GET's answer (a bulk string or nil) or a SET's (OK)."""

    __slots__ = ("is_set",)

    def __init__(self, replies: _Replies | Session, index: int, is_set: bool, proto: int) -> None:
        self.replies = replies
        self.index = index
        self.proto = proto
        self._done = False
        self.is_set = is_set

    def set_result(self, value: Any, /) -> None:
        if self._done:
            return
        self._done = True
        if self.is_set:
            reply = _OK
        elif value is None:
            reply = b"_\r\n" if self.proto == 3 else b"$-1\r\n"
        else:
            reply = b"$%d\r\n%s\r\n" % (len(value), value)
        self.replies.answer(self.index, reply)

    def defer(self) -> bool:
        """The coalescer left this GET for a later round trip: True if the run sends it
        again (then this slot is done); False if the coalescer must (a run of one)."""
        replies = self.replies
        if self._done or type(replies) is not _Replies:
            return False
        self._done = True
        replies.defer(self.index)
        return True


def _submit_direct(session: Session, args: list[bytes], slot: _IntSlot) -> bool:
    """The common forms straight to the coalescer (what their handlers would do outside
    MULTI); False for anything else (INCRBY, HMSET, a ZADD score to parse as an error ...),
    which runs its handler."""
    name = args[0].lower()
    coalescer = session.server.kv.coalescer
    db = session.client.db
    if name == b"incr" or name == b"decr":
        coalescer.incr_into(db, args[1], 1 if name == b"incr" else -1, slot)
    elif name == b"lpush" or name == b"rpush":
        coalescer.push_into(db, args[1], args[2:], name == b"lpush", slot)
    elif name == b"sadd":
        coalescer.add_into(db, args[1], "set", [(m, None) for m in args[2:]], slot)
    elif name == b"hset" and len(args) % 2 == 0:
        coalescer.add_into(db, args[1], "hash", list(zip(args[2::2], args[3::2])), slot)  # noqa: B905
    elif name == b"zadd" and len(args) % 2 == 0:
        pairs = []
        for raw, member in zip(args[2::2], args[3::2]):  # noqa: B905 - even length checked
            score = float_or_none(raw)
            if score is None:
                return False
            pairs.append((member, score))
        coalescer.add_into(db, args[1], "zset", pairs, slot)
    else:
        return False
    return True


class _Stepper:
    """Runs one handler coroutine without a Task: each future it awaits resumes it.

    The batched handlers parse their words and await one coalescer future; a Task per
    command (and the connection task's dispatch) costs more than the command's share of
    the engine round trip.
    """

    __slots__ = ("coro", "index", "proto", "replies")

    def __init__(self, coro: Any, replies: _Replies | Session, index: int, proto: int) -> None:
        self.coro = coro
        self.replies = replies
        self.index = index
        self.proto = proto

    def step(self, _done: Any = None) -> None:
        try:
            waiting = self.coro.send(None)
        except StopIteration as stop:
            self.replies.answer(self.index, encode(stop.value, self.proto))
            return
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - its own error reply
            self.replies.answer(self.index, encode(to_redis(exc), self.proto))
            return
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(self.step)
        else:  # a bare yield (asyncio.sleep(0)): resume on the next loop turn
            asyncio.get_running_loop().call_soon(self.step)


def start_batched(session: Session, commands: list[Command], run: list[list[bytes]]) -> None:
    client, server = session.client, session.server
    replies = session if len(run) == 1 else _Replies(session, run)
    server.commands_processed += len(run)
    client.last_command = commands[-1].name
    session.starting = True
    try:
        for index, (command, args) in enumerate(zip(commands, run, strict=True)):
            if _submit_direct(session, args, _IntSlot(replies, index, client.proto)):
                continue
            call = Call(command, args, client, server, session=session)
            _Stepper(command.handler(call), replies, index, client.proto).step()
    finally:
        session.starting = False


def submit_run(session: Session, run: list[list[bytes]], gathered: Gathered | None = None) -> None:
    """Hand a run of plain GET key / SET key value to the coalescer; replies via _Slot
    (to ``gathered`` when given: the connection's task awaits them)."""
    client = session.client
    coalescer = session.server.kv.coalescer
    db, proto = client.db, client.proto
    if gathered is not None:
        replies: _Replies | Session = _Replies(gathered, run)
    else:
        replies = session if len(run) == 1 else _Replies(session, run)
    session.server.commands_processed += len(run)
    for index, args in enumerate(run):
        if len(args) == 2:
            coalescer.get_into(db, args[1], _Slot(replies, index, False, proto))
        else:
            coalescer.set_into(db, args[1], args[2], None, _Slot(replies, index, True, proto))
    client.last_command = "get" if len(run[-1]) == 2 else "set"
