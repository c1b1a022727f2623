"""Transaction pooling: engine connections go back to a pool between transactions.

    TxnClient (client socket)  --messages-->  ServerConn (pooled engine socket)
                               <--bytes-----  (scanned for ReadyForQuery and ParseComplete)

Pools are keyed by (engine role, startup parameters), so a client always gets an engine
connection that was started with its own parameters (application_name, TimeZone,
options ...). A client borrows a connection when it sends its first message and gives it
back at a ReadyForQuery with status 'I' once every Query and Sync it sent is answered
and it sent nothing after its last Sync (a pipelined batch still owes its replies there).

Affinity: giving back *parks* the connection: it is free for anyone who needs it, but
stays attached to the client that used it last (``ServerConn.owner``, the client's
``server``). That client's next transaction resumes it with one attribute store, no
pool round trip. A client without a connection takes a free unattached one, else opens
a new one while the pool is below its size, else steals a parked one (detaching it from
its owner, whose next transaction borrows again), else waits; a parked connection goes
to a waiting client at once. A parked connection is at a transaction boundary with no
reply owed, exactly as a returned one was, so what the next client sees is the same.

Protocol-level prepared statements survive the change of connection: each named Parse
is renamed to a name unique on the engine (``hdb_<n>``) and remembered; a Bind or a
statement Describe on a connection that lacks it gets the Parse sent first, and the
extra ParseComplete is dropped from the reply. The client's last unnamed Parse is
replayed the same way (asyncpg sends Parse/Describe/Sync, then Bind/Execute/Sync).

A message is held whole before it is forwarded (to read it), up to
postgres.max_message_bytes, except a long Bind, CopyData or FunctionCall arriving in parts:
that passes on to the client's connection as it arrives (``TxnClient._pass_through``).

With lanes configured (lanes.py), a quick SELECT of a client at a transaction boundary
goes down a lane shared with other clients instead (``TxnClient._to_lane``).

Not carried between connections (documented in docs/postgres.md): session SET/RESET,
LISTEN, SQL PREPARE, temp tables, session advisory locks, WITH HOLD cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

from heliosdb.engine import Access, Engine
from heliosdb.engine.relay import EngineLoginError, EngineSession, cancel, open_session
from heliosdb.interfaces.postgres.codec import CancelKey, encode_error, message
from heliosdb.interfaces.postgres.errors import (
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
)
from heliosdb.interfaces.postgres.lanes import Lane, Lanes, remember_solo, slow_shapes, solo_shapes
from heliosdb.interfaces.postgres.traffic import SocketTraffic, Traffic, traffic_of
from heliosdb.security.principals import Principal

log = logging.getLogger("heliosdb.interfaces.postgres")

MAX_MESSAGE_BYTES = 1 << 30
# A message at least this long that arrives in parts and needs no look past its start
# (CopyData, FunctionCall, a Bind once its portal and statement names have come) goes on to
# the engine connection as it arrives (TxnClient._pass_through), not held whole; others
# are held whole, up to postgres.max_message_bytes.
PASS_ON_BYTES = 1 << 18
_PASSED_ON = frozenset(b"dFB")
_NAMES_WITHIN = 1 << 16  # a Bind whose names have not come in this many bytes is held
MAX_PREPARED_PER_CONNECTION = 500  # past this, a released connection is closed
_ids = itertools.count(1)
_statement_names = itertools.count(1)
_unpack = struct.Struct("!i").unpack_from
_int32 = struct.Struct("!i").pack
_length = struct.Struct("!xi").unpack_from  # a message's length, from the message's offset
# Statements that leave state in the session, which would leak to the next client or be
# lost with the next connection: a client that runs one is pinned to its connection.
# (RESET, UNLISTEN, DISCARD and SET LOCAL/TRANSACTION leave none.)
_SESSION_STATE = re.compile(
    rb"(?:^|;)\s*(?:SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)|LISTEN\b|PREPARE\b|LOAD\b"
    rb"|CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\b|DECLARE\b[^;]*\bWITH\s+HOLD\b)"
    rb"|advisory_lock",  # pg_advisory_lock, pg_try_advisory_lock, their _shared forms
    re.IGNORECASE,
)
# Cheaper than _SESSION_STATE on every query, in any spelling (pg_Advisory_LOCK too).
# Anchored on the underscore, a literal: the search skips to each "_" at C speed and
# looks around it only there (an IGNORECASE "advisory_lock" is tried at every offset).
_ADVISORY_LOCK = re.compile(rb"_(?<=[aA][dD][vV][iI][sS][oO][rR][yY]_)[lL][oO][cC][kK]").search
_FORGET_STATEMENTS = re.compile(
    rb"(?:^|;)\s*(?:DEALLOCATE\s+ALL|DISCARD\s+ALL)\b", re.I
)  # Parse, Bind, Describe, Close: statement names change
# The first word of every statement the two patterns above look for. Most queries are one
# statement starting with another word (SELECT, INSERT, BEGIN ...): one anchored match
# clears them, instead of two searches through the whole text.
_NOTABLE_START = re.compile(
    rb"\s*(?:SET|LISTEN|PREPARE|LOAD|CREATE|DECLARE|DEALLOCATE|DISCARD)\b", re.I
)


def _passable(buffer: bytes | bytearray, pos: int, n: int) -> bool | None:
    """Whether the message at ``pos``, cut at ``n``, may go on before its end has come:
    CopyData, FunctionCall, a Bind whose portal and statement names have come; None: a
    Bind whose names may still come."""
    kind = buffer[pos]
    if kind != 0x42:
        return kind in _PASSED_ON
    portal_end = buffer.find(b"\0", pos + 5, n)
    if portal_end >= 0 and buffer.find(b"\0", portal_end + 1, n) >= 0:
        return True
    return None if n - pos < _NAMES_WITHIN else False


# Usual first words, none of them one of _NOTABLE_START's (nor whitespace): a query that
# starts with one needs no regular expression to be known plain.
_USUAL_STARTS = tuple(
    spelling
    for word in (b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"BEGIN", b"COMMIT", b"END")
    for spelling in (word, word.lower(), word.capitalize())
)
# A ReadyForQuery message before its status byte. A compiled pattern's search takes its
# bounds without the tuple parsing bytes.find does on every call.
_READY = re.compile(b"Z\0\0\0\x05").search
_SEMICOLON = re.compile(b";").search  # bounds taken as bytes.find's are, without its tuple


def _plain_statement(text: bytes, start: int = 0) -> bool:
    """True if ``text[start:]`` (a query, NUL-terminated; start 5: the text of a whole
    Query message, not copied out) is one statement that can neither leave session state
    nor forget prepared statements, known without the full searches.

    ``bytes.find``, not ``in``: ``in`` first tries its operand as an integer and raises
    (and formats) a TypeError inside before searching, a microsecond per query. (One
    regular expression for all three checks was measured: 1,600 instructions more.)"""
    return (
        _SEMICOLON(text, start, len(text) - 2) is None  # else maybe several statements
        and _ADVISORY_LOCK(text, start) is None  # else a session advisory lock
        and (text.startswith(_USUAL_STARTS, start) or _NOTABLE_START.match(text, start) is None)
    )


# Whole Query messages known plain, remembered by shape: the message with every digit made
# "0". Digits change none of _plain_statement's checks (semicolons, "_lock" in any spelling,
# first words, word boundaries) nor the message's length, so the same statement with other
# numbers (pgbench's aid) is one entry, and the Query fast path (TxnClient.data_received)
# costs a translate and a set lookup instead of three searches. A shape also proves the
# chunk one whole Query: it is remembered only from a whole Query whose length bytes hold
# no digit (which the translation could not tell from another), so a chunk of that shape
# has the same length bytes, the same length, and the kind byte Q. Client text, so
# bounded: long queries are not remembered, and the set starts over when full.
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_PLAIN_SHAPES = 1024
_PLAIN_SHAPE_BYTES = 512
_plain_shapes: set[bytes] = set()
_SELECTS = (b"SELECT", b"select", b"Select")
# A row-locking SELECT may wait for another client's transaction, and the Queries queued
# behind it on its lane with it: none of those go down a lane.
_ROW_LOCKS = re.compile(rb"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b", re.I).search


def _plain_query(data: bytes) -> bool:
    """``_plain_statement(data, 5)`` for ``data``, one whole Query message; remembers the
    shape of a plain one that the fast path can recognise."""
    plain = _plain_statement(data, 5)
    if plain and len(data) <= _PLAIN_SHAPE_BYTES and not 0x30 <= data[4] <= 0x39:
        # (Bytes 1 to 3 of a length under 512 are 0 or 1: never a digit.)
        if len(_plain_shapes) >= _PLAIN_SHAPES:
            _plain_shapes.clear()
        _plain_shapes.add(data.translate(_ZERO_DIGITS))
    return plain


def _solo_query(data: bytes, shape: bytes) -> bool:
    """Whether ``data`` (one whole Query of shape ``shape``) may take a lane: one plain
    SELECT that locks no rows (remembered so in ``solo_shapes``) whose shape proves the
    chunk whole."""
    if (
        _unpack(data, 1)[0] != len(data) - 1  # not one whole Query (part of one, or several)
        or not data.startswith(_SELECTS, 5)
        or 0x30 <= data[4] <= 0x39
        or _ROW_LOCKS(data, 5) is not None
        or not _plain_query(data)
    ):
        return False
    remember_solo(shape)
    return True


def _may_take_a_lane(data: bytes, shape: bytes) -> bool:
    """``_solo_query``, remembered: a known solo shape, or a new one that has not run slow."""
    return shape in solo_shapes or (shape not in slow_shapes and _solo_query(data, shape))


# Replies proven plain, remembered whole: whole messages, a ReadyForQuery the last and no
# other (no ReadyForQuery bytes anywhere before it). The same bytes read from a message
# boundary are the same messages, so a reply seen before (a command tag and its
# ReadyForQuery, pgbench's rows) costs one hash and a set lookup instead of the walk over
# its message lengths. Bounded as the shapes are.
_PLAIN_REPLIES = 1024
_PLAIN_REPLY_BYTES = 256
_plain_replies: set[bytes] = set()


def _remember_reply(data: bytes, closing: int) -> None:
    """``data``, whole messages of which the last, at ``closing``, is a ReadyForQuery."""
    if _READY(data, 0, closing) is None:
        if len(_plain_replies) >= _PLAIN_REPLIES:
            _plain_replies.clear()
        _plain_replies.add(data)


# What libpq sends after a Bind to the unnamed portal (PQsendQueryPrepared: pgbench -M
# prepared, psycopg's prepared statements): Describe that portal, Execute it for all rows,
# Sync. A chunk of one such Bind and this tail takes TxnClient._bound_execute.
_BOUND_TAIL = b"D\0\0\0\x06P\0E\0\0\0\x09\0\0\0\0\0S\0\0\0\x04"
_BOUND_TAIL_BYTES = len(_BOUND_TAIL)

# Client messages that leave no reply owed after them: Flush, and COPY data, done and
# fail (answered within the COPY's own Query or Sync).
_UNANSWERED = frozenset(b"Hdcf")
# Replies that close the answer to an extended message (other than ParseComplete and
# CloseComplete, counted where they are matched): BindComplete, RowDescription and NoData
# (Describe), CommandComplete, EmptyQueryResponse, PortalSuspended (Execute).
_ENDINGS = frozenset(b"2TnCIs")

_tasks: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class ServerConn:
    """A pooled engine connection and what this gateway knows of its state."""

    def __init__(self, pool: EnginePool, engine: EngineSession) -> None:
        self.pool = pool
        self.engine = engine
        self.transport = cast(asyncio.Transport, engine.writer.transport)
        self.client: TxnClient | None = None  # the client it serves now; None: parked or free
        self.owner: TxnClient | None = None  # attached to (serving or parked); None: free
        self.pending = 0  # Query and Sync messages not yet answered by ReadyForQuery
        # The client sent extended-protocol messages (Parse, Bind, Execute ...) after its
        # last Sync: their replies come after the ReadyForQuery of that Sync, and the
        # unnamed statement or portal they made lives here; the connection stays. A Query
        # leaves it set: an error in the batch makes the engine skip up to its Sync,
        # Queries too. Replies take the general scan while it is set.
        self.unsynced = False
        # Extended messages (Parse, Bind, Describe, Execute, Close) sent since the last
        # Query or Sync: each is answered by one closing reply (or an error).
        self.owed = 0
        # Queries sent inside a batch (after an extended message, before the batch's
        # Sync), and that Sync: (the number of its ReadyForQuery, ``owed`` before it, a
        # Query). An error of an extended message voids the batch's Queries after it.
        self.batch: deque[tuple[int, int, bool]] = deque()
        self.ended = 0  # closing replies (not dropped ones) since the last ReadyForQuery
        # An extended message sent after every Query and Sync failed: the engine skips
        # what the client sends up to its next Sync (a Query gets no ReadyForQuery).
        self.failed = False
        # Syncs sent since the last Execute (no Query since): if that Execute started a
        # COPY FROM STDIN, the engine ignores them (and answers the Sync after CopyDone).
        self.copy_syncs = 0
        self.prepared: set[str] = set()
        self.inflight: set[str] = set()
        # Per Parse sent: (drop its ParseComplete, engine-side name, the count of
        # ReadyForQuery after which it is void: its Sync's, when an error skipped it).
        self.expect: deque[tuple[bool, str | None, int]] = deque()
        # Per Close sent, as ``expect`` per Parse: (for a statement's, its client, the
        # client's name and entry, restored if the engine skipped the Close; the count of
        # ReadyForQuery after which it is void). Its CloseComplete takes it away.
        self.closing: deque[tuple[tuple[TxnClient, bytes, tuple[str, bytes, bytes]] | None, int]]
        self.closing = deque()
        self.answered = 0  # ReadyForQuery seen by _scan
        self.unnamed_owner: tuple[int, int] | None = None
        self.carry = b""
        self.skip = 0
        # The next reply needs _scan: it continues a cut message (``carry``, ``skip``) or
        # ParseCompletes are expected (``expect``). One flag for the three.
        self.general = False
        self.reply = b""  # the last reply seen before (in _plain_replies) that it sent
        self.closed = False
        self.counted = True  # in the pool's size
        # len(prepared) > MAX_PREPARED_PER_CONNECTION: given back (and closed) when
        # parked, kept up to date where ``prepared`` changes.
        self.give_back = False
        # The client made session state here (SET, LISTEN, temp table ...): it keeps this
        # connection until it leaves, and the connection is closed then, not pooled.
        self.pinned = False

    def expect_parse(self, drop: bool, name: str | None) -> None:
        """A Parse sent: its ParseComplete (dropped from the reply, or not) is expected,
        so replies take the general scan until it came."""
        # The ReadyForQuery owed now come first, then its own Sync's (or Query's).
        self.expect.append((drop, name, self.answered + self.pending + 1))
        self.general = True

    def close_sent(
        self, statement: tuple[TxnClient, bytes, tuple[str, bytes, bytes]] | None
    ) -> None:
        """A Close sent (of a portal, or of an unknown statement: ``statement`` None): its
        CloseComplete is expected, so replies take the general scan until it came."""
        self.closing.append((statement, self.answered + self.pending + 1))
        self.general = True

    def in_batch(self, query: bool) -> None:
        """A Query or Sync (``pending`` counting it) sent while ``unsynced``: a Query is
        logged in ``batch``, and so is a Sync that ends a batch with Queries in flight."""
        if query or self.batch:
            self.batch.append((self.answered + self.pending, self.owed, query))
            self.general = True
        self.owed = 0

    def reopen(self, client: TxnClient, name: bytes, entry: tuple[str, bytes, bytes]) -> None:
        """The engine skipped the Close of ``client``'s statement ``name``: it still has
        it, and so does the client (unless it prepared the name again since)."""
        if client.statements.setdefault(name, entry) is entry:
            self.prepared.add(entry[0])
            self.give_back = len(self.prepared) > MAX_PREPARED_PER_CONNECTION

    def batch_error(self) -> None:
        """An ErrorResponse while ``batch`` is not empty. If the unit being answered is a
        logged Query whose extended messages are not all answered, one of them failed: the
        engine skips the rest of the batch up to its Sync, so the batch's Queries from
        there get no ReadyForQuery; they count as answered (the numbers of the
        ReadyForQuery after them, in ``expect`` and ``batch``, stay right)."""
        batch = self.batch
        number, owed, query = batch[0]
        if number != self.answered + 1 or not query or self.ended >= owed:
            return  # a Query's own error (no skip), or a skip that ends at this Sync
        while batch and batch[0][2]:
            batch.popleft()
            self.pending -= 1
            self.answered += 1
        if not batch:  # the batch's Sync is not sent yet: what comes until then is skipped
            self.failed = True


class _ServerSide(asyncio.Protocol):
    def __init__(self, conn: ServerConn) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        rest: bytes | None = None  # not None: park, then read past these bytes
        if conn.general:
            out, rest = self._scan(data)
        elif data == conn.reply or (len(data) <= _PLAIN_REPLY_BYTES and data in _plain_replies):
            # A reply seen before (from a message boundary, as this one starts): whole
            # messages, one ReadyForQuery and that one last. This connection's last one
            # first: the same reply again (a command tag, pgbench's row) is compared, not
            # hashed.
            conn.reply = out = data
            pending = conn.pending - 1
            conn.pending = pending
            if pending <= 0 and data[-1] == 0x49 and not conn.pinned and not conn.unsynced:
                rest = b""  # 'I': idle, every Query and Sync answered
        else:
            # The common reply: whole messages, no ParseComplete to account for (so no
            # Parse in flight either: each one expected is in ``expect``), at most one
            # ReadyForQuery and that one last. One walk over the message boundaries up to
            # where a closing ReadyForQuery would start, no look at their kinds.
            out = data
            n = len(data)
            pos = 0
            closing = n - 6
            while pos < closing:
                pos += _length(data, pos)[0] + 1
            # A message starts there (the walk went from a boundary), six bytes from the
            # end: a ReadyForQuery if its kind says so (the engine's are 5 bytes long).
            if pos == closing and data[pos] == 0x5A:
                pending = conn.pending - 1
                # No ReadyForQuery before the last message (those bytes inside another
                # message only send the chunk the general way). When one is owed, no
                # other can be real: no need to look.
                if pending and _READY(data, 0, pos) is not None:
                    out, rest = self._scan(data)
                else:
                    conn.pending = pending
                    if pending <= 0 and data[-1] == 0x49 and not conn.pinned and not conn.unsynced:
                        rest = b""  # 'I': idle, every Query and Sync answered
                    if n <= _PLAIN_REPLY_BYTES:
                        _remember_reply(data, pos)
            else:
                headed = n - 5  # a message header starts at or before this offset
                while pos <= headed:
                    pos += _length(data, pos)[0] + 1
                if pos != n or _READY(data) is not None:  # not just rows of a longer reply
                    out, rest = self._scan(data)
        client = conn.client
        if client is None:
            return  # an idle connection's notices and notifications belong to no one
        if client.counted:
            client.bytes_out += len(out)
            client.awaiting = False
        client.transport.write(out)
        if rest is None:
            return
        # Park: the connection is free for anyone who needs it but stays this client's
        # until someone takes it (given back at once to a waiting client, or when it
        # holds too many statements).
        conn.client = None
        if client.pool.waiters or conn.give_back:
            client.release()
        if rest:
            # Owed to no client (nothing is, once every Sync is answered): only an
            # asynchronous notice could follow. Read past it to keep the framing.
            self._scan(rest)

    def _scan(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Any reply: split chunks, dropped ParseCompletes, several ReadyForQuery. What
        to send the client, and None or (when a ReadyForQuery lets the connection be
        parked) the bytes after it."""
        conn = self.conn
        if conn.carry:
            data, conn.carry = conn.carry + data, b""
        n = len(data)
        pos, start, skip = 0, 0, conn.skip
        kept: list[bytes] = []
        rest = None
        # Closing replies are counted, and errors looked at, only while a batch is open
        # (only a client's messages open one: it stays so through this scan).
        counting = conn.unsynced or conn.batch
        while pos < n:
            if skip:
                take = min(skip, n - pos)
                pos += take
                skip -= take
                continue
            kind = data[pos]
            if n - pos < 5 or (kind == 0x5A and n - pos < 6):
                conn.carry = data[pos:]
                n = pos
                break
            end = pos + 1 + _unpack(data, pos + 1)[0]
            if kind == 0x31:  # ParseComplete
                drop, name, _ = conn.expect.popleft() if conn.expect else (False, None, 0)
                if name is not None:
                    conn.inflight.discard(name)
                    conn.prepared.add(name)
                    conn.give_back = len(conn.prepared) > MAX_PREPARED_PER_CONNECTION
                if drop:
                    kept.append(data[start:pos])
                    start = end
                elif counting:
                    conn.ended += 1
            elif kind == 0x5A:  # ReadyForQuery
                conn.pending -= 1
                # Parses of the batch this ends that got no ParseComplete (an error made
                # the engine skip them) are not coming; later batches' still are.
                answered = conn.answered = conn.answered + 1
                expect = conn.expect
                while expect and expect[0][2] <= answered:
                    gone = expect.popleft()[1]
                    if gone is not None:
                        conn.inflight.discard(gone)
                closing = conn.closing
                while closing and closing[0][1] <= answered:
                    skipped = closing.popleft()[0]  # an error made the engine skip it
                    if skipped is not None:
                        conn.reopen(*skipped)
                if counting:
                    conn.ended = 0
                    batch = conn.batch
                    while batch and batch[0][0] <= answered:
                        if batch.popleft()[2] and data[pos + 5] == 0x54:
                            # A Query of the batch ran, in the batch's transaction ('T'):
                            # the engine ends such a batch at its Sync in a state its
                            # next statement fails on (XX000 "StartTransactionCommand:
                            # unexpected state STARTED"); that stays with this client.
                            conn.pinned = True
                if (
                    conn.pending <= 0
                    and data[pos + 5] == 0x49  # 'I'
                    and not conn.pinned
                    and not conn.unsynced
                ):
                    rest = data[end:]
                    n = end
                    break
            elif kind == 0x33:  # CloseComplete
                conn.ended += 1
                if conn.closing:
                    conn.closing.popleft()
            elif counting:
                if kind in _ENDINGS:
                    conn.ended += 1
                elif kind == 0x45:  # ErrorResponse
                    if conn.batch:
                        conn.batch_error()
                    elif conn.pending <= 0 and conn.unsynced:
                        # Of an extended message sent after every Query and Sync (their
                        # replies all came): the engine skips up to the client's next Sync.
                        conn.failed = True
            if end > n:
                skip = end - n
                pos = n
            else:
                pos = end
        conn.skip = skip
        conn.general = bool(
            skip or conn.carry or conn.expect or conn.unsynced or conn.batch or conn.closing
        )
        if kept:
            kept.append(data[start:n])
            return b"".join(kept), rest
        return (data[start:n] if (start or n != len(data)) else data), rest

    def pause_writing(self) -> None:
        if self.conn.client is not None:
            self.conn.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.conn.client is not None:
            with contextlib.suppress(RuntimeError):
                self.conn.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        conn.closed = True
        conn.pool.discard(conn)
        if conn.client is not None:
            conn.client.transport.close()
        elif conn.owner is not None:
            # Parked: its client owes nothing here and borrows another next time.
            conn.owner.server = None
            conn.owner = None


class EnginePool:
    """Engine connections for one (role, startup parameters) pair."""

    def __init__(
        self,
        engine: Engine,
        access: Access,
        parameters: dict[str, str],
        max_size: int,
        max_message: int = MAX_MESSAGE_BYTES,
        lanes: int = 0,
    ) -> None:
        self.engine = engine
        self.access = access
        self.parameters = parameters
        self.max_size = max_size
        self.max_message = max_message  # the longest message held whole
        self.idle: list[ServerConn] = []  # free: attached to no client
        self.members: list[ServerConn] = []  # every open connection, parked ones included
        self.size = 0
        self.waiters: deque[asyncio.Future[ServerConn]] = deque()
        self.status: dict[str, str] = {}  # ParameterStatus of the first connection
        self.waits = 0  # acquisitions that had to wait for a connection
        # Quick SELECTs of several clients on shared engine connections (lanes.py).
        self.lanes = Lanes(engine, access, parameters, lanes) if lanes else None

    def take_idle(self) -> ServerConn | None:
        """A free connection right now, without waiting; when the pool is full, a parked
        one taken from its owner. None: open one (``acquire``) or wait."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return self.steal() if self.size >= self.max_size else None

    def steal(self) -> ServerConn | None:
        """A parked connection, detached from its owner (the longest-open one first)."""
        for conn in self.members:
            owner = conn.owner
            if owner is not None and conn.client is None and not conn.closed:
                owner.server = None
                conn.owner = None
                with contextlib.suppress(RuntimeError):
                    conn.transport.resume_reading()  # its owner's client may have paused it
                return conn
        return None

    async def acquire(self, timeout: float) -> ServerConn:
        conn = self.take_idle()
        if conn is not None:
            return conn
        if self.size < self.max_size:
            self.size += 1
            try:
                return await self._open()
            except BaseException:
                self.size -= 1
                raise
        conn = self.steal()  # parked meanwhile (while another connection was opening)
        if conn is not None:
            return conn
        waiter: asyncio.Future[ServerConn] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.waits += 1
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    async def _open(self) -> ServerConn:
        session = await open_session(self.engine, self.access, self.parameters)
        conn = ServerConn(self, session)
        if not self.status:
            self.status = dict(session.parameters)
        session.take_buffered()
        conn.transport.set_protocol(_ServerSide(conn))
        with contextlib.suppress(RuntimeError, AttributeError):
            conn.transport.resume_reading()
        self.members.append(conn)
        return conn

    def release(self, conn: ServerConn) -> None:
        """``conn`` is free (at a transaction boundary, attached to no client)."""
        conn.client = conn.owner = None
        if conn.closed:
            return
        if len(conn.prepared) > MAX_PREPARED_PER_CONNECTION:
            conn.transport.close()  # connection_lost discards it
            return
        with contextlib.suppress(RuntimeError):
            conn.transport.resume_reading()  # its last client's may have paused it
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: ServerConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn in self.members:
            self.members.remove(conn)
        if conn.counted:
            conn.counted = False
            self.size -= 1
        conn.closed = True
        conn.transport.abort()

    def close(self) -> None:
        for conn in list(self.members):
            conn.transport.abort()
        self.idle.clear()
        if self.lanes is not None:
            self.lanes.close()


class TxnClient(asyncio.Protocol):
    """One client in transaction mode: reads whole messages, borrows engine connections."""

    def __init__(
        self,
        principal: Principal,
        key: CancelKey,
        pool: EnginePool,
        transport: asyncio.Transport,
        pool_timeout: float,
        on_end: Callable[[TxnClient, bool], None],
    ) -> None:
        self.id = next(_ids)
        self.principal = principal
        self.pool = pool
        self.transport = transport
        self.pool_timeout = pool_timeout
        self._on_end = on_end
        self.key = key
        self.server: ServerConn | None = None
        self.buffer = bytearray()
        self.max_message = pool.max_message
        # Bytes of the last message forwarded still to come from the client, passed on as
        # they arrive (_pass_through); the data_received to go back to after them.
        self.passing = 0
        self.passing_copy = False  # it is CopyData
        self.received: Callable[[bytes], None] = self.data_received
        self.acquiring = False
        # Client name -> (engine-side name, its Parse, that name encoded).
        self.statements: dict[bytes, tuple[str, bytes, bytes]] = {}
        self.unnamed = b""
        self.unnamed_seq = 0
        self.shape = b""  # the shape of its last Query that took the fast path
        self.bytes_in = 0
        self.bytes_out = 0
        self.round_trips = 0
        self.awaiting = False  # the client spoke last: a statement may be running
        # The kernel's counters of the client socket (plain TCP, no idle sweep): then the
        # callbacks count nothing (``counted`` False).
        self.kernel_traffic: SocketTraffic | None = None
        self.counted = True
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lanes = pool.lanes
        self.lane: Lane | None = None  # the lane its Queries in flight went down
        self.in_lane = 0  # how many
        self.paused_lane: Lane | None = None  # whose reading it paused (not reading itself)

    def start(self, buffered: bytes, kernel_counts: bool = False) -> None:
        """Relay from now on. ``kernel_counts``: let the kernel count the traffic if the
        client socket allows it (plain TCP)."""
        if kernel_counts:
            self.kernel_traffic = SocketTraffic.of_plain(self.transport)
            self.counted = self.kernel_traffic is None
        if self.counted:
            # Read by the transport at set_protocol, as relay._Spliced's is.
            self.data_received = self._count_received  # type: ignore[method-assign]
            self.received = self._count_received
        self.transport.set_protocol(self)
        if buffered:
            self.data_received(buffered)
        if not self.acquiring:  # else reading resumes when the borrow ends
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    def pause_writing(self) -> None:
        lane = self.lane
        if lane is not None:
            # The lane waits for this client to read (the other clients on it too): what
            # it holds stays bounded, and a lane that waits takes no new queries.
            lane.transport.pause_reading()
            self.paused_lane = lane
        elif self.server is not None:
            self.server.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.paused_lane is not None:
            self._resume_lane()
        if self.server is not None:
            with contextlib.suppress(RuntimeError):
                self.server.transport.resume_reading()

    def _resume_lane(self) -> None:
        lane, self.paused_lane = self.paused_lane, None
        if lane is not None and not lane.closed:
            with contextlib.suppress(RuntimeError):
                lane.transport.resume_reading()

    # client -> engine

    def _count_received(self, data: bytes) -> None:
        """``data_received`` of a client the kernel does not count for us."""
        self.bytes_in += len(data)
        self.round_trips += 1
        self.awaiting = True
        TxnClient.data_received(self, data)

    def data_received(self, data: bytes) -> None:
        n = len(data)
        server = self.server
        if self.lanes is not None and self._to_lane(data, n, server):
            return
        if (
            server is not None
            and data[0] == 0x51  # Query
            and n <= _PLAIN_SHAPE_BYTES
            and not self.buffer
        ):
            shape = data.translate(_ZERO_DIGITS)
            if (shape == self.shape or shape in _plain_shapes) and not server.unsynced:
                # The common case: one whole simple Query (its shape says so), known plain,
                # on this client's connection: forward it as it came, no buffering, no copy.
                # This client's last shape first: compared, not hashed.
                self.shape = shape
                server.client = self  # this client's connection (resumed if parked)
                server.pending += 1
                server.copy_syncs = 0
                server.transport.write(data)
                return
        if n >= 6 and not self.buffer:
            kind = data[0]
            if kind == 0x42:
                if self._bound_execute(data, n):
                    return  # the common extended-protocol chunk (Bind, Describe, Execute, Sync)
            elif kind == 0x51 and not self.acquiring and _unpack(data, 1)[0] == n - 1:
                # One whole simple Query otherwise: forwarded as it came too.
                if server is None:
                    server = self.pool.take_idle()
                    if server is not None:
                        server.client = server.owner = self
                        self.server = server
                elif server.unsynced:
                    server = None  # inside a batch: pump logs it
                elif server.client is None:
                    server.client = self  # this client's parked connection, resumed
                if server is not None:
                    server.pending += 1
                    server.copy_syncs = 0
                    if not _plain_query(data):
                        self._check_query(server, data[5:])
                    server.transport.write(data)
                    return
        if self.buffer:
            self.buffer += data
            self.pump()
        else:
            self.pump(data)  # whole messages are taken from the chunk itself, not copied

    def _to_lane(self, data: bytes, n: int, server: ServerConn | None) -> bool:
        """Send ``data`` down a lane, or hold it behind this client's queries on one; False:
        the pool's way."""
        lane = self.lane
        if lane is not None:
            # Its earlier Queries are on that lane: what it sends now comes after their
            # replies, so a quick SELECT follows them there, anything else waits for them.
            if data[0] == 0x51 and n <= _PLAIN_SHAPE_BYTES and not self.buffer:
                shape = data.translate(_ZERO_DIGITS)
                if _may_take_a_lane(data, shape):
                    lane.send(self, data, shape)
                    return True
            self.buffer += data
            self.transport.pause_reading()
            return True
        if (
            data[0] != 0x51
            or n > _PLAIN_SHAPE_BYTES
            or self.buffer
            or self.acquiring
            or (server is not None and server.client is not None)  # in a transaction
        ):
            return False
        shape = data.translate(_ZERO_DIGITS)
        if not _may_take_a_lane(data, shape):
            return False
        lane = cast(Lanes, self.lanes).pick()
        if lane is None:
            return False
        lane.send(self, data, shape)
        return True

    def lane_reply(self, data: bytes) -> None:
        """Bytes of the reply to its Query at the head of its lane."""
        if not self.done.done():
            if self.counted:
                self.bytes_out += len(data)
                self.awaiting = False
            self.transport.write(data)

    def lane_done(self) -> None:
        """Its Query at the head of its lane is answered (its ReadyForQuery sent)."""
        self.in_lane -= 1
        if self.in_lane:
            return
        self.lane = None
        if self.buffer and not self.done.done():  # held behind the lane's replies: on its way now
            held = bytes(self.buffer)
            self.buffer.clear()
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()
            TxnClient.data_received(self, held)

    def lane_lost(self) -> None:
        """Its lane's engine connection closed with its Query unanswered."""
        self.in_lane = 0
        self.lane = None
        if not self.done.done():
            self._fatal("08006", "the engine connection serving this query was lost")

    def _bound_execute(self, data: bytes, n: int) -> bool:
        """The common extended-protocol chunk, one Bind of a named statement to the
        unnamed portal and ``_BOUND_TAIL``, on a connection of this client's that has the
        statement: forwarded with the statement's engine-side name, leaving the
        connection as ``pump`` would. False (nothing done): anything else, for ``pump``."""
        server = self.server
        tail = n - _BOUND_TAIL_BYTES
        if (
            server is None
            or server.unsynced  # inside a batch: pump logs its Sync
            or data[5] != 0  # a named portal
            or _unpack(data, 1)[0] != tail - 1  # not a Bind, then the tail alone
            or data[tail:] != _BOUND_TAIL
        ):
            return False
        name_end = data.find(b"\0", 6, tail)
        entry = self.statements.get(data[6:name_end]) if name_end > 6 else None
        if entry is None or entry[0] not in server.prepared:
            return False  # the unnamed statement, or one to prepare here first: pump
        server.client = self  # this client's connection (resumed if parked)
        server.pending += 1  # the Sync's ReadyForQuery
        server.copy_syncs = 1  # the Sync after the Execute
        encoded = entry[2]  # the Bind renamed, its length with it, then the tail as it came
        length = _int32(tail - name_end + len(encoded) + 5)
        server.transport.write(b"".join((b"B", length, b"\0", encoded, data[name_end:])))
        return True

    def pump(self, chunk: bytes | None = None) -> None:
        """Forward the whole messages of ``chunk`` (or of the buffer), rewriting statement
        names; an incomplete tail waits in the buffer."""
        buffer: bytes | bytearray = self.buffer if chunk is None else chunk
        out = bytearray()
        pos, start, n = 0, 0, len(buffer)  # buffer[start:pos] passes through unchanged
        server = self.server
        limit = self.max_message
        passing = 0  # the last message forwarded is this many bytes short
        while n - pos >= 5:
            length = _unpack(buffer, pos + 1)[0]
            if not 4 <= length <= limit:
                if not 4 <= length <= MAX_MESSAGE_BYTES:
                    self._fatal(PROTOCOL_VIOLATION, "invalid message length")
                    return
                if buffer[pos] not in _PASSED_ON:
                    self._too_long(length, pos + 1 + length - n)
                    return
            end = pos + 1 + length
            if end > n:
                if length < PASS_ON_BYTES:
                    break  # held until whole
                passable = _passable(buffer, pos, n)
                if not passable:
                    if passable is None or length <= limit:
                        break  # held until whole (or until a Bind's names have come)
                    self._too_long(length, end - n)
                    return
                passing = end - n
                end = n
            kind = buffer[pos]
            if kind == 0x58:  # Terminate: the session ends here, never forwarded
                self.terminate_client()
                return
            if server is None:
                # While a borrow is under way the messages wait for its connection: one
                # taken here too would be overwritten by it, its replies sent astray.
                server = None if self.acquiring else self.pool.take_idle()
                if server is None:
                    self._borrow()
                    break
                server.client = server.owner = self
                self.server = server
            elif server.client is None:
                server.client = self  # this client's parked connection, resumed
            if (
                kind == 0x42
                or kind == 0x50
                or (  # Bind, Parse, statement Describe/Close
                    (kind == 0x44 or kind == 0x43) and length > 4 and buffer[pos + 5] == 0x53
                )
            ):
                if pos > start:
                    out += buffer[start:pos]
                out += self._translate(kind, bytes(buffer[pos:end]), passing)
                start = end
            if kind == 0x53:  # Sync: a ReadyForQuery
                server.pending += 1
                if server.batch:  # the end of a batch with Queries in flight
                    server.in_batch(False)
                server.owed = 0
                server.unsynced = server.failed = False
                server.copy_syncs += 1
            elif kind == 0x51 or kind == 0x46:
                # Query, FunctionCall (libpq's PQfn: the large-object calls): answered by
                # one ReadyForQuery, unless the engine skips it (as a Query, in a failed
                # batch); neither opens a batch, nor can its error start a skip.
                if not server.failed:
                    server.pending += 1
                    if server.unsynced:  # inside a batch
                        server.in_batch(True)
                    server.copy_syncs = 0
                    if kind == 0x51:
                        self._check_query(server, bytes(buffer[pos + 5 : end]))
            elif kind not in _UNANSWERED:
                owed = server.owed
                if not owed:  # the first since a Query or Sync: replies take _scan
                    server.unsynced = server.general = True
                    if server.pending <= 0:
                        server.ended = 0  # replies from here on are this batch's
                server.owed = owed + 1
                if kind == 0x45:  # Execute
                    server.copy_syncs = 0
                elif kind == 0x43 and (length == 4 or buffer[pos + 5] != 0x53):
                    server.close_sent(None)  # a portal's
            elif kind == 0x63 or kind == 0x66:  # CopyDone, CopyFail
                # The Syncs sent during the COPY get no ReadyForQuery (the engine ignores
                # them in COPY FROM STDIN; libpq sends one after Execute and one after
                # CopyDone): without this the connection would never be released.
                server.pending -= server.copy_syncs
                server.copy_syncs = 0
            pos = end
        if pos > start:
            out += buffer[start:pos]
        if chunk is None:
            if pos:
                del self.buffer[:pos]
        elif pos < n:
            self.buffer += chunk[pos:]
        if out and server is not None:
            server.transport.write(out)
        if passing and pos == n:  # (not waiting for a connection instead)
            self._pass_on(passing, kind == 0x64)

    def _too_long(self, length: int, rest: int) -> None:
        """FATAL 54000 for a message longer than the port holds, of which ``rest`` bytes
        are still to come: they are read and dropped, then the connection closes (closed
        with them unread, it would be reset, and the client could lose the error)."""
        self.transport.write(
            encode_error(
                PROGRAM_LIMIT_EXCEEDED,
                f"message of {length + 1} bytes is longer than the {self.max_message} "
                "bytes (postgres.max_message_bytes) this port holds",
            )
        )
        if rest <= 0:
            self.terminate_client()
            return
        self.passing = rest
        self.data_received = self._drop  # type: ignore[method-assign]
        self.transport.set_protocol(self)

    def _drop(self, data: bytes) -> None:
        self.passing -= len(data)
        if self.passing <= 0:
            self.terminate_client()

    def _pass_on(self, rest: int, copy_data: bool) -> None:
        """The last message forwarded is ``rest`` bytes short: the client's next bytes go
        straight to its engine connection (``_pass_through``) until it is whole.

        A FunctionCall (a ReadyForQuery owed) or a Bind (a batch open) keeps the
        connection with the client until it is answered. CopyData outside a COPY, after
        a Query not yet answered, would let the connection be parked, and taken by
        another client, halfway: one more ReadyForQuery counts as owed until it is whole."""
        server = self.server
        assert server is not None
        self.passing = rest
        self.passing_copy = copy_data
        if copy_data:
            server.pending += 1
        self.data_received = self._pass_through  # type: ignore[method-assign]
        self.transport.set_protocol(self)

    def _pass_through(self, data: bytes) -> None:
        n = len(data)
        if self.counted:
            self.bytes_in += n
            self.round_trips += 1
            self.awaiting = True
        rest = self.passing
        server = self.server  # None once the session ended
        if n < rest:
            self.passing = rest - n
            if server is not None:
                server.transport.write(data)
            return
        self.passing = 0
        if server is not None:
            server.transport.write(data if n == rest else data[:rest])
            if self.passing_copy:
                server.pending -= 1  # whole: the ReadyForQuery counted as owed is not
        self.data_received = self.received  # type: ignore[method-assign,assignment]
        self.transport.set_protocol(self)
        if n > rest:
            TxnClient.data_received(self, data[rest:])

    def _translate(self, kind: int, msg: bytes, to_come: int = 0) -> bytes:
        server = self.server
        assert server is not None
        if kind == 0x50:  # Parse
            end = msg.index(b"\0", 5)
            name = msg[5:end]
            query = msg[end + 1 :]
            if not server.pinned and not _plain_statement(query) and _SESSION_STATE.search(query):
                server.pinned = True
            if not name:
                self.unnamed = msg
                self.unnamed_seq += 1
                server.unnamed_owner = (self.id, self.unnamed_seq)
                server.expect_parse(False, None)
                return msg
            renamed = f"hdb_{next(_statement_names)}"
            encoded = renamed.encode()
            parse = message(b"P", encoded + msg[end:])
            self.statements[name] = (renamed, parse, encoded)
            server.inflight.add(renamed)
            server.expect_parse(False, renamed)
            return parse
        if kind == 0x42:  # Bind: portal, statement, ...
            portal_end = msg.index(b"\0", 5)
            end = msg.index(b"\0", portal_end + 1)
            prefix, target = self._statement(msg[portal_end + 1 : end])
            if target is None:
                return prefix + msg
            body = msg[5 : portal_end + 1] + target + msg[end:]
            # (Its length with the bytes still to come of a Bind passed on.)
            return prefix + b"B" + _int32(len(body) + 4 + to_come) + body
        if kind == 0x44 and msg[5:6] == b"S":  # Describe statement
            prefix, target = self._statement(msg[6:-1])
            if target is None:
                return prefix + msg
            return prefix + message(b"D", b"S" + target + b"\0")
        if kind == 0x43 and msg[5:6] == b"S":  # Close statement
            name = msg[6:-1]
            entry = self.statements.pop(name, None)
            if entry is None:
                server.close_sent(None)
                return msg
            server.close_sent((self, name, entry))
            server.prepared.discard(entry[0])
            server.give_back = len(server.prepared) > MAX_PREPARED_PER_CONNECTION
            return message(b"C", b"S" + entry[2] + b"\0")
        return msg

    def _check_query(self, server: ServerConn, text: bytes) -> None:
        if _plain_statement(text):
            return
        if not server.pinned and _SESSION_STATE.search(text):
            server.pinned = True
        if _FORGET_STATEMENTS.search(text):
            # The engine forgets every prepared statement of this connection.
            server.prepared.clear()
            server.give_back = False
            server.unnamed_owner = None

    def _statement(self, name: bytes) -> tuple[bytes, bytes | None]:
        """(Parse to send first or b"", the engine-side name or None to keep it)."""
        server = self.server
        assert server is not None
        if not name:
            if self.unnamed and server.unnamed_owner != (self.id, self.unnamed_seq):
                server.unnamed_owner = (self.id, self.unnamed_seq)
                server.expect_parse(True, None)
                return self.unnamed, None
            return b"", None
        entry = self.statements.get(name)
        if entry is None:
            return b"", None
        renamed, parse, encoded = entry
        if renamed in server.prepared or renamed in server.inflight:
            return b"", encoded
        server.inflight.add(renamed)
        server.expect_parse(True, renamed)
        return parse, encoded

    def _borrow(self) -> None:
        if self.acquiring:
            return
        self.acquiring = True
        self.transport.pause_reading()
        _spawn(self._acquire())

    async def _acquire(self) -> None:
        try:
            server = await self.pool.acquire(self.pool_timeout)
        except TimeoutError:
            self._fatal(
                TOO_MANY_CONNECTIONS,
                f"no engine connection became free within {self.pool_timeout:g} s",
            )
            return
        except EngineLoginError as exc:
            log.warning("engine login failed: %s", exc)
            self._fatal("57P03", "the engine is not available")
            return
        finally:
            self.acquiring = False
        if self.done.done():
            self.pool.release(server)
            return
        server.client = server.owner = self
        self.server = server
        with contextlib.suppress(RuntimeError):
            self.transport.resume_reading()
        self.pump()

    def release(self) -> None:
        """Detach the engine connection (parked or done with) and give it back."""
        server, self.server = self.server, None
        if server is not None:
            self.pool.release(server)
        if self.buffer and not self.done.done():
            self.pump()

    def traffic(self) -> Traffic:
        """Bytes from and to the client and client writes relayed, so far."""
        return traffic_of(self.kernel_traffic, self.bytes_in, self.bytes_out, self.round_trips)

    # endings

    def _fatal(self, sqlstate: str, text: str) -> None:
        self.transport.write(encode_error(sqlstate, text))
        self.terminate_client()

    def terminate_client(self) -> None:
        self.transport.close()
        self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if self.done.done():
            return
        self.done.set_result(None)
        # Its Queries still on a lane run to their end (quick ones: cancelling could hit
        # the next client's); their replies go nowhere (``done`` is set).
        self._resume_lane()
        if self.kernel_traffic is not None:
            self.kernel_traffic.close()  # the last counts; the socket may go
        server, self.server = self.server, None
        if server is not None and server.client is None:
            self.pool.release(server)  # parked: at a transaction boundary, owing nothing
        elif server is not None:
            # Mid-transaction or mid-query: cancel what runs and drop the connection.
            server.client = server.owner = None
            if server.pending > 0:
                engine = server.engine
                _spawn(cancel(self.pool.engine, self.pool.access, engine.pid, engine.secret))
            self.pool.discard(server)
        self._on_end(self, False)

    def expire(self, error: bytes) -> None:
        """Tell the (idle) client why, then end the session."""
        self.transport.write(error)
        self.terminate_client()

    def terminate(self) -> None:
        self.transport.abort()
        self._end()

    async def cancel_running(self) -> None:
        lane = self.lane
        if lane is not None:
            await lane.cancel_head(self)
            return
        server = self.server
        if server is not None and server.pending > 0:
            await cancel(self.pool.engine, self.pool.access, server.engine.pid,
                         server.engine.secret)  # fmt: skip
