"""The capture leader: the engine's WAL -> ``helios.change_events``, in commit order.

    committed transaction --WAL--> logical slot (pgoutput, publication helios_changes)
        --replication stream (or, polling, peek)--> this leader (one per engine:
        advisory lock) --decode, number--> helios.change_events (+ progress row,
        + NOTIFY, one transaction) --> every node's hub (services/changes/hub.py)
        --> subscribers

Correctness, in order of the rules:

- *After commit, in commit order, nothing rolled back*: logical decoding emits a
  transaction only when its commit record is decoded, in commit-record order; aborted
  transactions are never emitted. Positions are numbered densely in that order.
- *Nothing lost, nothing twice*: events, the end LSN of the last transaction written
  and the last position are committed together; only then is the stream confirmed
  past them (polling: the slot is only *peeked*, then advanced). After a crash between
  the two, the stream (or next peek) sends transactions whose commit LSN is below the
  stored end LSN again: they are skipped.
- *Any transaction size in bounded memory*: events are INSERTed in chunks, all in one
  engine transaction that commits with the progress row (``_follow``; polling, the
  peek is read through a cursor, see ``_big_round``, and the engine spills its result).
- *Whichever path wrote it*: decoding reads the WAL, so REST, the PostgreSQL wire, any
  other interface and a direct engine connection look the same.
- *Big rows intact*: INSERT values arrive whole (detoasted); an UPDATE does not repeat
  an unchanged TOASTed value, which we take from the old row, which REPLICA IDENTITY
  FULL logs in full (set by the event trigger on CREATE TABLE, or on first subscribe).

The publication lists schemas (every schema but ``helios`` and the catalogs; an event
trigger adds new ones), so the leader's own writes to ``helios.change_events`` and
async query results are not sent back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psycopg
from asyncpg.prepared_stmt import PreparedStatement

from heliosdb.engine import Access, Engine
from heliosdb.engine.quoting import qualified, quote_ident
from heliosdb.engine.replication import ReplicationError, ReplicationStream
from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.services.changes import pgoutput, stagetimes
from heliosdb.services.changes.events import ChangeEvent, encode_notice
from heliosdb.services.changes.values import BUILTIN_TYPES, Converter, TypeInfo, converter
from heliosdb.settings import ChangesSettings

log = logging.getLogger("heliosdb.changes")

PUBLICATION = "helios_changes"
CHANNEL = "helios_changes"
_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PRUNE_EVERY_SECONDS = 10.0
_ADVANCE_EVERY_SECONDS = 0.1
# WAL an advance may pass without events before a standby snapshot is logged anyway (writes
# to tables outside the publication, such as helios_kv's, are decoded by every peek too).
_SNAPSHOT_AFTER_BYTES = 256 * 1024
_YIELD_EVERY_MESSAGES = 128
_FETCH_MESSAGES = 2000  # decoded messages fetched from the peek's cursor at a time
_WRITE_EVENTS = 500  # events per INSERT (asyncpg encodes one synchronously)
_HANDOFF_EVENTS = 5000  # more in one round: the local hub reads them from the table
# A round of at most this many decoded messages is peeked and written in two statements,
# without a transaction or a cursor (see _round); a bigger one takes the cursor path.
_SMALL_ROUND = 500
# A streamed batch ends at the first commit after this long (or when the stream has
# nothing more waiting): under steady writes, events wait at most this for their write.
_STREAM_BATCH_SECONDS = 0.005
# And when the stream runs dry after a commit that followed the one before within this
# long (transactions coming one after another, each sent alone: a client's single-row
# writes), the batch waits for the next one until it is _STREAM_BATCH_SECONDS old:
# each batch's write (a statement, its NOTIFY, the hub's dispatch) was ~1 ms of node
# CPU, paid per transaction. A lone transaction is written at once. Both were 2 ms:
# single-row UPDATEs at 700/s cost the capture process ~145 us each, ~100 with 5 ms
# (batches of three or four instead of one or two; the capture's engine session 60 ->
# 40 us); 10 ms saved no more. The wait is one
# sleep (ReplicationStream.settle): what arrives meanwhile waits in the socket and is
# read when it ends, rather than waking the leader at each transaction's end. Only when
# transactions come at least this far apart: closer ones (several thousand a second)
# wake it with a warm cache, and sleeping through them cost more node CPU per delivery.
_SETTLE_GAP_SECONDS = 0.0005
_BURST_SECONDS = 0.005
# A quiet stream confirms the last batches after this long (see _Durability).
_IDLE_CONFIRM_SECONDS = 1.0
_PEEK = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, $3, "
    "'proto_version', '1', 'publication_names', $4)"
)
_INTO_EVENTS = (
    "INSERT INTO helios.change_events (position, commit_lsn, commit_time, xid, schema_name, "
    "table_name, event_type, payload) "
)
_INSERT_EVENTS = (
    f"{_INTO_EVENTS}SELECT * FROM unnest($1::bigint[], "  # noqa: S608 - constants only
    "$2::pg_lsn[], $3::timestamptz[], $4::bigint[], $5::text[], $6::text[], $7::text[], "
    "$8::text[]::json[])"
)


# The events, the capture's progress and the NOTIFY of a batch in one statement; the
# progress row's and the NOTIFY's parameters are the five from ``first`` on.
def _and_progress(first: int) -> str:
    slot, lsn, position, channel, notice = (f"${first + i}" for i in range(5))
    return (
        f"progress AS (UPDATE helios.change_capture SET last_lsn = {lsn}::pg_lsn, "  # noqa: S608 - parameter numbers only
        f"last_position = {position}, updated_at = now() WHERE slot_name = {slot}) "
        f"SELECT pg_notify({channel}, {notice}), pg_current_wal_insert_lsn()"
    )


_INSERT_EVENTS_WITH_PROGRESS = f"WITH events AS ({_INSERT_EVENTS}), {_and_progress(9)}"
# A batch of up to this many events (single-row transactions arriving one by one, the
# common case below a few thousand writes a second) is written with plain parameters,
# a statement prepared once per size and session: asyncpg's array encoding cost the
# leader more than the statement's other work (8 events: ~60 -> ~37 us of leader CPU
# per write, 32: ~230 -> ~125 us; the engine's share no higher, no unnest to run).
_FEW_EVENTS = 32
_EVENT_TYPES = ("bigint", "pg_lsn", "timestamptz", "bigint", "text", "text", "text", "text::json")


def _few_events_with_progress(count: int) -> str:
    rows = ", ".join(
        "(" + ", ".join(f"${8 * i + j + 1}::{kind}" for j, kind in enumerate(_EVENT_TYPES)) + ")"
        for i in range(count)
    )
    return f"WITH events AS ({_INTO_EVENTS}VALUES {rows}), {_and_progress(8 * count + 1)}"


# The WAL poll adapts to activity: every ``changes.poll_interval`` (5 ms) while changes
# publish, then, once nothing has published for a while, a tenth of that quiet time, up
# to _IDLE_POLL_SECONDS (a change after a long quiet spell waits at most that long).
_QUIET_FRACTION = 0.1
_IDLE_POLL_SECONDS = 0.1
_EXCLUDED_SCHEMAS = ("helios", "information_schema")
_TEXT = TypeInfo("text")  # a type the catalog did not describe keeps its text

# Fired by any role's DDL, and SECURITY DEFINER: only the engine superuser may add a
# schema to the publication. It runs in the caller's session, where the caller may have
# made temporary objects: with pg_temp last in its search_path and every name qualified,
# a temp relation (a ``pg_namespace`` view) or type (a ``regclass`` domain whose CHECK
# calls the caller's function) cannot stand in for the catalog's, and operators and
# functions are never looked up in pg_temp. It acts only on the objects the command
# created (the caller's own), through quoted names; EXECUTE is revoked from PUBLIC
# (tests/integration/security/test_engine_functions.py tries each of these).
_DDL_FUNCTION = """
CREATE OR REPLACE FUNCTION helios.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
    schema_name pg_catalog.text;
BEGIN
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
        IF cmd.command_tag = 'CREATE SCHEMA' THEN
            SELECT n.nspname INTO schema_name FROM pg_catalog.pg_namespace n
            WHERE n.oid = cmd.objid;
            IF schema_name NOT LIKE 'pg\\_%' AND schema_name NOT LIKE 'helios\\_%'
               AND schema_name NOT IN ('helios', 'information_schema') THEN
                EXECUTE pg_catalog.format(
                    'ALTER PUBLICATION helios_changes ADD TABLES IN SCHEMA %I', schema_name);
            END IF;
        ELSIF cmd.object_type = 'table' AND cmd.schema_name <> 'helios'
              AND cmd.schema_name NOT LIKE 'helios\\_%'
              AND cmd.schema_name NOT LIKE 'pg\\_%' THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL',
                                      cmd.objid::pg_catalog.regclass);
        END IF;
    END LOOP;
END $$
"""


def slot_name(database: str) -> str:
    return "helios_changes_" + re.sub(r"[^a-z0-9_]", "_", database.lower())[:40]


def capture_lock(slot: str) -> str:
    """The name whose ``hashtext`` is the advisory lock a capture leader holds while it
    leads (one per slot, across every node and process)."""
    return "helios.capture:" + slot


async def ensure_capture(engine: Engine, slot: str) -> bool:
    """Publication, DDL event trigger and slot (idempotent); False when the engine can't."""
    try:
        async with engine.connection(Access.SYSTEM) as conn:
            wal_level = await conn.fetchval("SHOW wal_level")
            if wal_level != "logical":
                log.warning("change capture is off: the engine's wal_level is %s", wal_level)
                return False
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios.capture'))")
                created = not await conn.fetchval(
                    "SELECT 1 FROM pg_publication WHERE pubname = $1", PUBLICATION
                )
                if created:
                    await _create_publication(conn)
                await _publish_schemas(conn, identity_full=created)
                await conn.execute(_DDL_FUNCTION)
                await conn.execute("REVOKE ALL ON FUNCTION helios.capture_ddl() FROM PUBLIC")
                if not await conn.fetchval(
                    "SELECT 1 FROM pg_event_trigger WHERE evtname = 'helios_capture_ddl'"
                ):
                    await conn.execute(
                        "CREATE EVENT TRIGGER helios_capture_ddl ON ddl_command_end WHEN TAG IN "
                        "('CREATE SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') "
                        "EXECUTE FUNCTION helios.capture_ddl()"
                    )
                await conn.execute(
                    "INSERT INTO helios.change_capture (slot_name) VALUES ($1) "
                    "ON CONFLICT DO NOTHING",
                    slot,
                )
            # A slot cannot be created in a transaction that has written anything.
            if not await conn.fetchval(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", slot
            ):
                with contextlib.suppress(asyncpg.DuplicateObjectError):
                    await conn.execute(
                        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot
                    )
        return True
    except (asyncpg.PostgresError, HeliosError) as exc:
        log.warning("change capture is off: %s", exc)
        return False


async def _create_publication(conn: Any) -> None:
    # Stored generated columns must be published for REPLICA IDENTITY FULL tables to
    # accept UPDATE/DELETE (PostgreSQL 18); older engines have no such option and no rule.
    try:
        async with conn.transaction():
            await conn.execute(
                f"CREATE PUBLICATION {PUBLICATION} WITH (publish_generated_columns = stored)"
            )
    except asyncpg.PostgresError:
        await conn.execute(f"CREATE PUBLICATION {PUBLICATION}")


async def _publish_schemas(conn: Any, *, identity_full: bool) -> None:
    missing = await conn.fetch(
        "SELECT n.oid, n.nspname FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' "
        "AND n.nspname NOT LIKE 'helios\\_%' "
        "AND n.nspname <> ALL($1::text[]) AND NOT EXISTS (SELECT 1 FROM "
        "pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid "
        "WHERE p.pubname = $2 AND pn.pnnspid = n.oid)",
        list(_EXCLUDED_SCHEMAS),
        PUBLICATION,
    )
    for row in missing:
        await conn.execute(
            f"ALTER PUBLICATION helios_changes ADD TABLES IN SCHEMA {quote_ident(row['nspname'])}"
        )
        if identity_full:
            tables = await conn.fetch(
                "SELECT relname FROM pg_class WHERE relnamespace = $1 AND relkind IN ('r', 'p') "
                "AND relpersistence = 'p' AND relreplident = 'd'",
                row["oid"],
            )
            for table in tables:
                name = qualified(row["nspname"], table["relname"])
                await conn.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")


async def ensure_table_captured(engine: Engine, schema: str, table: str) -> None:
    """Before a table's first subscriber: its schema published, its old rows logged."""
    async with engine.connection(Access.SYSTEM) as conn:
        row = await conn.fetchrow(
            "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_publication_namespace pn "
            "JOIN pg_publication p ON p.oid = pn.pnpubid WHERE p.pubname = $3 "
            "AND pn.pnnspid = n.oid) AS published FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            schema,
            table,
            PUBLICATION,
        )
        if row is None or schema in _EXCLUDED_SCHEMAS or schema.startswith("helios_"):
            return
        if not row["published"]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios.capture'))")
                await _publish_schemas(conn, identity_full=False)
        if row["relreplident"] != "f":
            await conn.execute(f"ALTER TABLE {qualified(schema, table)} REPLICA IDENTITY FULL")


@dataclass(slots=True)
class _Round:
    """One peek's worth of work, written as it is decoded (bounded memory)."""

    done_lsn: int  # end LSN of the last transaction already in helios.change_events
    position: int  # the last position assigned
    messages: int = 0
    last_end: int = 0  # the highest end LSN seen (written or skipped)
    written_end: int = 0  # end LSN of the last transaction written in this round
    xid: int = 0
    commit_lsn: int = 0
    stamp: str = ""
    commit_time: dt.datetime = _EPOCH_2000
    live: bool = False  # the current transaction is new (not written before a crash)
    first_position: int = 0  # the current transaction's first position
    # not yet INSERTed: (event, commit LSN, commit time)
    pending: list[tuple[ChangeEvent, int, dt.datetime]] = field(default_factory=list)
    handoff: list[ChangeEvent] | None = field(default_factory=list)  # None: too many
    polled: float = 0.0  # when the WAL flush position that started this round was read


class _Durability:
    """Which stream position may be confirmed: only one whose events are durable.

    The streaming leader's session commits without waiting for the WAL flush
    (``synchronous_commit = off``: the source transactions are durable already, and a
    flush wait per batch was one more wait on the way to every subscriber). The slot
    must still never be confirmed past a transaction whose events could vanish in an
    engine crash, or they would never be sent again. Each write returns the WAL insert
    position during its statement, which lies past the commit of every *earlier* write;
    so an earlier batch's end may be confirmed once the engine has flushed the WAL that
    far, which the stream shows (logical decoding only sends flushed WAL: a message
    about a record at or past that position), or, when the stream is quiet, a query
    of the insert and flush positions.
    """

    __slots__ = ("_open", "_waiting")

    def __init__(self) -> None:
        self._waiting: deque[tuple[int, int]] = deque()  # (WAL bound, position to confirm)
        self._open = 0  # the newest position to confirm, whose bound is not known yet

    def written(self, position: int) -> None:
        """A batch ends at ``position``: written, or with nothing to write."""
        self._open = max(self._open, position)

    def bound(self, inserted: int) -> None:
        """The WAL insert position seen after every batch so far has committed."""
        if self._open:
            self._waiting.append((inserted, self._open))
            self._open = 0

    def pending(self) -> bool:
        return bool(self._open or self._waiting)

    def due(self, flushed: int) -> int:
        """The newest position to confirm now that the WAL is flushed to ``flushed``
        (0: none)."""
        position = 0
        while self._waiting and self._waiting[0][0] <= flushed:
            position = self._waiting.popleft()[1]
        return position


def poll_pause(interval: float, quiet_seconds: float) -> float:
    """How long the leader waits before looking at the WAL again.

    ``interval`` while changes publish (steady load keeps the 5 ms poll); after
    ``quiet_seconds`` without any, a tenth of that, at most ``_IDLE_POLL_SECONDS``, so
    an idle node looks ten times a second instead of two hundred, and the first change
    after a quiet spell waits at most a tenth of the spell (or 100 ms) longer.
    """
    return max(interval, min(quiet_seconds * _QUIET_FRACTION, _IDLE_POLL_SECONDS))


class CaptureLeader:
    """Runs on every node; leads (decodes) only while it holds the engine-wide lock."""

    def __init__(self, engine: Engine, settings: ChangesSettings, slot: str) -> None:
        self.engine = engine
        self.settings = settings
        self.slot = slot
        self.is_leader = False
        self._relations: dict[int, pgoutput.Relation] = {}
        self._types: dict[int, TypeInfo] = dict(BUILTIN_TYPES)
        # Each relation's column names and their converters, in the tuples' order.
        self._columns: dict[int, tuple[tuple[str, Converter], ...]] = {}
        self._log_snapshots = True
        # This node's hub takes the events straight from here, saving the round trip
        # through NOTIFY and a read (other nodes read them from the table).
        self.on_written: Callable[[list[ChangeEvent]], None] | None = None
        # Before each write, the last position it writes (its NOTIFY needs no read on
        # this node: the events follow from memory); and when this node stops leading.
        self.on_writing: Callable[[int], None] | None = None
        self.on_stopped: Callable[[], None] | None = None
        # When this node starts leading (its hub then needs no NOTIFY of these writes).
        self.on_leading: Callable[[], None] | None = None
        # _few_events_with_progress's statements by size, prepared on this connection.
        self._few_on: tuple[asyncpg.Connection, dict[int, PreparedStatement]] | None = None

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self.engine.dedicated("heliosdb-capture")
                while not await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext($1))", capture_lock(self.slot)
                ):
                    await asyncio.sleep(1.0)
                self.is_leader = True
                log.info("this node leads change capture (slot %s)", self.slot)
                if self.on_leading is not None:
                    self.on_leading()
                await _quiet_decoding_log(conn)
                # A walsender left by the previous leader (its node stalled or cut off;
                # its lock session is gone, so it can write nothing more) holds the slot.
                await conn.execute(
                    "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots "
                    "WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    self.slot,
                )
                if self.settings.stream:
                    await self._lead_streaming(conn)
                else:
                    await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                psycopg.Error,
                OSError,
                HeliosError,
            ) as exc:
                log.warning("change capture interrupted: %s; retrying", exc)
                await asyncio.sleep(1.0)
            except Exception:  # e.g. asyncpg's InternalClientError when the session is
                # ended mid-operation: the leader must outlive any one failure
                log.exception("change capture failed; retrying")
                await asyncio.sleep(1.0)
            finally:
                if self.is_leader and self.on_stopped is not None:
                    self.on_stopped()
                self.is_leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    async def _progress(self, conn: asyncpg.Connection) -> tuple[int, int]:
        """The end LSN of the last transaction written, and the last position."""
        state = await conn.fetchrow(
            "SELECT last_lsn AS lsn, last_position FROM helios.change_capture WHERE slot_name = $1",
            self.slot,
        )
        if state is None:
            raise HeliosError(ErrorCode.INTERNAL, "change capture is not set up on the engine")
        return int(state["lsn"]), int(state["last_position"])

    async def _lead_streaming(self, conn: asyncpg.Connection) -> None:
        """Lead from a replication stream: the engine pushes each transaction as it
        commits. Falls back to polling (:meth:`_lead`) when the engine will not stream
        (no replication connection allowed)."""
        last_lsn, position = await self._progress(conn)
        try:
            stream = await self.engine.replication_stream(
                self.slot, last_lsn, {"proto_version": "1", "publication_names": PUBLICATION}
            )
        except ReplicationError as exc:
            if not exc.refused:
                raise
            log.info("change capture polls the slot: the engine will not stream it: %s", exc)
            await self._lead(conn)
            return
        try:
            # The batch's write need not wait for its WAL flush: _Durability holds the
            # confirmation back until the engine has flushed past it.
            await conn.execute("SET synchronous_commit = off")
            await self._follow(conn, stream, last_lsn, position)
        finally:
            stream.close()

    async def _follow(
        self, conn: asyncpg.Connection, stream: ReplicationStream, last_lsn: int, position: int
    ) -> None:
        """Decode what the stream sends; write each batch of whole transactions (all that
        had arrived, or ``batch_changes`` messages) as one round, then confirm it.

        The same guarantees as the polling rounds: a batch's events, its end LSN and last
        position commit together (one statement, or for a big batch one engine
        transaction of chunks); only then is the slot confirmed past it; transactions
        whose end precedes the stored end LSN (sent again after a crash) are skipped.
        """
        rnd = _Round(last_lsn, position)
        durability = _Durability()
        in_transaction = False  # between a Begin and its Commit
        chunked = False  # an engine transaction is open: a chunk of this batch is written
        last_prune = started = time.monotonic()
        burst = False  # the last commit followed the one before within _BURST_SECONDS
        gap = 0.0  # ... by this long
        last_commit = 0  # its commit time (the engine's clock, microseconds)
        # Messages a settle gathered, which the batch takes whatever its age (they came
        # within its time), and when the settle that gathered the next batch began.
        drain = 0
        since = 0.0
        while True:
            data = stream.read_nowait()
            if data is None:
                if rnd.messages and not in_transaction:
                    wait = _STREAM_BATCH_SECONDS - (time.monotonic() - started)
                    if burst and wait > 0:
                        if gap >= _SETTLE_GAP_SECONDS:
                            drain = await stream.settle(wait)
                            if drain:
                                continue  # more arrived within the batch's time
                        elif await stream.wait(wait):
                            continue
                    rnd = await self._finish(conn, stream, rnd, chunked, durability)
                    chunked = False
                stream.confirm(durability.due(stream.received))
                if time.monotonic() - last_prune > _PRUNE_EVERY_SECONDS and not chunked:
                    last_prune = time.monotonic()
                    await self._prune(conn)
                if burst and not rnd.messages and gap >= _SETTLE_GAP_SECONDS:
                    # Transactions were coming one after another: sleep for a batch's
                    # time and take what came meanwhile, rather than wake at the next
                    # one's arrival and then sleep anyway (one wakeup less per batch).
                    burst = False  # when nothing comes, wait as for a lone transaction
                    since = time.monotonic()
                    drain = await stream.settle(_STREAM_BATCH_SECONDS)
                    if drain:
                        continue
                    since = 0.0
                quiet = not await stream.wait(_IDLE_CONFIRM_SECONDS)
                if quiet and durability.pending() and not chunked:
                    row = await conn.fetchrow(
                        "SELECT pg_current_wal_insert_lsn() AS inserted, "
                        "pg_current_wal_flush_lsn() AS flushed"
                    )
                    assert row is not None
                    durability.bound(int(row["inserted"]))
                    stream.confirm(durability.due(int(row["flushed"])))
                    stream.send_confirmation()
                continue
            if not rnd.messages:
                rnd.polled = time.time()
                started = since or time.monotonic()
                since = 0.0
            rnd.messages += 1
            drain -= 1
            if rnd.messages % _YIELD_EVERY_MESSAGES == 0:
                await asyncio.sleep(0)
            message = pgoutput.parse_message(data)
            await self._decode(conn, message, rnd)
            if isinstance(message, pgoutput.Begin):
                in_transaction = True
            elif isinstance(message, pgoutput.Commit):
                in_transaction = False
                now = time.monotonic()
                # The gap between the commits themselves (the engine's clock): what a
                # settle gathered is read at once, its commits microseconds apart.
                gap = max(0, message.commit_time_us - last_commit) / 1e6
                last_commit = message.commit_time_us
                burst = gap < _BURST_SECONDS
                # Under steady writes the stream rarely runs dry between transactions
                # (a read ends inside the next one): a batch also ends once it is old,
                # but not inside what a settle gathered.
                if rnd.messages >= self.settings.batch_changes or (
                    now - started > _STREAM_BATCH_SECONDS and drain <= 0
                ):
                    rnd = await self._finish(conn, stream, rnd, chunked, durability)
                    chunked = False
            elif len(rnd.pending) >= _WRITE_EVENTS:
                if not chunked:
                    await conn.execute("BEGIN")
                    chunked = True
                await self._insert(conn, rnd.pending)
                rnd.pending = []

    async def _finish(
        self,
        conn: asyncpg.Connection,
        stream: ReplicationStream,
        rnd: _Round,
        chunked: bool,
        durability: _Durability,
    ) -> _Round:
        """Write a streamed batch (whole transactions), hand it to this node's hub,
        confirm what is durable to the engine; the next batch's round."""
        writing = time.time()
        if rnd.written_end:
            self._announce(rnd)
            durability.bound(await self._insert(conn, rnd.pending, progress=rnd))
        if chunked:
            await conn.execute("COMMIT")
        if rnd.written_end:
            if stagetimes.enabled():
                first = rnd.position - len(rnd.handoff or ()) + 1
                now = time.time()
                stagetimes.record("leader", first, rnd.position, rnd.polled, writing, writing, now)
            if self.on_written is not None:
                self.on_written(rnd.handoff or [])
        done_lsn = max(rnd.written_end, rnd.done_lsn)
        # Every transaction up to the last end seen is written or had nothing to write.
        durability.written(max(rnd.last_end, done_lsn))
        stream.confirm(durability.due(stream.received))
        return _Round(done_lsn, rnd.position)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        last_lsn, position = await self._progress(conn)
        seen_flush = -1
        last_advance = last_prune = last_activity = 0.0
        advanced_to = -1
        # Whether a round wrote events since the last standby snapshot, and where that
        # snapshot was logged (see below).
        wrote = False
        snapshot_lsn = int(await conn.fetchval("SELECT pg_current_wal_lsn()"))
        while True:
            flush = int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()"))
            polled = time.time()
            now = time.monotonic()
            if now - last_prune > _PRUNE_EVERY_SECONDS:
                last_prune = now
                await self._prune(conn)
            # WAL that publishes nothing (writes to helios_kv, Redis's tables, or to
            # helios) counts as quiet: without this, steady Redis writes kept the leader
            # peeking back to back (about 15% of the node's CPU and ~30 us of engine CPU
            # per Redis write).
            pause = poll_pause(self.settings.poll_interval, now - last_activity)
            if flush == seen_flush:
                await asyncio.sleep(pause)
                continue
            done = await self._round(conn, flush, _Round(last_lsn, position, polled=polled))
            if done.messages:
                last_activity = now
            last_end = max(done.last_end, last_lsn)
            if done.written_end:
                last_lsn, position = done.written_end, done.position
                wrote = True
            # Without a limit, every transaction committed before `flush` was returned;
            # with one, only those up to the last commit in the result.
            limited = done.messages >= self.settings.batch_changes
            target = last_end if limited else flush
            seen_flush = -1 if limited else flush
            # Advancing costs a decoding pass of its own; transactions peeked again before
            # it are skipped by their end LSN, so it runs at most every 100 ms.
            due = limited or now - last_advance > _ADVANCE_EVERY_SECONDS
            if due and target != advanced_to and (not limited or last_end > 0):
                await conn.execute(
                    "SELECT pg_replication_slot_advance($1, $2::pg_lsn)", self.slot, target
                )
                advanced_to = target
                last_advance = now
                if self._log_snapshots and (
                    wrote or target - snapshot_lsn >= _SNAPSHOT_AFTER_BYTES
                ):
                    wrote = False
                    snapshot_lsn = await self._log_snapshot(conn) or target
            if not done.messages:
                await asyncio.sleep(pause)  # new WAL, nothing published in it

    async def _log_snapshot(self, conn: asyncpg.Connection) -> int | None:
        """Let the slot's restart point follow the advance.

        Every peek (and advance) decodes the WAL from the slot's *restart* LSN, not from
        where it was advanced to; the restart LSN only moves to a running-transactions
        record that an advance has passed, and the engine writes one about every 15 s.
        So each peek re-decoded up to 15 s of WAL (the events' own inserts included):
        tens of milliseconds, growing until the next such record. One written after
        each advance that follows new events (not after a quiet one, so a quiet engine
        stays quiet) keeps the restart point within about two advances (~200 ms). Writes
        that publish nothing (helios_kv's Redis data, for one) are decoded by every peek
        too, so one is also logged once an advance has passed 256 KiB of WAL without
        events (the record itself is far smaller, so it never triggers the next one).
        Returns the record's LSN.
        """
        try:
            return int(await conn.fetchval("SELECT pg_log_standby_snapshot()"))
        except (asyncpg.UndefinedFunctionError, asyncpg.InsufficientPrivilegeError) as exc:
            # PostgreSQL before 16, or a role not allowed: peeks cost more, nothing else.
            log.info("change capture cannot log standby snapshots: %s", exc)
            self._log_snapshots = False
            return None

    async def _round(self, conn: asyncpg.Connection, flush: int, rnd: _Round) -> _Round:
        """Peek up to ``flush`` and write the events; hand them to this node's hub.

        The common round is small (a few transactions since the last one): one peek
        limited to ``_SMALL_ROUND + 1`` messages, then, if it returned all of them, one
        statement that writes the events, the progress row and the NOTIFY atomically.
        That is two engine round trips instead of six (BEGIN, the cursor, its fetch,
        the write, COMMIT): on a crowded machine each round trip is a wait for the
        engine backend and then the node to be scheduled, the largest part of the
        commit-to-delivery time. A bigger round is peeked again through the cursor.
        """
        start, sent = rnd.position, time.time()
        rows = await conn.fetch(
            _PEEK + " LIMIT $5",
            self.slot,
            flush,
            self.settings.batch_changes,
            PUBLICATION,
            _SMALL_ROUND + 1,
        )
        back = time.time()
        if len(rows) > _SMALL_ROUND:
            await self._big_round(conn, flush, rnd)
        else:
            for row in rows:
                rnd.messages += 1
                if rnd.messages % _YIELD_EVERY_MESSAGES == 0:
                    await asyncio.sleep(0)
                await self._decode(conn, pgoutput.parse_message(row["data"]), rnd)
            if rnd.written_end:
                # One statement: nothing visible before all of it is written.
                self._announce(rnd)
                await self._insert(conn, rnd.pending, progress=rnd)
                rnd.pending = []
        if rnd.written_end and stagetimes.enabled():
            written = time.time()
            stagetimes.record("leader", start + 1, rnd.position, rnd.polled, sent, back, written)
        if rnd.written_end and self.on_written is not None:
            # The local hub takes a small round from memory; a big one it reads from
            # the table in pages, like any other node.
            self.on_written(rnd.handoff or [])
        return rnd

    def _announce(self, rnd: _Round) -> None:
        if rnd.handoff is not None and self.on_writing is not None:
            self.on_writing(rnd.position)

    async def _big_round(self, conn: asyncpg.Connection, flush: int, rnd: _Round) -> None:
        """Peek up to ``flush`` through a cursor and write the events as they decode.

        The peek's result (whole transactions; one may be huge) stays in the engine,
        which spills it to disk; this node holds at most one fetch of messages and one
        chunk of events. Everything is one engine transaction: the events, then the
        progress row and the NOTIFY, commit together, so no event is visible (or
        delivered) before the whole round, and its transactions, are written.
        """
        async with conn.transaction():
            cursor = await conn.cursor(
                _PEEK, self.slot, flush, self.settings.batch_changes, PUBLICATION
            )
            while True:
                rows = await cursor.fetch(_FETCH_MESSAGES)
                for row in rows:
                    rnd.messages += 1
                    if rnd.messages % _YIELD_EVERY_MESSAGES == 0:
                        # Decoding a big transaction must not hold the event loop that
                        # serves every client.
                        await asyncio.sleep(0)
                    await self._decode(conn, pgoutput.parse_message(row["data"]), rnd)
                    if len(rnd.pending) >= _WRITE_EVENTS:
                        await self._insert(conn, rnd.pending)
                        rnd.pending = []
                if len(rows) < _FETCH_MESSAGES:
                    break
            if rnd.written_end:
                await self._insert(conn, rnd.pending, progress=rnd)
                rnd.pending = []

    async def _decode(
        self, conn: asyncpg.Connection, message: pgoutput.Message, rnd: _Round
    ) -> None:
        if isinstance(message, pgoutput.Begin):
            # Transactions come in commit order, so one whose commit precedes the end of
            # the last one written was written before (a crash between write and advance).
            rnd.live = message.final_lsn >= rnd.done_lsn
            rnd.xid = message.xid
            rnd.commit_lsn = message.final_lsn
            rnd.first_position = rnd.position + 1
            rnd.commit_time = _EPOCH_2000 + dt.timedelta(microseconds=message.commit_time_us)
            rnd.stamp = rnd.commit_time.isoformat()
        elif isinstance(message, pgoutput.Commit):
            if rnd.live and message.end_lsn > rnd.done_lsn and rnd.position >= rnd.first_position:
                rnd.written_end = message.end_lsn
            rnd.last_end = max(rnd.last_end, message.end_lsn)
            rnd.live = False
        elif isinstance(message, pgoutput.Relation):
            self._relations[message.oid] = message
            await self._learn_types(conn, [c.type_oid for c in message.columns])
            self._columns[message.oid] = tuple(
                (c.name, converter(self._types.get(c.type_oid, _TEXT))) for c in message.columns
            )
        elif rnd.live:
            for schema, table, kind, row, old_row in self._change(message):
                rnd.position += 1
                event = ChangeEvent.build(
                    position=rnd.position,
                    schema=schema,
                    table=table,
                    event_type=kind,
                    row=row,
                    old_row=old_row,
                    timestamp=rnd.stamp,
                    transaction_id=rnd.xid,
                )
                rnd.pending.append((event, rnd.commit_lsn, rnd.commit_time))
                if rnd.handoff is not None:
                    rnd.handoff.append(event)
                    if len(rnd.handoff) > _HANDOFF_EVENTS:
                        rnd.handoff = None

    def _change(
        self, message: pgoutput.Message
    ) -> list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any] | None]]:
        if isinstance(message, pgoutput.Insert):
            rel = self._relations[message.relation_oid]
            return [(rel.schema, rel.name, "INSERT", self._row(rel, message.new, None), None)]
        if isinstance(message, pgoutput.Update):
            rel = self._relations[message.relation_oid]
            old = self._row(rel, message.old, None) if message.old is not None else None
            new = self._row(rel, message.new, old)
            return [(rel.schema, rel.name, "UPDATE", new, old)]
        if isinstance(message, pgoutput.Delete):
            rel = self._relations[message.relation_oid]
            return [(rel.schema, rel.name, "DELETE", None, self._row(rel, message.old, None))]
        if isinstance(message, pgoutput.Truncate):
            out: list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any] | None]] = []
            for oid in message.relation_oids:
                rel = self._relations[oid]
                out.append((rel.schema, rel.name, "TRUNCATE", None, None))
            return out
        return []

    def _row(
        self,
        rel: pgoutput.Relation,
        values: tuple[pgoutput.TupleValue, ...],
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for (name, read), value in zip(self._columns[rel.oid], values, strict=False):
            if value.__class__ is str:
                row[name] = read(value)
            elif value is None:
                row[name] = None
            elif old is not None and name in old:  # pgoutput.UNCHANGED: the old row's
                row[name] = old[name]
        return row

    async def _learn_types(self, conn: asyncpg.Connection, oids: list[int]) -> None:
        unknown = sorted({oid for oid in oids if oid not in self._types})
        if not unknown:
            return
        rows = await conn.fetch(
            "SELECT t.oid, b.typname, b.typdelim, e.typname AS element FROM pg_type t "
            "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype "
            "ELSE t.oid END LEFT JOIN pg_type e ON e.oid = b.typelem "
            "AND b.typcategory = 'A' WHERE t.oid = ANY($1::oid[])",
            unknown,
        )
        for row in rows:
            element = TypeInfo(row["element"]) if row["element"] else None
            self._types[int(row["oid"])] = TypeInfo(row["typname"], element, row["typdelim"])

    async def _insert(
        self,
        conn: asyncpg.Connection,
        events: list[tuple[ChangeEvent, int, dt.datetime]],
        progress: _Round | None = None,
    ) -> int:
        """One chunk of events; with ``progress``, also the progress row and the NOTIFY
        (one statement: for a small round, the whole write is one round trip), and then
        the engine's WAL insert position as the statement ran (past the commit of every
        earlier write)."""
        if progress is not None and 0 < len(events) <= _FEW_EVENTS:
            # (none: a big transaction's last chunk was full; the arrays take no rows)
            return await self._insert_few(conn, events, progress)
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
        for event, commit_lsn, commit_time in events:
            values = (
                event.position, commit_lsn, commit_time, event.transaction_id,
                event.schema, event.table, event.event_type, event.payload.decode(),
            )  # fmt: skip
            for target, value in zip(columns, values, strict=True):
                target.append(value)
        if progress is None:
            await conn.execute(_INSERT_EVENTS, *columns)
            return 0
        inserted = await conn.fetchval(
            _INSERT_EVENTS_WITH_PROGRESS,
            *columns,
            self.slot,
            progress.written_end,
            progress.position,
            CHANNEL,
            encode_notice(progress.position, progress.handoff),
            column=1,
        )
        return int(inserted)

    async def _insert_few(
        self,
        conn: asyncpg.Connection,
        events: list[tuple[ChangeEvent, int, dt.datetime]],
        progress: _Round,
    ) -> int:
        """:meth:`_insert` for a few events, each column a parameter of its own."""
        if self._few_on is None or self._few_on[0] is not conn:
            self._few_on = (conn, {})
        prepared = self._few_on[1].get(len(events))
        if prepared is None:
            prepared = await conn.prepare(_few_events_with_progress(len(events)))
            self._few_on[1][len(events)] = prepared
        values: list[Any] = []
        for event, commit_lsn, commit_time in events:
            values += (
                event.position, commit_lsn, commit_time, event.transaction_id,
                event.schema, event.table, event.event_type, event.payload.decode(),
            )  # fmt: skip
        inserted = await prepared.fetchval(
            *values,
            self.slot,
            progress.written_end,
            progress.position,
            CHANNEL,
            encode_notice(progress.position, progress.handoff),
            column=1,
        )
        return int(inserted)

    async def _prune(self, conn: asyncpg.Connection) -> None:
        await prune(conn, self.slot, self.settings.retention_seconds)


async def prune(conn: Any, slot: str, retention_seconds: float) -> int:
    """The retention sweep: delete the events committed more than ``retention_seconds``
    ago (a prefix of positions) and record how far; returns ``pruned_through``.

    The leader runs it every 10 s; ``heliosdb changes prune`` runs it on demand.
    """
    value = await conn.fetchval(
        "WITH cut AS (SELECT max(position) AS p FROM helios.change_events "
        "WHERE commit_time < now() - make_interval(secs => $1::float8)), "
        "gone AS (DELETE FROM helios.change_events WHERE position <= (SELECT p FROM cut)), "
        "moved AS (UPDATE helios.change_capture SET pruned_through = (SELECT p FROM cut) "
        "WHERE slot_name = $2 AND (SELECT p FROM cut) > pruned_through "
        "RETURNING pruned_through) "
        "SELECT coalesce((SELECT pruned_through FROM moved), "
        "(SELECT pruned_through FROM helios.change_capture WHERE slot_name = $2), 0)",
        retention_seconds,
        slot,
    )
    return int(value)


async def _quiet_decoding_log(conn: asyncpg.Connection) -> None:
    """Keep this session's lines out of the engine's log: every peek and advance logs
    "starting logical decoding" and "found consistent point" at LOG, hundreds of lines a
    second under steady writes. For the server log, LOG ranks above ERROR, so only FATAL
    and PANIC still go there; this session's errors reach the node, which logs them
    itself. Needs a superuser (the embedded engine's); elsewhere the engine's own
    configuration decides."""
    try:
        await conn.execute("SET log_min_messages = fatal")
    except asyncpg.InsufficientPrivilegeError:
        log.info("change capture: cannot set log_min_messages; decoding is logged")
