"""A find's result read from the engine a batch at a time (MongoDB cursors, issue 5).

A find first runs its plain statement with a LIMIT of the batch plus one row (a probe,
store._find_rows: a result that fits needs nothing more, and no connection is held).
When that many rows come back, a Stream reads them again in a total order (``_id``
breaks ties, and orders a find without a sort) and the rest through an engine cursor
(a portal) in the same order, starting after the rows already read (OFFSET), so it
reads on exactly where the first read stopped when nothing was written in between. The
portal lives on a connection of the principal's role, in a read-only REPEATABLE READ
transaction opened at the first getMore that needs it and ended when the rows run out
or the cursor is closed; inside a client's transaction, on that transaction's own
connection. A
stream that may not hold a connection (``Slots`` full) reads each batch with a
statement of its own, OFFSET the rows already read: it works, each batch re-reads the
rows before it, and writes between batches may shift rows across a boundary (which
MongoDB allows for a cursor outside a snapshot).

A filter the engine only narrows (filters.py ``recheck``) reads candidates and keeps
those ``matcher`` confirms; skip and limit then count confirmed documents, here, per
batch. A projection is applied to each batch as it is read. An aggregate whose later
stages all stream reads the same way, those stages (a ``Transform``) applied to each
chunk read: its documents are then kept when given back (``unread``), not re-read.
A ``$group`` the engine runs is read the same way, its rows in the order of their keys
(pushdown.group_rows), decoded into documents as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg

from heliosdb.engine import Access, Engine, EngineConnection
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import invalid
from heliosdb.security.principals import Principal
from heliosdb.services.documents import bsonform, matcher, projection, transactions

# Rows read per engine round trip when a reply is bounded by bytes only (getMore
# without batchSize) or a rechecked filter needs more candidates than documents.
CHUNK_ROWS = 1000
# Rows a find reads at first when the caller does not know its first batch (the MongoDB
# hot path, which answers a result of up to 1024 documents without a cursor): a result
# of more is streamed, and the caller sees more than 1024.
PROBE_ROWS = 1025
DEFAULT_HELD_STREAMS = 4
MISSING_TABLE = (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError)

# (offset, row count or 0 for all) -> the SQL and values reading those rows
Statement = Callable[[int, int], tuple[str, list[Any]]]
# runs a statement on a pooled connection of the principal (store._find_rows's way)
OneShot = Callable[[str, list[Any]], Any]


class Transform(Protocol):
    """What an aggregate's later stages make of the documents read (pipeline.Chunked):
    ``done`` once a ``$limit`` among them has all it takes."""

    done: bool

    def __call__(self, items: list[Any]) -> Awaitable[list[Any]]: ...


class Slots:
    """How many streams may hold an engine connection at once, per pool (access level):
    the rest read each batch with a statement of their own, so open cursors cannot
    starve the pool (settings: mongodb.max_streaming_cursors)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used: dict[Access, int] = {}

    def take(self, access: Access) -> bool:
        used = self.used.get(access, 0)
        if used >= self.limit:
            return False
        self.used[access] = used + 1
        return True

    def give(self, access: Access) -> None:
        self.used[access] -= 1


class Streamed(list[Any]):
    """The first documents of a result that has more: ``stream`` reads on."""

    __slots__ = ("stream",)

    def __init__(self, items: list[Any], stream: Stream) -> None:
        super().__init__(items)
        self.stream = stream


async def first(stream: Stream, count: int) -> list[Any]:
    """The first ``count`` documents of ``stream``: a plain list when that is all of
    them, else a ``Streamed`` one."""
    try:
        items = await stream.fetch(count)
    except BaseException:
        await stream.close()
        raise
    return items if stream.done else Streamed(items, stream)


class Stream:
    """The rest of one find: ``fetch`` reads on, ``close`` gives back what it holds."""

    def __init__(
        self,
        engine: Engine,
        principal: Principal,
        statement: Statement,
        one_shot: OneShot,
        *,
        recheck: dict[str, Any] | None,
        skip: int,
        limit: int,
        fields: dict[str, Any] | None,
        spec: dict[str, Any] | None,
        slots: Slots,
        transform: Transform | None = None,
        decode: Callable[[list[Any]], list[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.principal = principal
        self._statement = statement
        self._one_shot = one_shot
        # a rechecked filter: the spec to confirm rows with, and skip/limit still to apply
        self._recheck = recheck
        self._skip = skip if recheck is not None else 0
        self._limit = limit if recheck is not None else 0
        # the statement's own LIMIT (no recheck): the rows it can return at most
        self._total = limit if recheck is None else 0
        self._fields = fields
        self._spec = spec
        self._slots = slots
        # an aggregate's streaming stages: documents are no longer rows (not re-read by
        # OFFSET), and a $limit among them may end the stream
        self._transform = transform
        # rows to items, one for one (an engine-run $group's rows); else each row's bson
        self._decode = decode
        self.offset = 0  # engine rows read so far
        self.exhausted = False
        self.pending: list[Any] = []  # read but not yet returned (a probe, a cut batch)
        self.txn = transactions.current()
        self._lease: Any = None
        self._conn: EngineConnection | None = None
        self._transaction: Any = None
        self._portal: Any = None
        self._slot = False
        self._probed = False
        self._lock = asyncio.Lock()

    @property
    def done(self) -> bool:
        return self.exhausted and not self.pending

    @property
    def holds(self) -> bool:
        """Whether an engine connection (outside a client transaction) is held."""
        return self._lease is not None

    def stale(self) -> bool:
        """Opened in a client transaction that has ended: its portal is gone."""
        return self.txn is not None and self.txn.finished

    def unread(self, items: list[Any], *, keep: bool = True) -> None:
        """Give back ``items`` (the last ones read) for the next fetch; unless ``keep``,
        when there is no portal and no recheck, by reading them again (OFFSET)."""
        if not items:
            return
        if (
            not keep
            and self._recheck is None
            and self._transform is None
            and self._portal is None
            and not self.pending
        ):
            self.offset -= len(items)
            self.exhausted = False
            return
        self.pending[:0] = items

    async def fetch(self, count: int) -> list[Any]:
        """Up to ``count`` (> 0) documents, fewer only at the end."""
        if self.txn is not None and transactions.current() is not self.txn:
            raise invalid(
                "a cursor opened in a transaction is read inside that transaction",
                kind="operation_not_supported_in_transaction",
            )
        async with self._lock:
            out = self.pending[:count]
            del self.pending[:count]
            while len(out) < count and not self.exhausted:
                need = count - len(out)
                plain = self._recheck is None and self._transform is None
                rows = await self._read(need if plain else CHUNK_ROWS)
                items = self._shape(rows)
                if self._transform is not None:
                    items = await self._transform(items)
                    if self._transform.done:
                        self.exhausted = True
                out.extend(items[:need])
                self.pending.extend(items[need:])
            if self.exhausted:
                await self._release(clean=True)
            return out

    def _shape(self, rows: list[Any]) -> list[Any]:
        if self._recheck is not None:
            rows = matcher.recheck(rows, self._recheck, 0, 0)
            if self._skip:
                dropped = min(self._skip, len(rows))
                self._skip -= dropped
                rows = rows[dropped:]
            if self._limit:
                rows = rows[: self._limit]
                self._limit -= len(rows)
                if not self._limit:
                    self.exhausted = True
        if not self._fields:
            return rows
        return [projection.project(bsonform.decode(r), self._fields, self._spec) for r in rows]

    async def _read(self, count: int) -> list[Any]:
        """The next ``count`` engine rows: the first read (the probe) on a pooled
        connection, later ones from the portal, or a statement each without a slot."""
        if not self._probed or (self.txn is None and not self.holds and not self._open_slot()):
            self._probed = True
            sql, values = self._statement(self.offset, count)
            rows = await self._one_shot(sql, values)
        else:
            if self._portal is None:
                await self._open()
            try:
                rows = await self._portal.fetch(count) if self._portal is not None else []
            except MISSING_TABLE:
                rows = []
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                await self._release(clean=False)
                self.exhausted = True
                raise from_engine(exc) from None
        self.offset += len(rows)
        if len(rows) < count or (self._total and self.offset >= self._total):
            self.exhausted = True
        if self._decode is not None:
            return self._decode(rows)
        return [bytes(r[0]) for r in rows]

    def _open_slot(self) -> bool:
        if not self._slot:
            self._slot = self._slots.take(self.principal.access)
        return self._slot

    async def _open(self) -> None:
        sql, values = self._statement(self.offset, 0)
        if self.txn is not None:
            conn = self.txn.conn  # its snapshot; the portal ends with the transaction
            try:
                self._portal = await conn.cursor(sql, *values)
            except MISSING_TABLE:
                self._portal = None
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
            return
        lease = self.engine.connection(self.principal.access, owner=self.principal.id)
        try:
            conn = await lease.__aenter__()
        except BaseException:
            self._give_slot()
            raise
        self._lease, self._conn = lease, lease.raw
        try:
            self._transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            await self._transaction.start()
            self._portal = await conn.cursor(sql, *values)
        except MISSING_TABLE:
            self._portal = None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await self._release(clean=False)
            self.exhausted = True
            raise from_engine(exc) from None
        except BaseException:
            await self._release(clean=False)
            raise

    async def detach(self) -> None:
        """Give back the engine connection but stay open: the next read opens a new
        portal at the same offset (a new snapshot, the same order)."""
        async with self._lock:
            if self.holds:
                await self._release(clean=True)

    async def close(self) -> None:
        """Give back the connection and slot (a cursor killed, expired or finished)."""
        self.exhausted = True
        self.pending = []
        async with self._lock:  # after a fetch in progress
            await self._release(clean=True)

    def _give_slot(self) -> None:
        if self._slot:
            self._slot = False
            self._slots.give(self.principal.access)

    async def _release(self, *, clean: bool) -> None:
        self._portal = None
        lease, self._lease = self._lease, None
        transaction, self._transaction = self._transaction, None
        conn, self._conn = self._conn, None
        self._give_slot()
        if lease is None:
            return  # nothing held, or the client transaction's connection (not ours)
        if transaction is not None:
            try:
                await transaction.rollback()  # read only: nothing to commit
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                clean = False
        if clean and conn is not None:
            conn.keep_session(self.principal.id)
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await lease.__aexit__(None, None, None)
