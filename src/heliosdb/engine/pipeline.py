"""Pipelined engine connections: the statements of requests that arrive together leave in
one socket write, each still its own Bind/Execute/Sync (own implicit transaction, own
error), and their answers come back in order on one read. (With ``share_sync``, for
reads whose callers answer a failure another way, a step's statements share one Sync:
one transaction start and end and one flush of answers for all of them.)

asyncpg sends one statement and waits for its answer before the next (a send, a read
and a wake-up of the engine backend per statement, several times the engine's own work
for a point select). A :class:`Pipeline` is a raw protocol-3 connection (engine/relay.py
logs it in as an engine role) that queues any number of statements and writes them all
at the end of the event-loop step.

Only what the pool path would answer identically comes here (QueryService decides):
statements prepared on the pipeline whose parameter and column types are all in
:data:`DECODERS`, values decoded in binary exactly as asyncpg's codecs decode them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import struct
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg.exceptions import ConnectionDoesNotExistError

from heliosdb.engine.pools import Engine
from heliosdb.engine.relay import cancel, message, open_session
from heliosdb.engine.roles import Access
from heliosdb.engine.rowcap import UNLIMITED, TooManyBytes, TooManyRows
from heliosdb.errors import ErrorCode, HeliosError

log = logging.getLogger("heliosdb.engine.pipeline")

_INT = struct.Struct("!i")
_INT16 = struct.Struct("!h")
_INT64 = struct.Struct("!q")
_FLOAT4 = struct.Struct("!f")
_FLOAT8 = struct.Struct("!d")
_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_INFINITY = 0x7FFFFFFFFFFFFFFF
_SYNC = b"S\x00\x00\x00\x04"
MAX_STATEMENTS = 1024  # prepared on one pipeline before they are all deallocated
_EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"  # unnamed portal, all rows
_EXECUTE_SYNC = _EXECUTE + _SYNC
_GATHER_BYTES = 1 << 16  # a message missing more is gathered in chunks (data_received)


def _timestamptz(data: bytes) -> dt.datetime:
    # asyncpg's timestamptz_decode: naive max/min datetimes for +/-infinity
    (micros,) = _INT64.unpack(data)
    if micros == _INFINITY:
        return dt.datetime(dt.MAXYEAR, 12, 31, 23, 59, 59, 999999)
    if micros == -_INFINITY - 1:
        return dt.datetime(dt.MINYEAR, 1, 1)
    return _EPOCH_UTC + dt.timedelta(microseconds=micros)


# Binary result decoders by type oid, each giving what asyncpg's codec gives.
DECODERS: dict[int, Callable[[bytes], Any]] = {
    16: lambda b: b == b"\x01",  # bool
    20: lambda b: _INT64.unpack(b)[0],  # int8
    21: lambda b: _INT16.unpack(b)[0],  # int2
    23: lambda b: _INT.unpack(b)[0],  # int4
    25: bytes.decode,  # text
    1043: bytes.decode,  # varchar
    700: lambda b: _FLOAT4.unpack(b)[0],  # float4
    701: lambda b: _FLOAT8.unpack(b)[0],  # float8
    1184: _timestamptz,
}


def _encode_bool(value: Any) -> bytes:
    if type(value) is not bool:
        raise TypeError
    return b"\x01" if value else b"\x00"


def _encode_text(value: Any) -> bytes:
    if type(value) is not str:
        raise TypeError
    return value.encode()


def _packer(form: struct.Struct, kind: type) -> Callable[[Any], bytes]:
    def encode(value: Any) -> bytes:
        if type(value) is not kind:
            raise TypeError
        return form.pack(value)  # struct.error out of range

    return encode


# Binary parameter encoders by type oid, for values as codecs.to_param gives them; any
# other value raises (the caller then takes the pool path, whose codecs say why).
ENCODERS: dict[int, Callable[[Any], bytes]] = {
    16: _encode_bool,
    20: _packer(_INT64, int),
    21: _packer(_INT16, int),
    23: _packer(_INT, int),
    25: _encode_text,
    1043: _encode_text,
    701: _packer(_FLOAT8, float),
}


class Unfit(Exception):
    """The statement or its values cannot take the pipeline; the pool path answers."""


class Skipped(Exception):
    """An earlier statement of the same shared Sync failed, so the engine skipped this
    one (``share_sync``): nothing of it ran."""


class Prepared:
    """A statement prepared on one pipeline: its server name and its types."""

    __slots__ = ("checked", "columns", "generation", "name", "parameters")

    def __init__(self, name: bytes, parameters: tuple[int, ...], columns: tuple[str, ...]):
        self.generation = 0  # the pipeline's statement generation it was prepared in
        self.name = name
        self.parameters = parameters  # type oids
        self.columns = columns  # "name:oid" per column, compared with the pool's plan
        self.checked: object = None  # what the caller last found these types to match


# run_then's callback: (raw data rows, command tag) and None, or None and the error
Then = Callable[[tuple[list[bytes], bytes] | None, BaseException | None], None]


class _Pending:
    __slots__ = (
        "cap",
        "deadline",
        "future",
        "grouped",
        "max_bytes",
        "rows",
        "size",
        "status",
        "then",
    )

    def __init__(
        self, future: asyncio.Future[Any] | None, deadline: float, then: Then | None = None
    ) -> None:
        self.future = future
        self.then = then
        self.deadline = deadline
        self.cap = UNLIMITED  # rows it may return (run's cap)
        self.max_bytes = UNLIMITED  # DataRow bytes it may return (run's max_bytes)
        self.rows: list[bytes] = []
        self.size = 0  # DataRow bytes of its rows
        self.status = b""
        self.grouped = False  # a later statement's Sync ends it (share_sync)


class Pipeline(asyncio.Protocol):
    """One raw engine connection running queued statements in order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        decodes: Collection[int] = DECODERS.keys(),
        encodes: Collection[int] = ENCODERS.keys(),
        share_sync: bool = False,
    ) -> None:
        """``share_sync``: the ``run_then`` statements of one loop step share one Sync
        (the last one's), so the engine runs them in one implicit transaction (each still
        its own snapshot under READ COMMITTED) and answers them in one flush; an error in
        one skips the rest of the step's (their callbacks get :class:`Skipped`). Only for
        reads whose callers answer a failure the usual way."""
        self.loop = loop
        self.share_sync = share_sync
        self._open_group: _Pending | None = None  # the step's last Sync-less statement
        self._aborted = False  # a statement of the current shared Sync failed
        self.timeout = timeout  # client-side bound, as asyncpg's command_timeout
        self.decodes = decodes  # column type oids a statement prepared here may have
        self.encodes = encodes  # parameter type oids likewise
        self.transport: asyncio.Transport | None = None
        self.pid = 0
        self.secret = b""
        self.closed = False
        self.retiring = False  # closes once its last statement is answered (retire())
        self._buffer = b""
        self._gathered: list[bytes] = []  # a long message's chunks, until it is whole
        self._missing = 0  # ... its bytes still to come
        self._out: list[bytes] = []
        self._flushing = False  # a _flush is scheduled
        self._before_flush: list[Callable[[], None]] = []
        self._pending: deque[_Pending] = deque()
        self._error: dict[str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._statements: dict[str, Prepared | None] = {}
        self._preparing: dict[str, asyncio.Future[Prepared | None]] = {}
        self.session: Any = None  # keeps the login streams (and so the transport) alive
        self.on_timeout: Callable[[], None] | None = None  # asks the engine to cancel
        self._names = 0
        self._generation = 0  # statements of older generations were deallocated

    # -- queueing -------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def writing(self) -> bool:
        """Statements queued in this loop step wait to be written."""
        return bool(self._out)

    def oldest(self) -> float:
        """Loop time the oldest unanswered statement is due (inf: none)."""
        return self._pending[0].deadline if self._pending else float("inf")

    def _send(self, data: bytes, cap: int = 0, max_bytes: int = 0) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        entry = _Pending(future, self.loop.time() + self.timeout)
        if cap:
            entry.cap = cap
        if max_bytes:
            entry.max_bytes = max_bytes
        self._queue(data, entry)
        return future

    def _close_group(self) -> None:
        """The shared Sync goes after the step's last Sync-less statement, which is
        answered at its ReadyForQuery as any other."""
        entry = self._open_group
        if entry is not None:
            self._open_group = None
            entry.grouped = False
            self._out.append(_SYNC)

    def _queue(self, data: bytes, entry: _Pending, at_once: bool = False) -> None:
        if self.closed:
            raise Unfit("closed")  # nothing sent: the pool path answers
        if entry.grouped:
            self._open_group = entry
        else:
            self._close_group()  # a statement with its own Sync never joins a group
        if at_once and not self._out and self.transport is not None:
            self.transport.write(data)  # nothing of this step waits to go first
        else:
            if not self._flushing:
                self._flushing = True
                self.loop.call_soon(self._flush)
            self._out.append(data)
        self._pending.append(entry)
        if self._timer is None:
            self._timer = self.loop.call_at(entry.deadline, self._expire)

    def before_flush(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when this loop step's statements are about to be written (it may
        queue more, which go in the same write): a caller gathering a step's work into
        one statement. Exceptions it raises are logged."""
        self._before_flush.append(hook)
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        hooks = self._before_flush
        if hooks:
            self._before_flush = []
            for hook in hooks:
                try:
                    hook()
                except Exception:
                    log.exception("a pipeline's before_flush hook failed")
        self._close_group()
        self._flushing = False
        out, self._out = self._out, []
        if out and not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._before_flush:  # a hook asked for another: the next step's flush
            self._flushing = True
            self.loop.call_soon(self._flush)

    def ready(self, sql: str) -> Prepared | None:
        """``sql`` if prepared here already (no await)."""
        return self._statements.get(sql)

    def known(self, sql: str) -> bool:
        """Whether ``sql`` was prepared here (``ready`` says None also for a statement of
        types the pipeline does not take)."""
        return sql in self._statements

    async def prepared(self, sql: str) -> Prepared | None:
        """``sql`` prepared here (None: a type the pipeline does not decode)."""
        if sql in self._statements:
            return self._statements[sql]
        waiting = self._preparing.get(sql)
        if waiting is not None:
            return await asyncio.shield(waiting)
        if len(self._statements) >= MAX_STATEMENTS:
            # Queued before the new Parse; a statement of the old generation not yet
            # sent is refused by run() (Unfit) instead of failing on the engine.
            self._statements.clear()
            self._generation += 1
            future = self._send(message(b"Q", b"DEALLOCATE ALL\0"))
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
        done: asyncio.Future[Prepared | None] = self.loop.create_future()
        self._preparing[sql] = done
        try:
            self._names += 1
            name = b"hdbp_%d" % self._names
            body = name + b"\0" + sql.encode() + b"\0\0\0"
            future = self._send(message(b"P", body) + message(b"D", b"S" + name + b"\0") + _SYNC)
            rows, _ = await future
            prepared = _describe(name, rows, self.decodes, self.encodes)
            if prepared is not None:
                prepared.generation = self._generation
            self._statements[sql] = prepared
            done.set_result(prepared)
            return prepared
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: others awaiting it get it too
            raise
        finally:
            del self._preparing[sql]

    def warm(self) -> None:
        """Load pgvector in this session, as a pooled session has once it served a vector
        search (its ``hnsw.*``/``ivfflat.*`` settings exist only after): without the
        extension the engine says so and nothing changes."""
        future = self._send(message(b"Q", b"SELECT '[0]'::public.vector\0"))
        future.add_done_callback(lambda done: done.cancelled() or done.exception())

    def forget(self, sql: str) -> None:
        """Prepare ``sql`` afresh next time (the engine said its plan changed)."""
        self._statements.pop(sql, None)

    def run(
        self,
        prepared: Prepared,
        values: Sequence[bytes | None],
        cap: int = 0,
        max_bytes: int = 0,
    ) -> asyncio.Future[Any]:
        """Bind ``values`` (encoded, None: NULL) to ``prepared`` and run it; the future
        gives (raw data rows, command tag) or an asyncpg exception, as the pool would.
        ``cap``: a result of more rows gives TooManyRows; ``max_bytes``: one of more
        DataRow bytes TooManyBytes. Both are checked at the end of each read (so at most
        one read's rows past the cap are held; a DataRow not all read yet counts its
        declared length, so a huge one is refused at its header); a statement still
        running past its cap has its connection dropped: its backend stops at its next
        write, and no cancel request can reach a statement queued behind it (those give
        Unfit, as nothing of them ran). 0: no cap. No Execute row limit, which would keep
        the engine from planning parallel workers."""
        return self._send(self._bind(prepared, values), cap, max_bytes)

    def run_then(
        self,
        prepared: Prepared,
        values: Sequence[bytes | None],
        then: Then,
        *,
        at_once: bool = False,
    ) -> None:
        """``run`` without a future: ``then`` is called from the read callback itself
        (or when the connection fails or times out) with what the future would give; an
        exception it raises is logged. ``at_once``: written now, not at the end of the
        loop step, unless statements of this step wait to be written (a lone statement
        whose latency matters more than sharing a write: whatever else the loop has
        ready, change capture's work for one, runs after it is on its way)."""
        entry = _Pending(None, self.loop.time() + self.timeout, then)
        if self.share_sync and not at_once:
            entry.grouped = True
            self._queue(self._bind(prepared, values, _EXECUTE), entry)
        else:
            self._queue(self._bind(prepared, values), entry, at_once)

    def _bind(
        self, prepared: Prepared, values: Sequence[bytes | None], then: bytes = _EXECUTE_SYNC
    ) -> bytes:
        """Bind ``values`` to ``prepared``, then ``then`` (Execute and Sync, or Execute)."""
        if prepared.generation != self._generation:
            raise Unfit("deallocated")
        parts = [b"\0", prepared.name, b"\0\0\x01\0\x01", _INT16.pack(len(values))]
        for value in values:
            if value is None:
                parts.append(b"\xff\xff\xff\xff")
            else:
                parts += (_INT.pack(len(value)), value)
        parts.append(b"\0\x01\0\x01")  # every result column in binary
        body = b"".join(parts)
        return b"B" + _INT.pack(len(body) + 4) + body + then

    # -- protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._missing:  # a long message arriving: its chunks are joined once, at its end
            self._gathered.append(data)
            self._missing -= len(data)
            if self._missing > 0:
                return
            buffer = b"".join(self._gathered)
            self._gathered, self._missing = [], 0
        else:
            buffer = self._buffer + data if self._buffer else data
        pos, size = 0, len(buffer)
        pending = self._pending
        while size - pos >= 5:
            (length,) = _INT.unpack_from(buffer, pos + 1)
            end = pos + 1 + length
            if end > size:
                break
            kind = buffer[pos]
            if kind == 68:  # D DataRow
                entry = pending[0]
                entry.rows.append(buffer[pos + 5 : end])
                entry.size += end - pos
            elif kind == 67:  # C CommandComplete
                pending[0].status = buffer[pos + 5 : end - 1]
                if pending[0].grouped:  # its Sync is a later statement's: done now
                    self._done(pending.popleft())
            elif kind == 90:  # Z ReadyForQuery: this statement is done
                while pending[0].grouped:  # skipped after an error of their shared Sync
                    _refuse(pending.popleft(), Skipped())
                entry = pending.popleft()
                if self._aborted and self._error is None:
                    _refuse(entry, Skipped())  # the Sync's own statement was skipped too
                else:
                    self._done(entry)
                self._aborted = False
            elif kind == 69:  # E ErrorResponse (with nothing pending: a FATAL one, as
                # pg_terminate_backend's, before the engine closes the connection)
                self._error = _fields(buffer[pos + 5 : end])
                if pending and pending[0].grouped:  # the engine skips the rest until the Sync
                    self._aborted = True
                    self._done(pending.popleft())
            elif kind in (116, 84):  # t ParameterDescription, T RowDescription
                pending[0].rows.append(buffer[pos:end])
            # 1 ParseComplete, 2 BindComplete, n NoData, N NoticeResponse,
            # S ParameterStatus, A NotificationResponse: nothing to keep
            pos = end
        self._buffer = buffer[pos:]
        if pending and (
            len(pending[0].rows) > pending[0].cap
            or pending[0].size + (_coming(buffer, pos) if pos < size else 0) > pending[0].max_bytes
        ):
            # Checked once per read, not per row: at most one read's rows past the cap (a
            # DataRow not all read counts its declared length: refused at its header).
            self._capped()
        elif self.retiring and not pending:
            self.close()
        elif size - pos >= 5:
            missing = pos + 1 + _INT.unpack_from(buffer, pos + 1)[0] - size
            if missing > _GATHER_BYTES:  # (appending each read to the buffer: quadratic)
                self._gathered, self._missing, self._buffer = [self._buffer], missing, b""

    def _done(self, entry: _Pending) -> None:
        error, self._error = self._error, None
        if len(entry.rows) > entry.cap or entry.size > entry.max_bytes:
            _refuse(entry, _refusal(entry))  # its last rows came in the read that ended it
            return
        future = entry.future
        if future is None:
            try:  # _call's, one call less
                if error is not None:
                    entry.then(None, asyncpg.PostgresError.new(error))  # type: ignore[misc]
                else:
                    entry.then((entry.rows, entry.status), None)  # type: ignore[misc]
            except Exception:
                log.exception("a pipelined statement's callback failed")
            return
        if future.done():  # timed out (or its caller went away)
            return
        if error is not None:
            future.set_exception(asyncpg.PostgresError.new(error))
        else:
            future.set_result((entry.rows, entry.status))

    def _capped(self) -> None:
        """The oldest statement's result passed its cap."""
        entry = self._pending.popleft()
        _refuse(entry, _refusal(entry))
        self._fail(Unfit("an earlier statement's result passed its cap"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionDoesNotExistError("connection was closed in the middle of operation"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            entry = self._pending.popleft()
            future = entry.future
            if future is None:
                _call(entry, None, exc)
            elif not future.done():
                future.set_exception(exc)
                future.exception()  # nobody may be left to retrieve it
        if self.transport is not None:
            self.transport.abort()

    def _expire(self) -> None:
        """The oldest statement ran past the client-side bound: cancel it on the engine,
        fail everything queued here (TimeoutError, as asyncpg's command_timeout) and drop
        the connection."""
        self._timer = None
        if not self._pending or self.closed:
            return
        now = self.loop.time()
        if self._pending[0].deadline > now:
            self._timer = self.loop.call_at(self._pending[0].deadline, self._expire)
            return
        if self.on_timeout is not None:
            self.on_timeout()
        self._fail(TimeoutError())

    def retire(self) -> None:
        """Close now if idle, else once the statements it holds are answered (they were
        sent and may be running: closing would fail them)."""
        if self._pending:
            self.retiring = True
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            if self.transport is not None:
                self.transport.write(b"X\x00\x00\x00\x04")  # Terminate
            self._fail(ConnectionDoesNotExistError("the connection was closed"))


def _coming(buffer: bytes, pos: int) -> int:
    """The bytes of a DataRow whose header begins at ``pos`` (0: another message, or a
    header not all read)."""
    if len(buffer) - pos >= 5 and buffer[pos] == 68:
        length: int = _INT.unpack_from(buffer, pos + 1)[0]
        return 1 + length
    return 0


def _refusal(entry: _Pending) -> TooManyRows:
    return TooManyRows() if len(entry.rows) > entry.cap else TooManyBytes()


def _refuse(entry: _Pending, exc: BaseException) -> None:
    future = entry.future
    if future is None:
        _call(entry, None, exc)
    elif not future.done():
        future.set_exception(exc)


def _call(
    entry: _Pending, result: tuple[list[bytes], bytes] | None, error: BaseException | None
) -> None:
    try:
        entry.then(result, error)  # type: ignore[misc]  # only entries without a future
    except Exception:
        log.exception("a pipelined statement's callback failed")


def _fields(body: bytes) -> dict[str, str]:
    """An ErrorResponse's fields as asyncpg's protocol collects them."""
    fields: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def _describe(
    name: bytes, messages: list[bytes], decodes: Collection[int], encodes: Collection[int]
) -> Prepared | None:
    """Parameter and column types from Describe's answer; None if any is not in
    ``decodes`` (columns) or ``encodes`` (parameters)."""
    parameters: tuple[int, ...] = ()
    columns: list[str] = []
    for reply in messages:
        body = reply[5:]
        if reply[:1] == b"t":
            (count,) = _INT16.unpack_from(body, 0)
            parameters = struct.unpack_from(f"!{count}I", body, 2)
        else:  # T
            (count,) = _INT16.unpack_from(body, 0)
            pos = 2
            for _ in range(count):
                end = body.index(b"\0", pos)
                column = body[pos:end].decode()
                (oid,) = struct.unpack_from("!I", body, end + 7)
                pos = end + 19
                columns.append(f"{column}:{oid}")
                if oid not in decodes:
                    return None
    if any(oid not in encodes for oid in parameters):
        return None
    return Prepared(name, parameters, tuple(columns))


def decode_rows(rows: list[bytes], decoders: Sequence[Callable[[bytes], Any]]) -> list[list[Any]]:
    """Binary DataRow bodies as lists of Python values (asyncpg's for these types)."""
    out: list[list[Any]] = []
    unpack = _INT.unpack_from
    try:
        for data in rows:
            row: list[Any] = []
            pos = 2
            for decode in decoders:
                (length,) = unpack(data, pos)
                pos += 4
                if length < 0:
                    row.append(None)
                else:
                    row.append(decode(data[pos : pos + length]))
                    pos += length
            out.append(row)
    except (ValueError, OverflowError) as exc:
        # what the pool path's run_prepared makes of a value its codec cannot decode
        raise HeliosError(
            ErrorCode.INVALID_ARGUMENT, f"a parameter does not fit its column type: {exc}"
        ) from None
    return out


class Pipelines:
    """Pipelines per (access, owner): a principal's statements share connections only with
    its own, as a pooled session kept for its owner does (engine/pools.py keep_session).

    Connections open in the background on first need; until one is up, and whenever the
    ones there are busy, :meth:`pick` says None and the caller takes the pool path.
    """

    MAX_OWNERS = 8  # owners with pipelines per process (the least recently used idle
    # owner's close for a new one; when none is idle, the new one takes the pool path)
    PER_OWNER = 2
    # True: an owner starts with one pipeline and gets another (up to PER_OWNER, and
    # while all owners' together stay under MAX_GROWN) each time a pick finds all of its
    # pipelines with statements waiting, so its connection count follows how many of its
    # clients are at work at once
    GROWS = False
    MAX_GROWN = 32
    MAX_IN_FLIGHT = 32  # statements queued on one pipeline
    BUSY_SECONDS = 0.02  # a pipeline whose oldest statement waits this long takes no more

    def __init__(
        self,
        engine: Engine,
        parameters: Mapping[str, str],
        decodes: Collection[int] = DECODERS.keys(),
        encodes: Collection[int] = ENCODERS.keys(),
        one_write: bool = False,
    ) -> None:
        """``decodes``/``encodes``: the column and parameter type oids its statements may
        have (the caller decodes rows and encodes values; default: the tables here).
        ``one_write``: a statement goes to the pipeline that statements of the same loop
        step already wait to be written on, when there is one, rather than to the least
        busy: one write and one wake-up of one backend per step instead of one of each
        (for short statements, where waking a second backend costs more than running
        them one after the other saves), and there they share one Sync (Pipeline's
        ``share_sync``: one transaction start and end, one flush of answers)."""
        self.one_write = one_write
        self.engine = engine
        self.parameters = dict(parameters)
        self.decodes = decodes
        self.encodes = encodes
        self.timeout = engine.settings.query_timeout + 5
        self._open: dict[tuple[Access, str], list[Pipeline]] = {}
        self._opening: set[tuple[Access, str]] = set()
        self._growing: set[tuple[Access, str]] = set()
        self._used: dict[tuple[Access, str], float] = {}  # loop time of the last pick
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.statements = 0  # answered through a pipeline (the caller counts them)

    def stats(self) -> dict[str, int]:
        """Open pipelined connections and the statements they answered (/health)."""
        connections = sum(len(p) for p in self._open.values())
        return {"connections": connections, "statements": self.statements}

    def pick(self, access: Access, owner: str) -> Pipeline | None:
        key = (access, owner)
        pipelines = self._open.get(key)
        if pipelines is None:
            if not self.closed and key not in self._opening and self._room():
                self._start(key)
            return None
        best: Pipeline | None = None
        fewest = 0
        for pipeline in pipelines:  # (their attributes, not the properties: a hot path)
            if pipeline.closed:  # lost, timed out or capped: new ones on the next request
                self._drop(key)
                return None
            if self.one_write and pipeline._out:
                best, fewest = pipeline, len(pipeline._pending)
                break
            waiting = len(pipeline._pending)
            if best is None or waiting < fewest:
                best, fewest = pipeline, waiting
        if best is None or fewest >= self.MAX_IN_FLIGHT:
            return None
        if fewest and self.GROWS and len(pipelines) < self.PER_OWNER:
            self._grow(key)
        now = self._used[key] = best.loop.time()
        if fewest and best._pending[0].deadline - self.timeout + self.BUSY_SECONDS < now:
            return None  # its oldest statement is taking a while: don't queue behind it
        return best

    def prepared_now(
        self, access: Access, owner: str, sql: str, failed: Callable[[], object] | None = None
    ) -> tuple[Pipeline, Prepared] | None:
        """A pipeline to run ``sql`` on at once, with ``sql`` prepared there; None when
        there is none (not open yet, busy) or ``sql`` is not prepared there yet (it is
        prepared in the background; ``failed()`` if the engine refuses it) or takes a type
        outside ``decodes``/``encodes``: the caller's pool path answers meanwhile."""
        pipeline = self.pick(access, owner)
        if pipeline is None:
            return None
        prepared = pipeline.ready(sql)
        if prepared is None:
            self.ready_on(pipeline, sql, failed)  # prepared in the background
            return None
        return pipeline, prepared

    def ready_on(
        self, pipeline: Pipeline, sql: str, failed: Callable[[], object] | None = None
    ) -> Prepared | None:
        """``sql`` prepared on ``pipeline``, or None as ``prepared_now`` says it (and it
        is prepared there in the background)."""
        prepared = pipeline.ready(sql)
        if prepared is None and not pipeline.known(sql) and not self.closed:
            self._spawn(self._prepare(pipeline, sql, failed))
        return prepared

    @staticmethod
    async def _prepare(pipeline: Pipeline, sql: str, failed: Callable[[], object] | None) -> None:
        try:
            await pipeline.prepared(sql)
        except Exception:  # noqa: BLE001 - the pool path runs it and says what is wrong
            if failed is not None:
                failed()

    def _room(self) -> bool:
        """Whether another owner may open pipelines, closing the least recently used
        idle owner's if that makes room."""
        if len(self._open) + len(self._opening) < self.MAX_OWNERS:
            return True
        idle = [k for k, p in self._open.items() if not any(x.in_flight for x in p)]
        if not idle:
            return False
        self._drop(min(idle, key=lambda k: self._used.get(k, 0.0)))
        return True

    def _drop(self, key: tuple[Access, str]) -> None:
        for pipeline in self._open.pop(key, []):
            pipeline.retire()
        self._used.pop(key, None)

    def _start(self, key: tuple[Access, str]) -> None:
        self._opening.add(key)
        self._spawn(self._connect(key))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _grow(self, key: tuple[Access, str]) -> None:
        if key in self._growing or self.closed:
            return
        # the engine's connections are shared with every other user of it (an external
        # engine may allow 100 in all): many busy owners share one bound
        if sum(len(p) for p in self._open.values()) + len(self._growing) < self.MAX_GROWN:
            self._growing.add(key)
            self._spawn(self._add_one(key))

    async def _add_one(self, key: tuple[Access, str]) -> None:
        opened = await self._opened(key, 1, self._growing)
        if opened is None:
            return
        pipelines = self._open.get(key)
        if pipelines is None:  # dropped meanwhile
            opened[0].close()
        else:
            pipelines.extend(opened)

    async def _connect(self, key: tuple[Access, str]) -> None:
        count = 1 if self.GROWS else self.PER_OWNER
        opened = await self._opened(key, count, self._opening)
        if opened is not None:
            self._open[key] = opened

    async def _opened(
        self, key: tuple[Access, str], count: int, marks: set[tuple[Access, str]]
    ) -> list[Pipeline] | None:
        """``count`` new pipelines for ``key``, then ``key`` off ``marks`` (the owners
        being opened or grown); None when the engine refused one (after a second in
        which the pool path serves, with no new attempt at each pick) or this closed."""
        try:
            opened = [await self._open_one(key[0]) for _ in range(count)]
        except Exception as exc:  # noqa: BLE001 - the pool path serves whatever went wrong
            log.warning("no pipelined engine connection: %s %r", exc, getattr(exc, "error", ""))
            await asyncio.sleep(1.0)
            return None
        finally:
            marks.discard(key)
        if self.closed:
            for pipeline in opened:
                pipeline.close()
            return None
        return opened

    async def _open_one(self, access: Access) -> Pipeline:
        session = await open_session(self.engine, access, self.parameters)
        loop = asyncio.get_running_loop()
        pipeline = Pipeline(loop, self.timeout, self.decodes, self.encodes, self.one_write)
        pipeline.session = session
        pipeline.pid, pipeline.secret = session.pid, session.secret
        pipeline.on_timeout = lambda: self._spawn(self.cancel(access, pipeline))
        transport = session.writer.transport
        extra = session.take_buffered()
        transport.set_protocol(pipeline)
        pipeline.connection_made(transport)
        if extra:
            pipeline.data_received(extra)
        pipeline.warm()
        return pipeline

    async def cancel(self, access: Access, pipeline: Pipeline) -> None:
        """Ask the engine to cancel what ``pipeline``'s backend runs (best effort)."""
        with contextlib.suppress(Exception):
            await cancel(self.engine, access, pipeline.pid, pipeline.secret)

    def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for pipelines in self._open.values():
            for pipeline in pipelines:
                pipeline.close()
        self._open.clear()
