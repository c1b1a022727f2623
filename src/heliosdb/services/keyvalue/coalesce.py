"""Many clients' commands become one engine round trip per kind.

Callers queue an operation and await its future (or hand a sink); each worker holds one
engine connection and, whenever it is free, takes every queued operation and runs them as
one statement per kind (SETs first, deduplicated per key with the last one winning; then
GETs, each key read once, and a key the SETs wrote answered with their value). Operations
in one batch were all in flight at once, so any order among them is a valid serial order,
and each client still sees its own commands in order because it waits for each reply. If
a batch fails, its operations are retried one by one so each gets its own answer.

Worker 0 also runs the write groups (INCRBY, pushes, HSET/SADD/ZADD, and any other write
command as ``tx`` work): first one call per kind (``_run_fast``: an upsert for counters,
each key's INCRBYs summed when they all go one way; helios_kv.push_group; add_group or its
one-type forms), then, for whatever those leave and the ``tx`` work, one group
transaction. The other workers take GET/SET batches only while worker 0 is in a group
transaction or reconnecting, so batches stay as large as the load makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import HeliosError
from heliosdb.services.keyvalue.faults import Reason, fault
from heliosdb.services.keyvalue.lane import (
    GET_MANY,
    GET_ONE,
    SET_STRINGS,
    UPDATE_ONE_STRING,
    Lane,
    Lost,
    session_settings,
)
from heliosdb.services.keyvalue.numbers import add_int, parse_int
from heliosdb.services.keyvalue.store import ITEM_TABLES, Tx, now_ms

log = logging.getLogger("heliosdb.services.keyvalue")
MAX_BATCH = 512
HELPER_BATCH = 16  # GET/SETs queued while worker 0 runs a batch that another worker takes

# A batch's statements (lane.py: on a pipelined connection when one is ready): its SETs
# one upsert of strings (SET_STRINGS), its GETs one lookup (GET_MANY). A key of another
# type among the SETs: the batch goes through _SET, which also drops the key's items.
_SET = (
    "WITH q AS (SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[], $4::bigint[]) "
    "AS t(db, key, value, expires_at_ms)), "
    "prev AS (SELECT k.db, k.key, k.type FROM helios_kv.keys k JOIN q "
    "ON k.db = q.db AND k.key = q.key WHERE k.type <> 'string' FOR UPDATE OF k), "
    "put AS (INSERT INTO helios_kv.keys (db, key, type, value, expires_at_ms) "
    "SELECT db, key, 'string', value, expires_at_ms FROM q "
    "ON CONFLICT (db, key) DO UPDATE SET type = 'string', value = EXCLUDED.value, "
    "expires_at_ms = EXCLUDED.expires_at_ms, version = nextval('helios_kv.versions') "
    "RETURNING 1) "
    "SELECT db, key, type FROM prev"
)

# A batch of one key (every client on one hot key; the batch's SETs of it are one write)
# binds plain values (GET_ONE): asyncpg's array encoding cost more than the rest of the
# call. A hot key that already holds a string (the commonest SET of all, and every SET of
# bench/redis.sh): UPDATE_ONE_STRING. No row (a new key, or one of another type):
# _SET_ONE_STRING, then _SET, as before.
_SET_ONE_STRING = (
    "INSERT INTO helios_kv.keys (db, key, type, value, expires_at_ms) "
    "VALUES ($1, $2, 'string', $3, $4) "
    "ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value, "
    "expires_at_ms = EXCLUDED.expires_at_ms, version = nextval('helios_kv.versions') "
    "WHERE helios_kv.keys.type = 'string'"
)


# GETs of values bigger than 8 KiB (lane.py's GET_MANY leaves them out): their values
# in the order of the keys up to GET_BYTES in all, at least the first; 'held' says which.
# The others (and every key after the first of them) are read in a later round trip, so a
# batch holds a few MiB of values, not MAX_BATCH big ones.
GET_BYTES = 4 << 20
GET_BOUNDED = (
    "SELECT key, type, CASE WHEN held THEN value END, held FROM ("
    "SELECT q.key, k.type, k.value, row_number() OVER w = 1 "
    "OR coalesce(sum(octet_length(k.value)) OVER w, 0) <= $4 AS held "
    "FROM unnest($2::bytea[]) WITH ORDINALITY AS q(key, n) "
    "JOIN helios_kv.keys k ON k.db = $1 AND k.key = q.key "
    "WHERE k.expires_at_ms IS NULL OR k.expires_at_ms > $3 "
    "WINDOW w AS (ORDER BY q.n)) AS s"
)


TxWork = Callable[[Tx], Awaitable[Any]]


class Sink(Protocol):
    """Where an operation's answer goes: an asyncio.Future, or a caller's own slot."""

    def done(self) -> bool: ...
    def set_result(self, value: Any, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...
    def cancel(self) -> bool: ...


Pushed = set[tuple[int, bytes]]
# A queued GET or SET: (db, key, value (None: a GET), expires_at_ms, where the answer goes).
# A tuple, not an _Op: it is made once per command on the hot path. Its sink is answered
# without asking done() first: an answered (or cancelled) sink ignores a second answer,
# or raises asyncio.InvalidStateError as a Future does.
Plain = tuple[int, bytes, bytes | None, int | None, Sink]


@dataclass(slots=True)
class _Op:
    kind: str  # "tx", "incr", "push" or "add" (GETs and SETs are Plain tuples)
    db: int
    key: bytes
    value: bytes | None
    expires_at_ms: int | None
    future: Sink
    work: TxWork | None = None
    delta: int = 0
    values: list[bytes] | None = None
    left: bool = False
    only_existing: bool = False
    type: str = ""
    elements: list[tuple[bytes, Any]] | None = None


class Coalescer:
    def __init__(
        self,
        engine: Engine,
        *,
        workers: int,
        synchronous_commit: bool,
        before_commit: Callable[[Any, Pushed], Awaitable[None]] | None = None,
        after_commit: Callable[[Pushed], None] | None = None,
        push_payload: Callable[[Pushed], str | None] | None = None,
    ) -> None:
        self.engine = engine
        self.push_payload = push_payload  # the NOTIFY text for pushes (one-call groups)
        self.before_commit = before_commit
        self.after_commit = after_commit
        self.workers = workers
        self.synchronous_commit = synchronous_commit
        self._queue: deque[Plain] = deque()
        self._tx_queue: deque[_Op] = deque()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0  # engine batches run (INFO stats; group size = operations / batches)
        # Worker 0 runs every batch it can, so batches are as big as the load makes them;
        # the other workers take GETs and SETs while it is in a group transaction (a slow
        # one must not hold up reads) or has no engine connection, or once HELPER_BATCH
        # of them wait while it runs a batch (a second batch in flight hides the engine's
        # latency on a busy machine without splitting batches small on a quiet one).
        self._lead_state = "down"  # worker 0: "idle", "plain", "tx" or "down"
        self.operations = 0
        self.lane: Lane | None = None  # one-key SETs on pipelined connections (lane.py)

    async def start(self) -> None:
        self.lane = Lane(self.engine, self.synchronous_commit)
        for index in range(max(1, self.workers)):
            self._tasks.append(asyncio.create_task(self._work(index)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.lane is not None:
            self.lane.close()
            self.lane = None
        while self._queue:
            sink = self._queue.popleft()[4]
            if not sink.done():
                sink.cancel()
        while self._tx_queue:
            op = self._tx_queue.popleft()
            if not op.future.done():
                op.future.cancel()

    def pipelined(self) -> tuple[int, int]:
        """One-key SET and GET batches the lane's pipelined connections answered (INFO)."""
        return (0, 0) if self.lane is None else (self.lane.sets, self.lane.gets)

    def get(self, db: int, key: bytes) -> asyncio.Future[bytes | None]:
        future = self._future()
        self.get_into(db, key, future)
        return future

    def set(
        self, db: int, key: bytes, value: bytes, expires_at_ms: int | None
    ) -> asyncio.Future[None]:
        future = self._future()
        self.set_into(db, key, value, expires_at_ms, future)
        return future

    def get_into(self, db: int, key: bytes, sink: Sink) -> None:
        """GET without a Future: the value (or None, or the error) goes to ``sink``."""
        queue = self._queue
        queue.append((db, key, None, None, sink))
        # Wake the workers unless worker 0 runs a GET/SET batch (it looks at the queue
        # when done) and too few wait for another worker to take a batch of its own.
        if self._lead_state != "plain" or len(queue) >= HELPER_BATCH:
            self._ready.set()

    def set_into(
        self, db: int, key: bytes, value: bytes, expires_at_ms: int | None, sink: Sink
    ) -> None:
        """SET without a Future: None (or the error) goes to ``sink``."""
        queue = self._queue
        queue.append((db, key, value, expires_at_ms, sink))
        if self._lead_state != "plain" or len(queue) >= HELPER_BATCH:  # as get_into
            self._ready.set()

    def run(self, db: int, work: TxWork) -> asyncio.Future[Any]:
        """Run ``work`` inside the next group transaction (with other clients' writes)."""
        return self._submit(_Op("tx", db, b"", None, None, self._future(), work))

    def incr(self, db: int, key: bytes, delta: int) -> asyncio.Future[int]:
        """INCRBY in the next group: one upsert for all its counters (_fast_counters)."""
        return self._submit(_Op("incr", db, key, None, None, self._future(), delta=delta))

    def push(
        self, db: int, key: bytes, values: list[bytes], *, left: bool, only_existing: bool
    ) -> asyncio.Future[int]:
        """LPUSH/RPUSH(X) in the next group transaction; a group's pushes cost a few statements."""
        op = _Op("push", db, key, None, None, self._future(), values=values, left=left)
        op.only_existing = only_existing
        return self._submit(op)

    def add(
        self, db: int, key: bytes, type_: str, elements: list[tuple[bytes, Any]]
    ) -> asyncio.Future[int]:
        """HSET / SADD / ZADD: elements (field or member, value or score or None) -> new count."""
        op = _Op("add", db, key, None, None, self._future(), type=type_, elements=elements)
        return self._submit(op)

    def incr_into(self, db: int, key: bytes, delta: int, sink: Sink) -> None:
        """INCRBY without a Future: the new value (or the error) goes to ``sink``."""
        self._tx_queue.append(_Op("incr", db, key, None, None, sink, delta=delta))
        self._ready.set()

    def push_into(self, db: int, key: bytes, values: list[bytes], left: bool, sink: Sink) -> None:
        """LPUSH/RPUSH without a Future: the list's new length goes to ``sink``."""
        self._tx_queue.append(_Op("push", db, key, None, None, sink, values=values, left=left))
        self._ready.set()

    def add_into(
        self, db: int, key: bytes, type_: str, elements: list[tuple[bytes, Any]], sink: Sink
    ) -> None:
        """HSET / SADD / ZADD without a Future: the count of new elements goes to ``sink``."""
        self._tx_queue.append(_Op("add", db, key, None, None, sink, type=type_, elements=elements))
        self._ready.set()

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        self._tx_queue.append(op)
        self._ready.set()
        return cast("asyncio.Future[Any]", op.future)

    async def _work(self, index: int) -> None:
        """Worker 0 also runs the group transactions: one writer, so groups never deadlock."""
        pool = self.engine.pool(Access.READ_WRITE)
        while True:
            try:
                async with pool.acquire() as conn:
                    settings = session_settings(self.synchronous_commit)  # (lane.py)
                    await conn.execute("; ".join(f"SET {k} = {v}" for k, v in settings.items()))
                    while True:
                        plain = self._queue
                        if index == 0 and self._tx_queue:
                            tx_queue = self._tx_queue
                            self._lead("tx")
                            batch = [
                                tx_queue.popleft() for _ in range(min(len(tx_queue), MAX_BATCH))
                            ]
                            self.batches += 1
                            self.operations += len(batch)
                            await self._run(conn, batch)
                        elif plain and (
                            index == 0
                            or self._lead_state in ("tx", "down")
                            or len(plain) >= HELPER_BATCH
                        ):
                            if index == 0:
                                self._lead("plain")
                            if len(plain) <= MAX_BATCH:
                                gets_sets = list(plain)
                                plain.clear()
                            else:
                                gets_sets = [plain.popleft() for _ in range(MAX_BATCH)]
                            self.batches += 1
                            self.operations += len(gets_sets)
                            await self._run_plain(conn, gets_sets)
                        else:
                            if index == 0:
                                self._lead("idle")
                            self._ready.clear()
                            await self._ready.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("coalescing worker lost its engine connection; reconnecting")
                if index == 0:
                    self._lead("down")
                await asyncio.sleep(0.5)

    def _lead(self, state: str) -> None:
        """Worker 0's state; the others wake when it can no longer take GETs and SETs."""
        self._lead_state = state
        if state in ("tx", "down") and self._queue:
            self._ready.set()

    async def _run(self, conn: Any, batch: list[_Op]) -> None:
        """A group: the one-call forms first, then the group transaction for the rest."""
        batch = await self._run_fast(conn, batch)
        if batch:
            await self._run_txs(conn, batch)

    async def _run_plain(self, conn: Any, batch: list[Plain]) -> None:
        """A batch of GETs and SETs: the SETs in one upsert, then the GETs in one lookup."""
        sets = [op for op in batch if op[2] is not None]
        try:
            written = await self._run_sets(conn, sets) if sets else {}
            if len(sets) < len(batch):
                await self._run_gets(conn, [op for op in batch if op[2] is None], written)
        except Exception as exc:  # noqa: BLE001 - answer each op on its own
            if len(batch) == 1:
                if not batch[0][4].done():
                    batch[0][4].set_exception(exc)
                return
            for op in batch:
                if not op[4].done():
                    await self._run_plain(conn, [op])

    async def _run_fast(self, conn: Any, ops: list[_Op]) -> list[_Op]:
        """The group's INCRs, pushes and adds, one engine call per kind (no BEGIN/COMMIT
        round trips); returns what needs the group transaction (``tx`` work, and whatever
        the one-call forms leave: repeated counters, LPUSHX, a failed call ...)."""
        rest: list[_Op] = []
        kinds: dict[str, list[_Op]] = {"incr": [], "push": [], "add": []}
        for op in ops:
            kinds.get(op.kind, rest).append(op)
        for kind, group in kinds.items():
            if not group:
                continue
            try:
                if kind == "incr":
                    outcomes, left, pushed = await _fast_counters(conn, group)
                elif kind == "push":
                    outcomes, left, pushed = await _fast_pushes(conn, group, self.push_payload)
                else:
                    outcomes, left, pushed = await _fast_adds(conn, group, self.push_payload)
            except Exception as exc:  # noqa: BLE001 - the group transaction answers each one
                if not isinstance(exc, asyncpg.PostgresError):
                    log.warning(
                        "one-call %s group failed (%r); using the group transaction", kind, exc
                    )
                rest.extend(group)
                continue
            rest.extend(left)
            for op in group:
                outcome = outcomes.get(id(op))
                if outcome is None or op.future.done():
                    continue
                if outcome[0]:
                    op.future.set_result(outcome[1])
                else:
                    op.future.set_exception(outcome[1])
            if pushed and self.after_commit is not None:
                self.after_commit(pushed)
        return rest

    async def _run_txs(self, conn: Any, ops: list[_Op]) -> None:
        """One engine transaction for many clients' write commands (group commit).

        A command failing with a HeliosDB error (WRONGTYPE, ...) answers only its client;
        an engine error rolls the group back and each command is retried on its own.
        """
        outcomes: dict[int, tuple[bool, Any]] = {}
        pushed: Pushed = set()
        try:
            await conn.execute("BEGIN")
            counters = [op for op in ops if op.kind == "incr"]
            if counters:
                outcomes.update(await _apply_counters(conn, counters))
            adds = [op for op in ops if op.kind == "add"]
            if adds:
                outcomes.update(await _apply_adds(conn, adds))
                pushed |= {(op.db, op.key) for op in adds if op.type == "zset"}
            pushes = [op for op in ops if op.kind == "push"]
            if pushes:
                outcomes.update(await _apply_pushes(conn, pushes))
                pushed |= {(op.db, op.key) for op in pushes if outcomes[id(op)][0]}
            for op in ops:
                if op.work is None:
                    continue
                tx = Tx(conn, op.db)
                try:
                    outcomes[id(op)] = (True, await op.work(tx))
                    pushed |= tx.pushed
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    raise
                except Exception as exc:  # noqa: BLE001 - this client's own error reply
                    outcomes[id(op)] = (False, exc)
            if pushed and self.before_commit is not None:
                await self.before_commit(conn, pushed)
            await conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            if len(ops) == 1:
                if not ops[0].future.done():
                    ops[0].future.set_exception(from_engine(exc))
                if not isinstance(exc, asyncpg.PostgresError):
                    raise  # the connection is gone: the worker reconnects
                return
            for op in ops:
                await self._run_txs(conn, [op])
            return
        for op in ops:
            ok, value = outcomes[id(op)]
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)
        if pushed and self.after_commit is not None:
            self.after_commit(pushed)

    async def _run_sets(self, conn: Any, sets: list[Plain]) -> dict[tuple[int, bytes], Plain]:
        """Every SET of the batch in one upsert, each key once (its last SET's value: the
        others were overwritten within the batch); the SET that wrote each key."""
        latest = {(op[0], op[1]): op for op in sets}
        if len(latest) == 1:
            (only,) = latest.values()
            db, key, value, expires_at_ms, _ = only
            lane = self.lane
            answer = (
                None if lane is None else lane.update(db, key, cast(bytes, value), expires_at_ms)
            )
            status = await _lane_or_pool(answer, conn.execute, UPDATE_ONE_STRING, *only[:4])
            if status == "UPDATE 0":
                status = await conn.execute(_SET_ONE_STRING, *only[:4])
            ordered = [only]
        else:
            ordered = [latest[k] for k in sorted(latest)]  # one lock order: no deadlocks
            columns = _set_columns(ordered)
            answer = None if self.lane is None else self.lane.set_strings(columns)
            status = await _lane_or_pool(answer, conn.execute, SET_STRINGS, *columns)
        rows = (
            []
            if int(status.rsplit(" ", 1)[1]) == len(ordered)
            else await conn.fetch(_SET, *_set_columns(ordered))
        )
        for row in rows:  # a key that held a collection: drop its items
            await conn.execute(
                f"DELETE FROM {ITEM_TABLES[row[2]]} WHERE db = $1 AND key = $2",  # noqa: S608
                row[0], row[1],
            )  # fmt: skip
        for op in sets:
            try:  # noqa: SIM105 - no done() nor suppress() call per SET (Plain)
                op[4].set_result(None)
            except asyncio.InvalidStateError:
                pass
        return latest

    async def _run_gets(
        self, conn: Any, gets: list[Plain], written: dict[tuple[int, bytes], Plain]
    ) -> None:
        """One ``key = ANY(...)`` index scan per database for every GET of the batch, each
        key looked up once; a key this batch's SETs wrote is answered with their value (the
        SETs ran first: any order of one batch's commands is a valid serial order)."""
        now = now_ms()
        db = gets[0][0]
        if any(op[0] != db for op in gets):
            by_db: dict[int, list[Plain]] = {}
            for op in gets:
                by_db.setdefault(op[0], []).append(op)
            for ops in by_db.values():
                await self._run_gets(conn, ops, written)
            return
        wanted, found = _to_read(db, gets, written, now)
        lane = self.lane
        if len(wanted) == 1:
            answer = None if lane is None else lane.get(db, wanted[0], now)
            for r in await _lane_or_pool(answer, conn.fetch, GET_ONE, db, wanted[0], now):
                found[wanted[0]] = (r[1], r[2])
        elif wanted:
            answer = None if lane is None else lane.get_many(db, wanted, now)
            for r in await _lane_or_pool(answer, conn.fetch, GET_MANY, db, wanted, now):
                found[bytes(r[0])] = (r[1], r[2])
        big = _answer_gets(gets, found)
        if big < len(gets):
            await self._run_big_gets(conn, gets[big:], written)

    async def _run_big_gets(
        self, conn: Any, gets: list[Plain], written: dict[tuple[int, bytes], Plain]
    ) -> None:
        """The batch's GETs from its first of a value GET_MANY left out (bigger than
        8 KiB): their values in their order up to GET_BYTES (at least one, GET_BOUNDED);
        from the first GET left out again on, none is answered now (so a client's GETs are
        read in the order sent): a connection's run (hotpath.py) sends them again once the
        client has read what came before (``defer``), and the others take the next batch."""
        now = now_ms()
        db = gets[0][0]
        wanted, found = _to_read(db, gets, written, now)
        late: set[bytes] = set()
        rows = await conn.fetch(GET_BOUNDED, db, wanted, now, GET_BYTES) if wanted else []
        for key, type_, value, held in rows:
            if held:
                found[bytes(key)] = (type_, value)
            else:
                late.add(bytes(key))
        if late:
            position = {key: n for n, key in enumerate(wanted)}
            late.update(wanted[min(position[key] for key in late) :])  # keys without rows too
        first = next((n for n, op in enumerate(gets) if op[1] in late), len(gets))
        _answer_gets(gets[:first], found)
        again: list[Plain] = []
        for op in gets[first:]:
            defer = getattr(op[4], "defer", None)
            if defer is None or not defer():
                again.append(op)
        if again:
            self._queue.extendleft(reversed(again))
            self._ready.set()


def _to_read(
    db: int, gets: list[Plain], written: dict[tuple[int, bytes], Plain], now: int
) -> tuple[list[bytes], dict[bytes, tuple[str, bytes]]]:
    """The keys the GETs read (each once, in the order of their first GET), and the
    answers of those the batch's SETs wrote."""
    found: dict[bytes, tuple[str, bytes]] = {}
    wanted = []
    for key in dict.fromkeys([op[1] for op in gets]):
        set_op = written.get((db, key)) if written else None
        if set_op is None:
            wanted.append(key)
        elif set_op[3] is None or set_op[3] > now:
            found[key] = ("string", cast(bytes, set_op[2]))
    return wanted, found


def _answer_gets(gets: list[Plain], found: dict[bytes, tuple[str, bytes]]) -> int:
    """Answer the GETs in order from ``found`` up to the first whose value GET_MANY left
    out (its type says 'big'); how many were answered."""
    for _, key, _, _, sink in gets:
        hit = found.get(key)
        try:  # as in _run_sets, no done() call per GET
            if hit is None:
                sink.set_result(None)
            elif hit[0] != "string":
                if hit[0] == "big":  # (the key's first GET here: an earlier one stopped)
                    return next(n for n, op in enumerate(gets) if op[1] == key)
                sink.set_exception(fault(Reason.WRONG_TYPE))
            else:
                sink.set_result(hit[1])
        except asyncio.InvalidStateError:
            pass
    return len(gets)


async def _lane_or_pool(
    answer: asyncio.Future[Any] | None, pooled: Callable[..., Awaitable[Any]], sql: str, *args: Any
) -> Any:
    """The lane's answer (lane.py), or, when it sent nothing or lost its connection before
    answering, ``sql`` run on the worker's pooled connection (``execute`` or ``fetch``)."""
    if answer is not None:
        try:
            return await answer
        except Lost:
            pass
    return await pooled(sql, *args)


def _set_columns(ordered: list[Plain]) -> tuple[list[Any], ...]:
    """The SETs' (db, key, value, expires_at_ms) as four arrays, for the unnest upserts."""
    return (
        [op[0] for op in ordered],
        [op[1] for op in ordered],
        [op[2] for op in ordered],
        [op[3] for op in ordered],
    )


_LOCK_COUNTERS = (
    "SELECT k.db, k.key, k.type, k.value, k.expires_at_ms FROM helios_kv.keys k "
    "JOIN unnest($1::smallint[], $2::bytea[]) AS q(db, key) ON k.db = q.db AND k.key = q.key "
    "ORDER BY k.db, k.key FOR UPDATE OF k"
)
_DROP_EXPIRED = (
    "DELETE FROM helios_kv.keys k USING unnest($1::smallint[], $2::bytea[]) AS q(db, key) "
    "WHERE k.db = q.db AND k.key = q.key"
)
_PUT_COUNTERS = (
    "INSERT INTO helios_kv.keys (db, key, type, value) "
    "SELECT db, key, 'string', value FROM unnest($1::smallint[], $2::bytea[], $3::bytea[]) "
    "AS t(db, key, value) ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value, "
    "version = nextval('helios_kv.versions')"
)


async def _lock_live(
    conn: Any, ops: list[_Op]
) -> dict[tuple[int, bytes], tuple[str, bytes | None]]:
    """Lock the group's keys (in a fixed order); drop the expired ones; the live ones'
    (type, string value)."""
    wanted = sorted({(op.db, op.key) for op in ops})
    rows = await conn.fetch(_LOCK_COUNTERS, [d for d, _ in wanted], [k for _, k in wanted])
    now = now_ms()
    live: dict[tuple[int, bytes], tuple[str, bytes | None]] = {}
    expired: list[tuple[int, bytes]] = []
    for db, key, type_, value, expires_at_ms in rows:
        if expires_at_ms is not None and expires_at_ms <= now:
            expired.append((db, bytes(key)))
        else:
            live[(db, bytes(key))] = (type_, value)
    if expired:
        await conn.execute(_DROP_EXPIRED, [d for d, _ in expired], [k for _, k in expired])
    return live


async def _apply_counters(conn: Any, ops: list[_Op]) -> dict[int, tuple[bool, Any]]:
    """Every INCRBY of a group: lock the keys, add in arrival order, write each key once."""
    current = await _lock_live(conn, ops)
    outcomes: dict[int, tuple[bool, Any]] = {}
    changed: dict[tuple[int, bytes], bytes] = {}
    for op in ops:
        slot = (op.db, op.key)
        type_, value = current.get(slot, ("string", None))
        try:
            if type_ != "string":
                raise fault(Reason.WRONG_TYPE)
            result = add_int(0 if value is None else parse_int(value), op.delta)
        except HeliosError as exc:
            outcomes[id(op)] = (False, exc)
            continue
        text = str(result).encode()
        current[slot] = ("string", text)
        changed[slot] = text
        outcomes[id(op)] = (True, result)
    if changed:
        slots = sorted(changed)
        await conn.execute(
            _PUT_COUNTERS,
            [d for d, _ in slots],
            [k for _, k in slots],
            [changed[s] for s in slots],
        )
    return outcomes


# Positions are contiguous (lists.py), so the length is last - first + 1: two index probes.
_LIST_ENDS = (
    "SELECT q.db, q.key, "
    "(SELECT pos FROM helios_kv.lists l WHERE l.db = q.db AND l.key = q.key "
    "ORDER BY pos LIMIT 1) AS lo, "
    "(SELECT pos FROM helios_kv.lists l WHERE l.db = q.db AND l.key = q.key "
    "ORDER BY pos DESC LIMIT 1) AS hi "
    "FROM unnest($1::smallint[], $2::bytea[]) AS q(db, key)"
)
_NEW_KEYS = (
    "INSERT INTO helios_kv.keys (db, key, type) "
    "SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::text[]) AS t(db, key, type)"
)
_TOUCH = (
    "UPDATE helios_kv.keys k SET version = nextval('helios_kv.versions') "
    "FROM unnest($1::smallint[], $2::bytea[]) AS q(db, key) WHERE k.db = q.db AND k.key = q.key"
)
_PUT_ITEMS = (
    "INSERT INTO helios_kv.lists (db, key, pos, value) "
    "SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bigint[], $4::bytea[])"
)


async def _apply_pushes(conn: Any, ops: list[_Op]) -> dict[int, tuple[bool, Any]]:
    """Every LPUSH/RPUSH of a group: lock the keys, place items in arrival order, one insert."""
    types = {slot: type_ for slot, (type_, _) in (await _lock_live(conn, ops)).items()}
    ends: dict[tuple[int, bytes], list[int]] = {}
    lists = [slot for slot, t in types.items() if t == "list"]
    if lists:
        for db, key, lo, hi in await conn.fetch(
            _LIST_ENDS, [d for d, _ in lists], [k for _, k in lists]
        ):
            ends[(db, bytes(key))] = [0, -1, 0] if lo is None else [lo, hi, hi - lo + 1]
    outcomes: dict[int, tuple[bool, Any]] = {}
    created: list[tuple[int, bytes]] = []
    items: tuple[list[int], list[bytes], list[int], list[bytes]] = ([], [], [], [])
    for op in ops:
        slot = (op.db, op.key)
        type_ = types.get(slot)
        if type_ is not None and type_ != "list":
            outcomes[id(op)] = (False, fault(Reason.WRONG_TYPE))
            continue
        if type_ is None:
            if op.only_existing:
                outcomes[id(op)] = (True, 0)
                continue
            types[slot] = "list"
            created.append(slot)
            ends[slot] = [0, -1, 0]
        end = ends[slot]
        for value in op.values or []:
            if op.left:
                end[0] -= 1
                position = end[0]
            else:
                end[1] += 1
                position = end[1]
            end[2] += 1
            for column, item in zip(items, (op.db, op.key, position, value), strict=True):
                column.append(item)  # type: ignore[attr-defined]
        outcomes[id(op)] = (True, end[2])
    if created:
        await conn.execute(
            _NEW_KEYS, [d for d, _ in created], [k for _, k in created], ["list"] * len(created)
        )
    grew = {(op.db, op.key) for op in ops if outcomes[id(op)] != (True, 0) and outcomes[id(op)][0]}
    touched = sorted(grew - set(created))
    if touched:
        await conn.execute(_TOUCH, [d for d, _ in touched], [k for _, k in touched])
    if items[0]:
        await conn.execute(_PUT_ITEMS, *items)
    return outcomes


_EXISTING = {
    "hash": "SELECT t.db, t.key, t.field FROM helios_kv.hashes t",
    "set": "SELECT t.db, t.key, t.member FROM helios_kv.sets t",
    "zset": "SELECT t.db, t.key, t.member FROM helios_kv.zsets t",
}
_EXISTING_JOIN = (
    " JOIN unnest($1::smallint[], $2::bytea[], $3::bytea[]) AS q(db, key, element) "
    "ON t.db = q.db AND t.key = q.key AND t.{} = q.element"
)
_PUT_ELEMENTS = {
    "hash": "INSERT INTO helios_kv.hashes (db, key, field, value) "
    "SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[], $4::bytea[]) "
    "ON CONFLICT (db, key, field) DO UPDATE SET value = EXCLUDED.value",
    "set": "INSERT INTO helios_kv.sets (db, key, member) "
    "SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[]) ON CONFLICT DO NOTHING",
    "zset": "INSERT INTO helios_kv.zsets (db, key, member, score) "
    "SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[], $4::float8[]) "
    "ON CONFLICT (db, key, member) DO UPDATE SET score = EXCLUDED.score",
}


async def _apply_adds(conn: Any, ops: list[_Op]) -> dict[int, tuple[bool, Any]]:
    """Every plain HSET / SADD / ZADD of a group: lock, count new elements, one upsert per type."""
    types = {slot: type_ for slot, (type_, _) in (await _lock_live(conn, ops)).items()}
    present: set[tuple[int, bytes, bytes]] = set()
    for kind in ("hash", "set", "zset"):
        probe = [
            (op.db, op.key, element)
            for op in ops
            if op.type == kind and types.get((op.db, op.key)) == kind
            for element, _ in op.elements or []
        ]
        if probe:
            column = "field" if kind == "hash" else "member"
            found = await conn.fetch(
                _EXISTING[kind] + _EXISTING_JOIN.format(column),
                [p[0] for p in probe], [p[1] for p in probe], [p[2] for p in probe],
            )  # fmt: skip
            present |= {(r[0], bytes(r[1]), bytes(r[2])) for r in found}
    outcomes: dict[int, tuple[bool, Any]] = {}
    created: list[tuple[int, bytes, str]] = []
    touched: set[tuple[int, bytes]] = set()
    latest: dict[str, dict[tuple[int, bytes, bytes], Any]] = {"hash": {}, "set": {}, "zset": {}}
    for op in ops:
        slot = (op.db, op.key)
        type_ = types.get(slot)
        if type_ is not None and type_ != op.type:
            outcomes[id(op)] = (False, fault(Reason.WRONG_TYPE))
            continue
        if type_ is None:
            types[slot] = op.type
            created.append((op.db, op.key, op.type))
        else:
            touched.add(slot)
        added = 0
        for element, value in op.elements or []:
            row = (op.db, op.key, element)
            if row not in present:
                present.add(row)
                added += 1
            latest[op.type][row] = value
        outcomes[id(op)] = (True, added)
    if created:
        await conn.execute(
            _NEW_KEYS, [c[0] for c in created], [c[1] for c in created], [c[2] for c in created]
        )
    if touched:
        ordered = sorted(touched)
        await conn.execute(_TOUCH, [d for d, _ in ordered], [k for _, k in ordered])
    for type_, rows_by_element in latest.items():
        if not rows_by_element:
            continue
        elements = sorted(rows_by_element)
        columns: list[list[Any]] = [
            [e[0] for e in elements], [e[1] for e in elements], [e[2] for e in elements],
        ]  # fmt: skip
        if type_ != "set":
            columns.append([rows_by_element[e] for e in elements])
        await conn.execute(_PUT_ELEMENTS[type_], *columns)
    return outcomes


# INCRBY of keys that are new, or live strings holding a base-10 int64 whose sum with the
# group's total for the key stays in range, in one upsert; the keys it does not return
# (another type, expired, not an integer, overflow) take the group transaction, which
# answers their errors.
_INCR_FAST = (
    "INSERT INTO helios_kv.keys AS k (db, key, type, value) "
    "SELECT db, key, 'string', convert_to(delta::text, 'UTF8') "
    "FROM unnest($1::smallint[], $2::bytea[], $3::bigint[]) AS t(db, key, delta) "
    "ON CONFLICT (db, key) DO UPDATE SET value = convert_to((encode(k.value, 'escape')::numeric "
    "+ convert_from(EXCLUDED.value, 'UTF8')::numeric)::text, 'UTF8'), "
    "version = nextval('helios_kv.versions') "
    "WHERE k.type = 'string' AND (k.expires_at_ms IS NULL OR k.expires_at_ms > $4) "
    "AND CASE WHEN length(k.value) <= 20 AND encode(k.value, 'escape') ~ '^-?(0|[1-9][0-9]*)$' "
    "THEN encode(k.value, 'escape')::numeric + convert_from(EXCLUDED.value, 'UTF8')::numeric "
    "BETWEEN -9223372036854775808 AND 9223372036854775807 ELSE false END "
    "RETURNING k.db, k.key, k.value"
)
_PUSH_GROUP = "SELECT * FROM helios_kv.push_group($1, $2, $3, $4, $5, $6, $7)"
_ADD_GROUP = "SELECT * FROM helios_kv.add_group($1, $2, $3, $4, $5, $6, $7, $8, $9)"
# A group of one type (all HSET, all SADD or all ZADD) upserts only its own item table.
_ADD_ONE_TYPE = {
    kind: _ADD_GROUP.replace("add_group", f"add_{kind}_group") for kind in ("hash", "set", "zset")
}

Fast = tuple[dict[int, tuple[bool, Any]], list[_Op], Pushed]


INT64 = (-(2**63), 2**63 - 1)


async def _fast_counters(conn: Any, ops: list[_Op]) -> Fast:
    """One upsert for every key's INCRBYs when they all go one way (so the total, checked
    in range by the upsert, bounds every value in between): each one's reply is the value
    before the group plus the deltas up to it, in arrival order. A key whose INCRBYs go
    both ways has its first one here and the rest in the group transaction."""
    by_key: dict[tuple[int, bytes], list[_Op]] = {}
    for op in ops:
        by_key.setdefault((op.db, op.key), []).append(op)
    taken: dict[tuple[int, bytes], list[_Op]] = {}
    for slot, group in by_key.items():
        deltas = [op.delta for op in group]
        one_way = min(deltas) >= 0 or max(deltas) <= 0
        taken[slot] = group if one_way and INT64[0] <= sum(deltas) <= INT64[1] else group[:1]
    slots = sorted(taken)  # one lock order: no deadlocks
    totals = [sum(op.delta for op in taken[s]) for s in slots]
    rows = await conn.fetch(
        _INCR_FAST, [d for d, _ in slots], [k for _, k in slots], totals, now_ms()
    )
    done = {(r[0], bytes(r[1])): int(r[2]) for r in rows}
    outcomes: dict[int, tuple[bool, Any]] = {}
    for slot, total in zip(slots, totals, strict=True):
        if slot not in done:
            continue
        value = done[slot] - total
        for op in taken[slot]:
            value += op.delta
            outcomes[id(op)] = (True, value)
    # In arrival order: one client's pipelined INCRs of a key must apply in the order sent.
    return outcomes, [op for op in ops if id(op) not in outcomes], set()


async def _fast_pushes(
    conn: Any, ops: list[_Op], payload: Callable[[Pushed], str | None] | None
) -> Fast:
    """Every LPUSH/RPUSH of a group in one call of helios_kv.push_group (LPUSHX: not here)."""
    if any(op.only_existing for op in ops):
        return {}, ops, set()
    slots = sorted({(op.db, op.key) for op in ops})
    index = {slot: n for n, slot in enumerate(slots, 1)}
    items: tuple[list[int], list[bool], list[bytes]] = ([], [], [])
    for op in ops:
        n = index[(op.db, op.key)]
        for value in op.values or []:
            items[0].append(n)
            items[1].append(op.left)
            items[2].append(value)
    rows = await conn.fetch(
        _PUSH_GROUP,
        [d for d, _ in slots],
        [k for _, k in slots],
        *items,
        now_ms(),
        None if payload is None else payload(set(slots)),
    )
    state: dict[int, tuple[str, int]] = {}
    for n, kind, lo, hi in rows:
        state[n] = (kind, hi - lo + 1 if kind == "list" and lo is not None else 0)
    outcomes: dict[int, tuple[bool, Any]] = {}
    lengths = {n: length for n, (_, length) in state.items()}
    pushed: Pushed = set()
    for op in ops:
        n = index[(op.db, op.key)]
        if state[n][0] not in ("list", "new"):
            outcomes[id(op)] = (False, fault(Reason.WRONG_TYPE))
            continue
        lengths[n] += len(op.values or [])
        outcomes[id(op)] = (True, lengths[n])
        pushed.add((op.db, op.key))
    return outcomes, [], pushed


async def _fast_adds(
    conn: Any, ops: list[_Op], payload: Callable[[Pushed], str | None] | None
) -> Fast:
    """Every plain HSET / SADD / ZADD of a group in one call of helios_kv.add_group (or
    of add_hash_group / add_set_group / add_zset_group when the group is of one type)."""
    wants: dict[tuple[int, bytes], str] = {}
    for op in ops:
        if wants.setdefault((op.db, op.key), op.type) != op.type:
            return {}, ops, set()  # one key, two types in one group: the transaction sorts it
    slots = sorted(wants)
    index = {slot: n for n, slot in enumerate(slots, 1)}
    latest: dict[tuple[int, bytes], Any] = {}
    for op in ops:
        n = index[(op.db, op.key)]
        for element, value in op.elements or []:
            latest[(n, element)] = value
    elements = sorted(latest)
    zsets = {(op.db, op.key) for op in ops if op.type == "zset"}
    kinds = set(wants.values())
    rows = await conn.fetch(
        _ADD_ONE_TYPE[kinds.pop()] if len(kinds) == 1 else _ADD_GROUP,
        [d for d, _ in slots],
        [k for _, k in slots],
        [wants[s] for s in slots],
        [n for n, _ in elements],
        [e for _, e in elements],
        [latest[e] if wants[slots[e[0] - 1]] == "hash" else None for e in elements],
        [latest[e] if wants[slots[e[0] - 1]] == "zset" else None for e in elements],
        now_ms(),
        None if payload is None or not zsets else payload(zsets),
    )
    state: dict[int, str] = {}
    fresh: set[tuple[int, bytes]] = set()
    for n, kind, added in rows:
        state[n] = kind
        fresh.update((n, bytes(element)) for element in added)
    outcomes: dict[int, tuple[bool, Any]] = {}
    pushed: Pushed = set()
    for op in ops:
        n = index[(op.db, op.key)]
        if state[n] not in ("new", op.type):
            outcomes[id(op)] = (False, fault(Reason.WRONG_TYPE))
            continue
        count = 0
        for element, _ in op.elements or []:
            if (n, element) in fresh:
                fresh.discard((n, element))
                count += 1
        outcomes[id(op)] = (True, count)
        if op.type == "zset":
            pushed.add((op.db, op.key))
    return outcomes, [], pushed
