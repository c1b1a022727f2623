"""The documents service: MongoDB's data model over engine tables (see catalog.py).

Every statement runs on an engine connection of the principal's access level, so a
read-only key cannot write even through a path this module forgot to check. Filters,
sorts, skips, limits and simple groups run in the engine; Python sees only the
documents a statement selected.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import orjson
from bson.objectid import ObjectId
from bson.regex import Regex

from heliosdb.engine import Access, Engine, EngineConnection
from heliosdb.engine.codecs import dump_json
from heliosdb.engine.quoting import qualified, quote_ident, quote_literal
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError, denied, invalid
from heliosdb.security.principals import Principal
from heliosdb.services.documents import (
    bsonform,
    catalog,
    explained,
    inplace,
    keytables,
    matcher,
    pipeline,
    projection,
    streaming,
    transactions,
    updatelane,
    views,
)
from heliosdb.services.documents.catalog import CATALOG_SCHEMA, IndexSpec, table
from heliosdb.services.documents.filters import (
    Params,
    compile_filter,
    compile_order,
    compile_sort,
    equality_branches,
    equality_fields,
    plain_id,
    plain_shape,
)
from heliosdb.services.documents.lookups import (
    Batched,
    IdLookups,
    equal_union,
    scalar_first,
    scalar_half,
)
from heliosdb.services.documents.parking import Parking
from heliosdb.services.documents.pipelined import Done, PipelinedFinds
from heliosdb.services.documents.pushdown import (
    NotCompiled,
    Plan,
    Unordered,
    group_decoder,
    group_rows,
    leading,
    plan_pipeline,
)
from heliosdb.services.documents.updates import (
    apply_update,
    check_replacement,
    is_operator_update,
)
from heliosdb.services.documents.values import MISSING, candidates, equal, get_path

log = logging.getLogger("heliosdb.services.documents")
T = TypeVar("T")
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
TTL_INTERVAL_SECONDS = 60.0
INDEX_CACHE_SECONDS = 5.0
MAX_UPDATE_ATTEMPTS = 8
OPTIMISTIC_ATTEMPTS = 2
Document = dict[str, Any]


@dataclass(slots=True)
class WriteError:
    index: int
    error: HeliosError


@dataclass(slots=True)
class InsertResult:
    inserted: int = 0
    errors: list[WriteError] = field(default_factory=list)


@dataclass(slots=True)
class UpdateResult:
    matched: int = 0
    modified: int = 0
    upserted_id: Any = MISSING
    before: Document | None = None
    after: Document | None = None


@dataclass(slots=True)
class FindQuery:
    filter: Document | None = None
    sort: Document | None = None
    skip: int = 0
    limit: int = 0
    projection: Document | None = None


async def _fetch(conn: EngineConnection, sql: str, values: list[Any]) -> list[Any]:
    """Rows of ``sql``: the hot statements (find, aggregate, in-place update) go through
    ``run_prepared``, straight from asyncpg's statement cache, without the timeout and
    pool-proxy layers of ``Connection.fetch``; engine errors propagate as from fetch."""
    records, _ = await conn.run_prepared(sql, lambda _stmt: values)
    return records


def read_only_denied(action: str = "write") -> HeliosError:
    return denied(f"this key is read-only and may not {action}")


class _Statement:
    """A pooled engine connection of the principal's access level for one statement (or
    a client transaction's own connection, see transactions.py). A class rather than an
    ``asynccontextmanager``: it runs on every statement, and the generator costs more."""

    __slots__ = ("lease", "principal", "store")

    def __init__(self, store: DocumentStore, principal: Principal) -> None:
        self.store = store
        self.principal = principal
        self.lease: Any = None

    async def __aenter__(self) -> EngineConnection:
        pinned = transactions.current()
        if pinned is not None:
            return pinned.conn  # a client transaction: its connection, its transaction
        principal = self.principal
        lease = self.store._parking.take(principal.access)
        if lease is not None:
            # The leased connection itself, not the pool's proxy (which forwards every
            # call through __getattr__); valid while the lease is held.
            conn: EngineConnection = lease.raw
            owner = conn.session_owner
            if owner is not None and owner != principal.id:
                try:
                    # The principal that left it needs no reset; anyone else gets one.
                    await conn.claim_session(principal.id)
                except BaseException as exc:
                    await lease.__aexit__(*sys.exc_info())
                    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
                        raise from_engine(exc) from None
                    raise
            conn.session_owner = None
            self.lease = lease
            return conn
        lease = self.store.engine.connection(principal.access, owner=principal.id)
        await lease.__aenter__()
        conn = lease.raw
        self.lease = lease
        if not self.store._catalog_ready:
            try:
                await self.store._ready_catalog(principal, conn)
            except BaseException:
                self.lease = None
                await lease.__aexit__(*sys.exc_info())
                raise
        return conn

    async def __aexit__(self, *exc_info: Any) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        if exc_info[0] is None:
            # The statement left the session as it found it: the next lease by this
            # principal may skip the reset round trip.
            conn = lease.raw
            conn.keep_session(self.principal.id)
            if not conn.is_in_transaction() and self.store._parking.keep(
                self.principal.access, lease
            ):
                return  # kept for the next statement (parking.py)
        await lease.__aexit__(*exc_info)


class DocumentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._catalog_ready = False
        self._known: set[tuple[str, str]] = set()
        self._ttl_task: asyncio.Task[None] | None = None
        self._parking = Parking()
        self._indexed: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        # what each name read lately is: a view resolved, or None (no view); see view()
        self._views: dict[tuple[str, str], tuple[float, views.Resolved | None]] = {}
        self._lookups = IdLookups()
        self._pipelined = PipelinedFinds(engine)
        self._update_lane = updatelane.UpdateLane(engine)
        # how many find streams may hold an engine connection (streaming.py)
        self.stream_slots = streaming.Slots(streaming.DEFAULT_HELD_STREAMS)
        # bytes one blocking aggregate stage may hold (settings: mongodb.max_stage_bytes)
        self.max_stage_bytes = pipeline.MAX_STAGE_BYTES
        # collections where the plain in-place UPDATE met a document the engine function
        # gives up on: they take the locking statement for a while (inplace.Refusals)
        self._refused = inplace.Refusals()
        # find_soon's statements by (db, coll, limit or not, filter shape): the index map
        # they were made with, the SQL, and which filter value goes in each parameter
        self._soon: dict[
            tuple[Any, ...], tuple[dict[str, str], str, tuple[int, ...], Batched | None]
        ] = {}

    # -- plumbing ----------------------------------------------------------------------
    def _conn(self, principal: Principal, *, write: bool = False) -> _Statement:
        """``async with self._conn(principal) as conn``: the connection for a statement."""
        if write and principal.read_only:
            raise read_only_denied()
        return _Statement(self, principal)

    async def _ready_catalog(self, principal: Principal, conn: EngineConnection | None) -> None:
        """The catalog's DDL, its functions and the form upgrades, once per node before
        its first statement: on ``conn`` when the principal may write, else on a
        connection of the read-write pool (which owns the catalog), since a read-only
        key's statements call its functions too (a sort: filters.order_by)."""
        if conn is not None and principal.access is Access.READ_WRITE:
            await self._run(catalog.ensure_catalog(conn))
        else:
            async with self.engine.connection(Access.READ_WRITE) as own:
                await self._run(catalog.ensure_catalog(own))
        async with self.engine.connection(Access.SYSTEM) as system:
            await catalog.follow_drops(system)
        self._catalog_ready = True

    async def begin(
        self, principal: Principal, *, lock_timeout_ms: int = 0
    ) -> transactions.DocumentTransaction:
        """Open a client transaction on a connection of the principal's access level
        (see transactions.py); the caller commits or rolls it back."""
        if not self._catalog_ready:
            # In a transaction of its own, committed first: the client's abort must not
            # take the catalog's DDL or its upgrade (catalog.upgrade_forms) back with it.
            await self._ready_catalog(principal, None)
        lease = self.engine.connection(principal.access, owner=principal.id)
        return await transactions.begin(lease, principal, lock_timeout_ms)

    @staticmethod
    async def _run(work: Awaitable[T]) -> T:
        try:
            return await work
        except asyncpg.PostgresError as exc:
            raise from_engine(exc) from None

    async def _create_and_run(
        self, conn: EngineConnection, db: str, coll: str, sql: str, args: list[Any]
    ) -> None:
        """``sql`` again after it found no table: create the collection and run it in one
        transaction. ``_known`` is not asked: another client may be creating the same
        collection right now and known it before committing; create_collection's lock
        waits for that creator, then finds its table."""
        self._known.discard((db, coll))
        self._indexed.pop((db, coll), None)  # a table dropped through SQL had indexes
        async with conn.transaction():
            await catalog.create_collection(conn, db, coll)
            await conn.execute(sql, *args)
        if transactions.current() is None:
            self._known.add((db, coll))

    async def _missing_ok(self, work: Awaitable[T], default: T) -> T:
        pinned = transactions.current()
        try:
            if pinned is not None:
                async with pinned.conn.transaction():  # a savepoint: see transactions.py
                    return await work
            return await work
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return default
        except asyncpg.PostgresError as exc:
            raise from_engine(exc) from None

    async def _index_map(self, conn: EngineConnection, db: str, coll: str) -> dict[str, str]:
        """Indexed expressions by leading path (cached briefly; stale only costs speed)."""
        now = time.monotonic()
        cached = self._indexed.get((db, coll))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with transactions.guard(conn):
                specs = await catalog.indexes(conn, db, coll)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            specs = []
        found = catalog.leading_keys(specs)
        if len(self._indexed) > 10_000:
            self._indexed.clear()
        self._indexed[(db, coll)] = (now + INDEX_CACHE_SECONDS, found)
        return found

    async def _indexes_for(self, principal: Principal, db: str, coll: str) -> dict[str, str]:
        cached = self._indexed.get((db, coll))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._conn(principal) as conn:
            return await self._index_map(conn, db, coll)

    # -- views (views.py) ------------------------------------------------------------------
    async def view(self, principal: Principal, db: str, coll: str) -> views.Resolved | None:
        """The view ``coll`` resolved to a pipeline over a collection, or None when it is
        none. Cached like the index map: a collection this node made or wrote is no view,
        and another node's new view (or a view's new definition) is seen here within
        INDEX_CACHE_SECONDS."""
        if (db, coll) in self._known:
            return None
        now = time.monotonic()
        cached = self._views.get((db, coll))
        if cached is not None and cached[0] > now:
            return cached[1]
        catalog.check_db_name(db)
        async with self._conn(principal) as conn:
            resolved = await self._missing_ok(views.resolve(conn, db, coll), None)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[(db, coll)] = (now + INDEX_CACHE_SECONDS, resolved)
        return resolved

    async def create_view(
        self, principal: Principal, db: str, name: str, view_on: Any, stages: Any
    ) -> None:
        catalog.check_db_name(db)
        catalog.check_collection_name(name)
        async with self._conn(principal, write=True) as conn, conn.transaction():
            await self._run(views.create(conn, db, name, view_on, stages))
        self._known.discard((db, name))  # a collection of that name dropped through SQL
        self._forget_views(db)

    async def modify_view(
        self, principal: Principal, db: str, name: str, view_on: Any, stages: Any
    ) -> bool:
        """collMod of a view's ``viewOn`` and ``pipeline`` (None: as it is); False when
        ``name`` is no view."""
        catalog.check_db_name(db)
        async with self._conn(principal, write=True) as conn, conn.transaction():
            changed = await self._run(views.modify(conn, db, name, view_on, stages))
        self._forget_views(db)
        return changed

    async def list_views(self, principal: Principal, db: str) -> list[views.View]:
        catalog.check_db_name(db)
        async with self._conn(principal) as conn:
            return await self._missing_ok(views.listed(conn, db), [])

    async def _refuse_view(self, principal: Principal, db: str, coll: str) -> None:
        """After a write found nothing: CommandNotSupportedOnView if ``coll`` is a view
        (asked only then, so writes that find documents pay nothing for views)."""
        if (db, coll) not in self._known and await self.view(principal, db, coll) is not None:
            raise views.not_on_view(db, coll)

    def _forget_views(self, db: str) -> None:
        # a view over this one resolves through it: every name of the database again
        for key in [k for k in self._views if k[0] == db]:
            del self._views[key]

    # -- databases and collections -----------------------------------------------------------
    async def list_databases(self, principal: Principal) -> list[Document]:
        async with self._conn(principal) as conn:
            rows = await self._missing_ok(
                conn.fetch(
                    f"SELECT db, count(*) AS n, coalesce(sum(pg_total_relation_size("
                    f"to_regclass(format('%I.%I', db, name)))), 0)::bigint AS size "
                    f"FROM {CATALOG_SCHEMA}.collections GROUP BY db ORDER BY db"
                ),
                [],
            )
        return [{"name": r["db"], "sizeOnDisk": r["size"], "empty": r["size"] == 0} for r in rows]

    async def list_collections(self, principal: Principal, db: str) -> list[Document]:
        catalog.check_db_name(db)
        async with self._conn(principal) as conn:
            rows = await self._missing_ok(
                conn.fetch(
                    f"SELECT name, uuid, options FROM {CATALOG_SCHEMA}.collections "
                    "WHERE db = $1 ORDER BY name",
                    db,
                ),
                [],
            )
        return [
            {
                "name": r["name"],
                "uuid": r["uuid"],
                "options": bsonform.decode(r["options"]) if r["options"] else {},
            }
            for r in rows
        ]

    async def create_collection(
        self, principal: Principal, db: str, coll: str, options: Document | None = None
    ) -> None:
        catalog.check_db_name(db)
        catalog.check_collection_name(coll)
        try:
            async with self._conn(principal, write=True) as conn, conn.transaction():
                created = await self._run(catalog.create_collection(conn, db, coll, options))
        except HeliosError as exc:
            if exc.details.get("kind") != "command_not_supported_on_view":
                raise
            created = False  # a view has the name
        if not created:
            raise HeliosError(
                ErrorCode.ALREADY_EXISTS,
                f"Collection {db}.{coll} already exists.",
                kind="namespace_exists",
            )
        self._known.add((db, coll))

    async def drop_collection(self, principal: Principal, db: str, coll: str) -> int | None:
        """Drop it (or the view of that name); the number of indexes it had, or None
        when it did not exist (or was a view)."""
        catalog.check_db_name(db)
        async with self._conn(principal, write=True) as conn, conn.transaction():
            if await self._run(views.drop(conn, db, coll)):
                self._forget_views(db)
                return None
            specs = await self._run(catalog.indexes(conn, db, coll))
            existed = await self._run(
                conn.fetchval(
                    f"DELETE FROM {CATALOG_SCHEMA}.collections WHERE db = $1 AND name = $2 "
                    "RETURNING 1",
                    db,
                    coll,
                )
            )
            count = await self._run(
                conn.fetchval(
                    f"WITH d AS (DELETE FROM {CATALOG_SCHEMA}.indexes WHERE db = $1 AND "
                    "collection = $2 RETURNING 1) SELECT count(*) FROM d",
                    db,
                    coll,
                )
            )
            if existed:
                await self._run(conn.execute(f"DROP TABLE IF EXISTS {table(db, coll)}"))
            for statement in (s for spec in specs for s in keytables.drop_ddl(spec)):
                await self._run(conn.execute(statement))
        self._known.discard((db, coll))
        self._indexed.pop((db, coll), None)
        return int(count) + 1 if existed else None

    async def empty_collection(self, conn: EngineConnection, db: str, coll: str) -> None:
        """Create the collection if missing, else delete all its documents (on ``conn``,
        inside the caller's transaction: $out, merges.py)."""
        if not await self._run(catalog.create_collection(conn, db, coll)):
            await self._run(conn.execute(f"DELETE FROM {table(db, coll)}"))

    async def drop_database(self, principal: Principal, db: str) -> None:
        catalog.check_db_name(db)
        for info in await self.list_collections(principal, db):
            await self.drop_collection(principal, db, info["name"])
        for view in await self.list_views(principal, db):
            await self.drop_collection(principal, db, view.name)
        async with self._conn(principal, write=True) as conn:
            # Only an empty schema goes: other interfaces may keep tables there.
            with contextlib.suppress(asyncpg.PostgresError):
                async with transactions.guard(conn):
                    await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(db)}")

    async def rename_collection(
        self, principal: Principal, db: str, coll: str, to_db: str, to_coll: str, drop_target: bool
    ) -> None:
        for name in (db, to_db):
            catalog.check_db_name(name)
        catalog.check_collection_name(to_coll)
        names = {c["name"] for c in await self.list_collections(principal, db)}
        if coll not in names:
            if await self.view(principal, db, coll) is not None:
                raise views.not_on_view(db, coll)
            raise catalog.not_found("Source collection does not exist")
        targets = {c["name"] for c in await self.list_collections(principal, to_db)}
        targets.update(v.name for v in await self.list_views(principal, to_db))
        if to_coll in targets:
            if not drop_target:
                raise HeliosError(
                    ErrorCode.ALREADY_EXISTS, "target namespace exists", kind="namespace_exists"
                )
            await self.drop_collection(principal, to_db, to_coll)
        async with self._conn(principal, write=True) as conn, conn.transaction():
            await self._run(conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(to_db)}"))
            if db != to_db:
                await self._run(
                    conn.execute(f"ALTER TABLE {table(db, coll)} SET SCHEMA {quote_ident(to_db)}")
                )
            if coll != to_coll:
                await self._run(
                    conn.execute(
                        f"ALTER TABLE {table(to_db, coll)} RENAME TO {quote_ident(to_coll)}"
                    )
                )
            await self._run(
                conn.execute(
                    f"UPDATE {CATALOG_SCHEMA}.collections SET db = $3, name = $4 "
                    "WHERE db = $1 AND name = $2",
                    db,
                    coll,
                    to_db,
                    to_coll,
                )
            )
            await self._run(
                conn.execute(
                    f"UPDATE {CATALOG_SCHEMA}.indexes SET db = $3, collection = $4 "
                    "WHERE db = $1 AND collection = $2",
                    db,
                    coll,
                    to_db,
                    to_coll,
                )
            )
            await self._run(catalog.rename_indexes(conn, to_db, to_coll))
        self._known.discard((db, coll))

    # -- writes -------------------------------------------------------------------------
    async def insert(
        self,
        principal: Principal,
        db: str,
        coll: str,
        documents: list[bytes],
        *,
        ordered: bool = True,
    ) -> InsertResult:
        catalog.check_db_name(db)
        catalog.check_collection_name(coll)
        rows: list[tuple[Any, bytes, Any]] = []
        result = InsertResult()
        bad: dict[int, HeliosError] = {}
        wide = False
        for index, raw in enumerate(documents):
            try:
                row, holds = _row_for_insert(raw)
                rows.append(row)
                wide = wide or holds
            except HeliosError as exc:
                bad[index] = exc
                rows.append((None, b"", None))
        if bad and ordered:
            first = min(bad)
            rows = rows[:first]
        usable = [(i, r) for i, r in enumerate(rows) if i not in bad]
        errors: dict[int, HeliosError] = {}
        async with self._conn(principal, write=True) as conn:
            try:
                if usable:
                    errors = await self._insert_rows(conn, db, coll, usable, ordered, wide)
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        for index, error in errors.items():
            bad[index] = error
        if ordered and bad:
            first = min(bad)
            bad = {first: bad[first]}
            result.inserted = len([i for i, _ in usable if i < first])
        else:
            result.inserted = len(usable) - len(errors)
        result.errors = [WriteError(i, bad[i]) for i in sorted(bad)]
        return result

    async def _insert_rows(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        rows: list[tuple[int, tuple[Any, bytes, Any]]],
        ordered: bool,
        wide: bool,
    ) -> dict[int, HeliosError]:
        """Insert in one statement; on collisions, work out which documents failed.
        ``wide``: some hold an Int64 or a Decimal128 (catalog.NARROW)."""
        target = table(db, coll)
        # the JSONB forms as text arrays, each element made here in one pass: asyncpg's
        # jsonb[] encoder calls back into Python per element (about 0.7 us a document
        # more, 1,000-document batches)
        columns = [
            [dump_json(r[0]) for _, r in rows],
            [r[1] for _, r in rows],
            [dump_json(r[2]) for _, r in rows],
        ]
        plain = catalog.narrow(
            f"INSERT INTO {target} (_id, bson, doc) "
            "SELECT * FROM unnest($1::text[]::jsonb[], $2::bytea[], $3::text[]::jsonb[])",
            wide,
        )
        try:
            try:
                async with transactions.guard(conn):
                    await conn.execute(plain, *columns)
                return {}
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                await self._create_and_run(conn, db, coll, plain, columns)
                return {}
        except asyncpg.UniqueViolationError:
            pass
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != keytables.PARALLEL_ARRAYS:
                raise
        async with conn.transaction():
            return await self._insert_colliding(conn, db, coll, rows, ordered, wide)

    async def _insert_colliding(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        rows: list[tuple[int, tuple[Any, bytes, Any]]],
        ordered: bool,
        wide: bool,
    ) -> dict[int, HeliosError]:
        target = table(db, coll)
        columns = [[r[0] for _, r in rows], [r[1] for _, r in rows], [r[2] for _, r in rows]]
        # Everything that does not collide goes in; RETURNING says which did.
        try:
            async with conn.transaction():
                inserted = await conn.fetch(
                    catalog.narrow(
                        f"INSERT INTO {target} (_id, bson, doc) SELECT s._id, s.bson, s.doc "
                        "FROM unnest($1::jsonb[], $2::bytea[], $3::jsonb[]) "
                        "WITH ORDINALITY AS s(_id, bson, doc, n) "
                        "ORDER BY s.n ON CONFLICT DO NOTHING RETURNING _id",
                        wide,
                    ),
                    *columns,
                )
        except asyncpg.PostgresError as exc:
            # A unique index's key table (keytables.py) refused a key, which ON CONFLICT
            # does not cover: each document on its own then.
            if not isinstance(exc, asyncpg.UniqueViolationError) and (
                exc.sqlstate != keytables.PARALLEL_ARRAYS
            ):
                raise
            return await self._insert_each(conn, db, coll, rows, ordered, wide)
        done: dict[bytes, int] = {}
        for r in inserted:
            key = orjson.dumps(r["_id"], option=orjson.OPT_SORT_KEYS)
            done[key] = done.get(key, 0) + 1
        failed: list[tuple[int, tuple[Any, bytes, Any]]] = []
        for index, row in rows:
            key = orjson.dumps(row[0], option=orjson.OPT_SORT_KEYS)
            if done.get(key, 0) > 0:
                done[key] -= 1
            else:
                failed.append((index, row))
        if ordered and failed:
            first = failed[0][0]
            failed_at = {index for index, _ in failed}
            await conn.execute(
                f"DELETE FROM {target} WHERE _id = ANY($1::jsonb[])",
                [row[0] for index, row in rows if index > first and index not in failed_at],
            )
            failed = failed[:1]
        # One that goes in on its own collided only with a document of this batch that a
        # later failure took back out: it stays.
        return await self._insert_each(conn, db, coll, failed, False, wide)

    async def _insert_each(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        rows: list[tuple[int, tuple[Any, bytes, Any]]],
        ordered: bool,
        wide: bool,
    ) -> dict[int, HeliosError]:
        """Each document in a savepoint of its own, in order; an ordered insert stops at
        the first that fails."""
        errors: dict[int, HeliosError] = {}
        for index, row in rows:
            try:
                async with conn.transaction():
                    await conn.execute(
                        catalog.narrow(
                            f"INSERT INTO {table(db, coll)} (_id, bson, doc) VALUES ($1, $2, $3)",
                            wide,
                        ),
                        *row,
                    )
            except asyncpg.UniqueViolationError as exc:
                errors[index] = await self._duplicate(conn, db, coll, exc, row)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate != keytables.PARALLEL_ARRAYS:
                    raise
                errors[index] = from_engine(exc)
            if ordered and errors:
                break
        return errors

    async def _duplicate(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        exc: asyncpg.UniqueViolationError,
        row: tuple[Any, bytes, Any] | None,
        document: Document | None = None,
    ) -> HeliosError:
        constraint = getattr(exc, "constraint_name", None) or ""
        spec = catalog.ID_INDEX
        specs = await catalog.indexes(conn, db, coll)
        for candidate in specs:
            if candidate.engine_name == constraint:
                spec = candidate
        if document is None:
            document = bsonform.decode(row[1]) if row else {}
        keyed = keytables.spec_for(specs, constraint)
        if keyed is not None:  # a unique index's key table: the engine names the key
            spec = keyed
            key_value = keytables.key_value(keyed, document, getattr(exc, "detail", None))
        else:
            key_value = {}
            for path in spec.key:
                value = get_path(document, path)
                key_value[path] = None if value is MISSING else value
        return _duplicate_key(db, coll, spec, key_value)

    async def update(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: Document | None,
        update: Any,
        *,
        upsert: bool = False,
        multi: bool = False,
        array_filters: list[Document] | None = None,
        sort: Document | None = None,
        want_documents: bool = False,
    ) -> UpdateResult:
        catalog.check_db_name(db)
        catalog.check_collection_name(coll)
        staged = isinstance(update, list)
        if staged:
            check_update_pipeline(update)
        elif not isinstance(update, dict):
            raise invalid("update must be a document", kind="failed_to_parse")
        operator = not staged and is_operator_update(update)
        if not operator and not staged:
            check_replacement(update)
            if multi:
                raise invalid(
                    "multi update is not supported for replacement-style update",
                    kind="failed_to_parse",
                )
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(query, params, indexed)
        # a filter to check again (params.recheck) reads every candidate, then keeps one
        keep = (lambda old: matcher.matches(old, query or {})) if params.recheck else None
        if (
            operator
            and not multi
            and not array_filters
            and not sort
            and not want_documents
            and keep is None
        ):
            # A top-level $set/$inc: the engine applies it in one statement (inplace.py).
            in_place = inplace.plan(update)
            if in_place is not None:
                async with self._conn(principal, write=True) as conn:
                    counts = await self._update_in_place(conn, db, coll, where, params, in_place)
                if counts is not None and (counts[0] or not upsert):
                    return UpdateResult(counts[0], counts[1])
        order = compile_order(sort, params)
        # Optimistic: read without locks, write back only rows still at the version read
        # (xmin), and redo the rows another writer changed in between. No transaction
        # is held open while Python applies the update.
        base = f"SELECT _id, bson, xmin::text::bigint AS v FROM {table(db, coll)} WHERE {where}"
        sql = base
        one = not multi and keep is None
        if one and order.by_id:  # by the primary key where that is MongoDB's order
            sql += f" AND _id = {order.first_id(table(db, coll), where)}"
        elif order.terms:
            sql += f" ORDER BY {order.terms}"
        if one:
            sql += " LIMIT 1"
        retry_sql = (base if one and order.by_id else sql).replace(
            f" WHERE {where}", f" WHERE ({where}) AND _id = ANY(${len(params.values) + 1}::jsonb[])"
        )
        result = UpdateResult()

        async def apply(old: Document, raw: bytes) -> Document:
            if staged:
                return await pipeline_update(old, update)
            if operator:
                # A second decode of the stored bytes is a private copy to change in place:
                # cheaper than deepcopy, and ``old`` stays as it was for findAndModify.
                fresh = bsonform.decode(raw)
                return apply_update(
                    fresh, update, query=query, array_filters=array_filters, in_place=True
                )
            return _replacement(old, update)

        async with self._conn(principal, write=True) as conn:
            try:
                retry: list[Any] | None = None
                for attempt in range(MAX_UPDATE_ATTEMPTS):
                    statement = sql if retry is None else retry_sql
                    args = [*params.values] + ([] if retry is None else [retry])
                    if attempt < OPTIMISTIC_ATTEMPTS:
                        found, changed, written = await self._update_round(
                            conn, db, coll, statement, args, apply, result, keep, multi
                        )
                    else:
                        # Contended: lock the rows (in _id order, so two updates cannot
                        # deadlock) so this round cannot lose again.
                        if not order.terms:
                            statement = statement.replace(" LIMIT 1", "") + " ORDER BY _id"
                            statement += "" if multi or keep else " LIMIT 1"
                        async with conn.transaction():
                            found, changed, written = await self._update_round(
                                conn,
                                db,
                                coll,
                                statement + " FOR UPDATE",
                                args,
                                apply,
                                result,
                                keep,
                                multi,
                            )
                    if attempt == 0:
                        result.matched = len(found)
                    result.modified += len(written)
                    if len(written) == len(changed):
                        break
                    # Another writer got there first: redo just those documents.
                    done = {orjson.dumps(w, option=orjson.OPT_SORT_KEYS) for w in written}
                    retry = [
                        c[0]
                        for c in changed
                        if orjson.dumps(c[0], option=orjson.OPT_SORT_KEYS) not in done
                    ]
                else:
                    raise HeliosError(
                        ErrorCode.CONFLICT,
                        "the documents kept changing under this update; try again",
                        kind="write_conflict",
                    )
                if not found and upsert:
                    if staged:
                        seed = _upsert_document(query, {}, False, None)
                        new = await pipeline_update(seed, update)
                    else:
                        new = _upsert_document(query, update, operator, array_filters)
                    new_row, wide = _row_for_insert(_encode_checked(new))
                    await self._insert_one(conn, db, coll, new_row, wide)
                    result.upserted_id = new["_id"]
                    if want_documents:
                        result.after = new
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        if not result.matched and result.upserted_id is MISSING:
            await self._refuse_view(principal, db, coll)
        return result

    def update_soon(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: Document,
        update: Document,
        upsert: bool,
        done: updatelane.Done,
    ) -> bool:
        """An ``update_one`` (no multi, arrayFilters, sort) started on the principal's
        pipelined engine connection without awaiting, for the MongoDB lone-update path
        (updatelane.py): True when started, and ``done`` later gets (matched, modified)
        as ``update`` would count them, an error ``update`` would report, or None when the
        caller must call ``update`` (nothing was written); False when nothing started."""
        cached = self._indexed.get((db, coll))
        if (
            principal.read_only
            or cached is None
            or cached[0] <= time.monotonic()
            or transactions.current() is not None
        ):
            return False  # the index map is refreshed by the pool path (an await)
        in_place = inplace.plan(update)
        if in_place is None:
            return False
        params = Params()
        try:
            catalog.check_db_name(db)
            catalog.check_collection_name(coll)
            where = compile_filter(query, params, cached[1])
        except Exception:  # noqa: BLE001 - update() reports it
            return False
        if params.recheck:
            return False  # update() checks the rows again
        sql, values = self._in_place(db, coll, where, params, in_place)
        return self._update_lane.start(principal, sql, values, upsert, done)

    def _in_place(
        self, db: str, coll: str, where: str, params: Params, plan: inplace.InPlace
    ) -> tuple[str, list[Any]]:
        """The in-place statement of ``plan`` and its values: the plain ``UPDATE`` where
        it applies (inplace.statement), unless a document of this collection has made
        the function give up under it (then the locking statement says so without
        failing, for the next inplace.Refusals.RETRY_AFTER updates)."""
        plain = plan.changes and self._refused.plain((db, coll))
        sql = inplace.statement(table(db, coll), where, len(params.values) + 1, plain, plan.wide)
        return sql, [*params.values, plan.ops, plan.elements, plan.values]

    async def _update_in_place(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        where: str,
        params: Params,
        plan: inplace.InPlace,
    ) -> tuple[int, int] | None:
        """(matched, modified) of an update the engine applied in one statement, or None
        when the general path must run (and report any error) instead."""
        sql, args = self._in_place(db, coll, where, params, plan)
        try:
            if transactions.current() is None:
                rows = await _fetch(conn, sql, args)
                self._update_lane.learn(sql)
            else:
                async with conn.transaction():  # a savepoint, as transactions.guard makes
                    rows = await _fetch(conn, sql, args)
        except (
            asyncpg.UndefinedTableError,
            asyncpg.InvalidSchemaNameError,
            asyncpg.UndefinedFunctionError,
            asyncpg.UniqueViolationError,
        ):
            return None
        except asyncpg.NotNullViolationError:
            # the plain statement met a document the function does not handle
            self._refused.refuse((db, coll))
            return None
        except asyncpg.PostgresError as exc:
            raise from_engine(exc) from None
        if not rows or rows[0]["unsupported"]:
            return None
        return int(rows[0]["matched"]), int(rows[0]["modified"])

    async def _update_round(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        statement: str,
        args: list[Any],
        apply: Callable[[Document, bytes], Awaitable[Document]],
        result: UpdateResult,
        keep: Callable[[Document], bool] | None = None,
        multi: bool = True,
    ) -> tuple[list[Any], list[tuple[Any, bytes, Any, int]], list[Any]]:
        """Read matching rows, apply the update, write back what changed; what happened.
        ``keep``: the exact filter for rows the statement selects a superset of."""
        try:
            async with transactions.guard(conn):
                rows = await conn.fetch(statement, *args)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return [], [], []
        found: list[Any] = []
        changed: list[tuple[Any, bytes, Any, int]] = []
        wide = False
        for row in rows:
            if found and not multi:
                break
            raw = row["bson"]
            old = bsonform.decode(raw)
            if keep is not None and not keep(old):
                continue
            found.append(row)
            new = await apply(old, raw)
            encoded = _encode_checked(new)
            if encoded != raw:
                form, holds = bsonform.wide_form(new)
                wide = wide or holds
                changed.append((bsonform.id_bind(row["_id"]), encoded, form, row["v"]))
            result.before, result.after = old, new
        written = await self._write_changes(conn, db, coll, changed, wide) if changed else []
        return found, changed, written

    async def read_versions(
        self, principal: Principal, db: str, coll: str, query: Document
    ) -> list[tuple[Document, int]]:
        """The documents ``query`` selects, each with its row's version (for
        ``write_versions``: $merge, merges.py), in one statement."""
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(query, params, indexed)
        sql = f"SELECT bson, xmin::text::bigint AS v FROM {table(db, coll)} WHERE {where}"
        async with self._conn(principal) as conn:
            rows = await self._missing_ok(conn.fetch(sql, *params.values), [])
        found = [(bsonform.decode(r["bson"]), int(r["v"])) for r in rows]
        return [f for f in found if matcher.matches(f[0], query)] if params.recheck else found

    async def write_versions(
        self, principal: Principal, db: str, coll: str, documents: list[tuple[Document, int]]
    ) -> None:
        """Write each document over its stored one, which ``read_versions`` read at that
        version, in one statement; a row changed since is a write conflict."""
        changed = []
        wide = False
        for document, version in documents:
            (identifier, raw, form), holds = _row_for_insert(_encode_checked(document))
            changed.append((identifier, raw, form, version))
            wide = wide or holds
        async with self._conn(principal, write=True) as conn:
            try:
                written = await self._write_changes(conn, db, coll, changed, wide)
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        if len(written) != len(changed):
            raise HeliosError(
                ErrorCode.CONFLICT,
                "documents changed under this write; try again",
                kind="write_conflict",
            )

    async def _insert_one(
        self, conn: EngineConnection, db: str, coll: str, row: tuple[Any, bytes, Any], wide: bool
    ) -> None:
        sql = catalog.narrow(
            f"INSERT INTO {table(db, coll)} (_id, bson, doc) VALUES ($1, $2, $3)", wide
        )
        try:
            try:
                async with transactions.guard(conn):
                    await conn.execute(sql, *row)
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                await self._create_and_run(conn, db, coll, sql, list(row))
        except asyncpg.UniqueViolationError as exc:
            raise await self._duplicate(conn, db, coll, exc, row) from None

    async def _write_changes(
        self,
        conn: EngineConnection,
        db: str,
        coll: str,
        changed: list[tuple[Any, bytes, Any, int]],
        wide: bool,
    ) -> list[Any]:
        """Write new versions of rows still at the version read; the _ids written.
        ``wide``: some hold an Int64 or a Decimal128 (catalog.NARROW)."""
        try:
            async with transactions.guard(conn):
                if len(changed) == 1:
                    # One row (update_one, the common case): a plain keyed UPDATE, with no
                    # arrays to encode and unnest.
                    (one,) = changed
                    status = await conn.execute(
                        catalog.narrow(
                            f"UPDATE {table(db, coll)} SET bson = $2, doc = $3 "
                            "WHERE _id = $1 AND xmin::text::bigint = $4",
                            wide,
                        ),
                        *one,
                    )
                    return [one[0]] if status.endswith(" 1") else []
                changed = sorted(
                    changed, key=lambda c: orjson.dumps(c[0], option=orjson.OPT_SORT_KEYS)
                )
                rows = await conn.fetch(
                    catalog.narrow(
                        f"UPDATE {table(db, coll)} AS t SET bson = s.bson, doc = s.doc "
                        "FROM unnest($1::jsonb[], $2::bytea[], $3::jsonb[], $4::bigint[]) "
                        "AS s(_id, bson, doc, v) "
                        "WHERE t._id = s._id AND t.xmin::text::bigint = s.v RETURNING t._id",
                        wide,
                    ),
                    [c[0] for c in changed],
                    [c[1] for c in changed],
                    [c[2] for c in changed],
                    [c[3] for c in changed],
                )
        except asyncpg.DeadlockDetectedError:
            return []  # nothing was written; the caller's next round redoes them
        except asyncpg.UniqueViolationError as exc:
            document = bsonform.decode(changed[0][1]) if len(changed) == 1 else None
            row = changed[0][:3] if len(changed) == 1 else None
            raise await self._duplicate(conn, db, coll, exc, row, document) from None
        return [r["_id"] for r in rows]

    async def delete(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: Document | None,
        *,
        limit_one: bool,
        sort: Document | None = None,
    ) -> tuple[int, Document | None]:
        catalog.check_db_name(db)
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(query, params, indexed)
        target = table(db, coll)
        if params.recheck:
            order = compile_sort(sort, params) if limit_one else ""
            pick = f"SELECT _id, bson FROM {target} WHERE {where}"
            pick += f" ORDER BY {order} FOR UPDATE" if order else " FOR UPDATE"

            async def rechecked(conn: EngineConnection) -> tuple[int, Document | None]:
                # the candidates locked, checked against the exact filter, then deleted
                async with conn.transaction():
                    chosen = []
                    for row in await conn.fetch(pick, *params.values):
                        document = bsonform.decode(row["bson"])
                        if matcher.matches(document, query or {}):
                            chosen.append((bsonform.id_bind(row["_id"]), document))
                            if limit_one:
                                break
                    if chosen:
                        await conn.execute(
                            f"DELETE FROM {target} WHERE _id = ANY($1::jsonb[])",
                            [c[0] for c in chosen],
                        )
                return len(chosen), chosen[0][1] if limit_one and chosen else None

            async with self._conn(principal, write=True) as conn:
                outcome = await self._missing_ok(rechecked(conn), (0, None))
            if not outcome[0]:
                await self._refuse_view(principal, db, coll)
            return outcome
        if limit_one:
            first = compile_order(sort, params)
            pick = f"SELECT _id FROM {target} WHERE {where}"
            pick += f" ORDER BY {first.terms}" if first.terms else ""
            pick = f"({pick} LIMIT 1 FOR UPDATE)"
            if first.by_id:  # by the primary key where that is MongoDB's order
                pick = first.first_id(target, where, lock=True)
            sql = f"DELETE FROM {target} WHERE _id = {pick} RETURNING bson"
        else:
            sql = f"DELETE FROM {target} WHERE {where} RETURNING 1"
        async with self._conn(principal, write=True) as conn:
            rows = await self._missing_ok(conn.fetch(sql, *params.values), [])
        if not rows:
            await self._refuse_view(principal, db, coll)
        removed = bsonform.decode(rows[0]["bson"]) if limit_one and rows else None
        return len(rows), removed

    # -- reads --------------------------------------------------------------------------
    async def find(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: FindQuery,
        probe: int = streaming.PROBE_ROWS,
    ) -> list[bytes | Document]:
        """The documents ``query`` selects: all of them, or when there may be more than
        ``probe - 1``, the first ``probe`` in a ``streaming.Streamed`` list whose
        ``stream`` reads the rest a batch at a time (MongoDB cursors, cursors.py)."""
        catalog.check_db_name(db)
        if (db, coll) not in self._known:
            view = await self.view(principal, db, coll)
            if view is not None:
                stages = views.find_stages(
                    view, query.filter, query.sort, query.skip, query.limit, query.projection
                )
                return await self.aggregate(principal, db, view.source, stages, probe=probe)
        spec = query.filter
        if query.projection:
            projection.check(query.projection)
        found: list[bytes]
        if (
            spec is not None
            and len(spec) == 1
            and "_id" in spec
            and plain_id(spec["_id"])
            and not query.sort
            and not query.skip
            and transactions.current() is None
        ):
            # One plain _id: alone when no other is in flight for this collection and
            # principal, else in the next batch (lookups.py).
            target = table(db, coll)
            key = (principal.id, target, principal.access)
            lookups = self._lookups
            if lookups.busy(key):
                found = await lookups.queue(key, bsonform.id_form(spec["_id"]))
            else:
                lookups.begin(key)
                try:
                    found = await self._find_rows(principal, db, coll, query) or []
                finally:
                    lookups.end(key, self._lookup_batch, principal, target)
        else:
            rows = await self._find_rows(principal, db, coll, query, probe)
            if rows is None:
                return await self._streamed(principal, db, coll, query, probe)
            found = rows
        if not query.projection:
            return found  # type: ignore[return-value]  # list[bytes] is one, read-only
        return [projection.project(bsonform.decode(r), query.projection, spec) for r in found]

    async def _streamed(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: FindQuery,
        probe: int,
        transform: streaming.Transform | None = None,
    ) -> list[bytes | Document]:
        """The first ``probe`` documents of a result that may have more, as a
        ``streaming.Streamed`` list whose ``stream`` reads the rest (streaming.py)."""
        indexed = await self._indexes_for(principal, db, coll)
        whole = FindQuery(query.filter, query.sort, query.skip, query.limit)
        recheck = _find_statement(db, coll, whole, indexed, total=True)[2]

        def statement(offset: int, count: int) -> tuple[str, list[Any]]:
            if recheck:
                sql, values, _ = _find_statement(db, coll, whole, indexed, total=True)
                sql += f" OFFSET ${len(values) + 1}::bigint"
                values.append(offset)
                if count:
                    sql += f" LIMIT ${len(values) + 1}::bigint"
                    values.append(count)
                return sql, values
            rest = query.limit - offset if query.limit else 0
            limit = min(rest, count) if rest and count else rest or count
            part = FindQuery(query.filter, query.sort, query.skip + offset, limit)
            return _find_statement(db, coll, part, indexed, total=True)[:2]

        stream = streaming.Stream(
            self.engine,
            principal,
            statement,
            functools.partial(self._lookup_batch, principal),
            recheck=query.filter if recheck else None,
            skip=query.skip,
            limit=query.limit,
            fields=query.projection,
            spec=query.filter,
            slots=self.stream_slots,
            transform=transform,
        )
        return await streaming.first(stream, probe)

    def find_soon(
        self,
        principal: Principal,
        db: str,
        coll: str,
        spec: Document | None,
        limit: int,
        done: Done,
    ) -> bool:
        """A plain find (filter, limit) started on the principal's pipelined engine
        connection without awaiting (pipelined.py), for the MongoDB hot path: True when
        started, and ``done`` later gets what ``find`` would return for
        ``FindQuery(filter=spec, limit=limit)`` (the stored BSON of each match) or None
        when the caller must call ``find``; False when nothing started."""
        cached = self._indexed.get((db, coll))
        if cached is None or cached[0] <= time.monotonic() or transactions.current() is not None:
            return False  # the index map is refreshed by the pool path (an await)
        shape = plain_shape(spec) if spec else ()
        # One plain _id (its SQL is ``_id = $1``): finds of the same step share a statement.
        one_id: Any = MISSING
        if shape is None and spec and len(spec) == 1 and "_id" in spec and plain_id(spec["_id"]):
            # one plain _id of any type (ObjectId, a document...): ``_id = $1``, its id_form
            one_id = spec["_id"]
            shape = ("_id", type(one_id))
        key = (db, coll, limit > 0, shape)
        plan = self._soon.get(key) if shape is not None else None
        if plan is not None and plan[0] is cached[1]:
            # the same statement as last time, the values in the same places
            if one_id is not MISSING:
                values = [bsonform.id_form(one_id)]
            else:
                where = plan[2]
                leaves = list(spec.values()) if spec else []
                values = [leaves[where[0]]] if len(where) == 1 else [leaves[i] for i in where]
            if limit:
                values.append(limit)
            return self._pipelined.start(principal, plan[1], values, done, plan[3])
        try:
            catalog.check_db_name(db)
            query = FindQuery(filter=spec, limit=limit)
            sql, values, recheck = _find_statement(db, coll, query, cached[1])
        except Exception:  # noqa: BLE001 - find() reports it
            return False
        if recheck:
            return False  # find() checks the rows again
        # (a find by one plain _id has a shape by now)
        batch = _batched(db, coll, spec, limit, cached[1]) if shape else None
        if shape is not None:
            bound = values[:-1] if limit else values
            places: tuple[int, ...] | None
            if one_id is not MISSING:
                places = () if bound == [bsonform.id_form(one_id)] else None
            else:
                places = _places(list(spec.values()) if spec else [], bound)
            if places is not None:
                if len(self._soon) >= 4096:
                    self._soon.clear()
                self._soon[key] = (cached[1], sql, places, batch)
        return self._pipelined.start(principal, sql, values, done, batch)

    def pipelined_finds(self) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """Finds answered through find_soon, and the statements that answered several
        at once with the finds they answered: by _id, by one equality (serverStatus)."""
        finds = self._pipelined
        batches, batched = finds.batches, finds.batched
        return finds.answered, (batches[False], batched[False]), (batches[True], batched[True])

    def pipelined_updates(self) -> int:
        """update_one answered through update_soon (serverStatus)."""
        return self._update_lane.answered

    async def _find_rows(
        self, principal: Principal, db: str, coll: str, query: FindQuery, probe: int = 0
    ) -> list[bytes] | None:
        """The stored BSON of every document ``query`` selects, in one statement; with
        ``probe``, None instead when there may be more than ``probe - 1`` of them."""
        cached = self._indexed.get((db, coll))
        if cached is not None and cached[0] > time.monotonic():
            indexed = cached[1]
        else:
            indexed = await self._indexes_for(principal, db, coll)
        bounded = query
        if probe and not 0 < query.limit < probe:
            bounded = FindQuery(query.filter, query.sort, query.skip, probe)
        sql, values, recheck = _find_statement(db, coll, bounded, indexed)
        if recheck and bounded is not query:
            return None  # the candidates' count says nothing: streaming.py reads them
        async with self._conn(principal) as conn:
            if transactions.current() is not None:
                rows = await self._missing_ok(_fetch(conn, sql, values), [])
            else:
                # _missing_ok(_fetch(...)) outside a transaction, two coroutines less.
                try:
                    rows, _ = await conn.run_prepared(sql, lambda _stmt: values)
                except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                    rows = []
                    # dropped by another node perhaps, and the name a view now (find)
                    self._known.discard((db, coll))
                except asyncpg.PostgresError as exc:
                    raise from_engine(exc) from None
                else:
                    self._pipelined.learn(sql)
        if recheck:
            raws = [bytes(r[0]) for r in rows]
            return matcher.recheck(raws, query.filter, int(query.skip), abs(int(query.limit)))
        if bounded is not query and len(rows) >= probe:
            return None  # more than fit: streaming.py reads them in a total order
        return [bytes(r[0]) for r in rows]

    def lookup_batches(self) -> tuple[int, int]:
        """(statements that served batched finds by _id, the finds they served)."""
        return self._lookups.batches, self._lookups.batched

    async def _lookup_batch(self, principal: Principal, sql: str, values: list[Any]) -> list[Any]:
        async with self._conn(principal) as conn:
            rows: list[Any] = await self._missing_ok(_fetch(conn, sql, values), [])
            return rows

    async def count(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: Document | None,
        skip: int = 0,
        limit: int = 0,
    ) -> int:
        catalog.check_db_name(db)
        view = await self.view(principal, db, coll)
        if view is not None:
            stages = views.count_stages(view, query, skip, limit)
            counted = await self.aggregate(principal, db, view.source, stages)
            return int(counted[0]["n"]) if counted else 0
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(query, params, indexed)
        if params.recheck:
            sql = f"SELECT bson FROM {table(db, coll)} WHERE {where}"
            async with self._conn(principal) as conn:
                rows = await self._missing_ok(conn.fetch(sql, *params.values), [])
            raws = [bytes(r[0]) for r in rows]
            return len(matcher.recheck(raws, query, int(skip), abs(int(limit))))
        inner = f"SELECT 1 FROM {table(db, coll)} WHERE {where}"
        if skip:
            inner += f" OFFSET {params.add(int(skip), 'bigint')}"
        if limit:
            inner += f" LIMIT {params.add(abs(int(limit)), 'bigint')}"
        async with self._conn(principal) as conn:
            return int(
                await self._missing_ok(
                    conn.fetchval(f"SELECT count(*) FROM ({inner}) AS s", *params.values), 0
                )
            )

    async def distinct(
        self, principal: Principal, db: str, coll: str, key: str, query: Document | None
    ) -> list[Any]:
        if not isinstance(key, str) or not key:
            raise invalid("'key' must be a non-empty string", kind="type_mismatch")
        view = await self.view(principal, db, coll)
        if view is not None:
            stages = views.find_stages(view, query, None, 0, 0, None)
            found = await self.aggregate(principal, db, view.source, stages)
            return distinct_values((as_document(d) for d in found), key)
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        sql = f"SELECT bson FROM {table(db, coll)} WHERE {compile_filter(query, params, indexed)}"
        async with self._conn(principal) as conn:
            rows = await self._missing_ok(conn.fetch(sql, *params.values), [])
        documents = (bsonform.decode(row["bson"]) for row in rows)
        if params.recheck:
            documents = (d for d in documents if matcher.matches(d, query or {}))
        return distinct_values(documents, key)

    async def aggregate(
        self,
        principal: Principal,
        db: str,
        coll: str | None,
        stages: list[Document],
        documents: list[Document] | None = None,
        allow_disk_use: bool = False,
        probe: int = 0,
    ) -> list[Any]:
        """Run ``stages`` over the collection, or over ``documents`` when ``coll`` is None.
        With ``probe``, a pipeline whose stages after the ones a find would run all
        stream (pipeline.STREAMING) is read as a find with ``probe`` is, a chunk at a
        time: a ``streaming.Streamed`` list when there may be more."""
        catalog.check_db_name(db)
        limits = pipeline.Limits(self.max_stage_bytes, allow_disk_use)
        if coll is None:
            return await pipeline.run(documents or [], stages, self._lookup(principal, db), limits)
        if (db, coll) not in self._known:
            view = await self.view(principal, db, coll)
            if view is not None:  # its pipeline first, over its collection
                coll, stages = view.source, [*view.pipeline, *stages]
        lead = leading(stages)
        rest = stages[lead.rest :]
        if probe and all(pipeline.stage_name(s) in pipeline.STREAMING for s in rest):
            query = FindQuery(lead.query or None, lead.sort, lead.skip, lead.limit)
            chunked = pipeline.Chunked(rest, self._lookup(principal, db), limits) if rest else None
            found = await self._find_rows(principal, db, coll, query, probe)
            if found is None:
                return await self._streamed(principal, db, coll, query, probe, chunked)
            return found if chunked is None else await chunked(list(found))
        indexed = await self._indexes_for(principal, db, coll)
        plan = plan_pipeline(table(db, coll), stages, indexed, (db, coll))
        streams = [pipeline.stage_name(s) in pipeline.STREAMING for s in rest] + [False]
        first_held = streams.index(False)
        # the engine does not run that stage ($group, $count): its input is read in chunks
        if first_held < len(rest) and len(plan.remaining) >= len(rest):
            query = FindQuery(lead.query or None, lead.sort, lead.skip, lead.limit)
            lookup = self._lookup(principal, db)
            chunked = pipeline.Chunked(rest[:first_held], lookup, limits)
            return await self._reduced(principal, db, coll, query, chunked, rest[first_held:])
        lookup = self._lookup(principal, db)
        if plan.fallback is not None:  # a $group the engine runs: its rows are streamed
            grouped = await self._grouped(principal, plan, probe, lookup, limits)
            if grouped is not None:
                return grouped
            # a key or $min/$max met an embedded document: the $group runs in Python
            query = FindQuery(lead.query or None, lead.sort, lead.skip, lead.limit)
            chunked = pipeline.Chunked([], lookup, limits)
            return await self._reduced(principal, db, coll, query, chunked, plan.fallback.remaining)
        async with self._conn(principal) as conn:
            rows = await self._missing_ok(_fetch(conn, plan.sql, plan.params), [])
        return await pipeline.run(plan.decode(rows), plan.remaining, lookup, limits)

    async def _grouped(
        self,
        principal: Principal,
        plan: Plan,
        probe: int,
        lookup: pipeline.Lookup,
        limits: pipeline.Limits,
    ) -> list[Any] | None:
        """An engine-run $group's rows read a batch at a time (pushdown.group_rows), the
        streaming stages after it applied to each: with ``probe``, when those are all the
        rest, a ``streaming.Streamed`` list as a find's; else the rest run over them a
        chunk at a time (pipeline.run_chunks). None when the $group must run in Python."""
        rest = plan.remaining
        streams = [pipeline.stage_name(s) in pipeline.STREAMING for s in rest]
        first_held = [*streams, False].index(False)
        stream = streaming.Stream(
            self.engine,
            principal,
            group_rows(plan),
            functools.partial(self._lookup_batch, principal),
            recheck=None,
            skip=0,
            limit=0,
            fields=None,
            spec=None,
            slots=self.stream_slots,
            transform=pipeline.Chunked(rest[:first_held], lookup, limits) if first_held else None,
            decode=group_decoder(plan),
        )
        whole = probe and first_held == len(rest)
        try:
            first = await streaming.first(stream, probe if whole else streaming.CHUNK_ROWS)
        except Unordered:
            return None
        if whole:
            return first
        return await _run_chunked(first, rest[first_held:], lookup, limits)

    async def _reduced(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: FindQuery,
        chunked: pipeline.Chunked,
        stages: list[Document],
    ) -> list[Any]:
        """``stages`` (the first one not streaming) over what ``query`` and ``chunked``
        make of the collection, read a chunk at a time (pipeline.run_chunks)."""
        # one statement when the input is a chunk or less (the hot path's prepared one)
        found = await self._find_rows(principal, db, coll, query, streaming.CHUNK_ROWS + 1)
        if found is not None:
            first = await chunked(list(found))
        else:
            first = await self._streamed(principal, db, coll, query, streaming.CHUNK_ROWS, chunked)
        return await _run_chunked(first, stages, chunked.lookup, chunked.limits)

    def _lookup(self, principal: Principal, db: str) -> pipeline.Lookup:
        async def fetch(coll: str, query: Document) -> list[Document]:
            catalog.check_collection_name(coll)
            found = await self.find(principal, db, coll, FindQuery(filter=query), probe=0)
            return [bsonform.decode(d) if isinstance(d, bytes) else d for d in found]

        async def rows(coll: str, statement: pipeline.Statement) -> list[Any]:
            catalog.check_collection_name(coll)
            if (db, coll) not in self._known and await self.view(principal, db, coll):
                raise NotCompiled  # a view: read through fetch (find), its pipeline first
            sql, values = statement(table(db, coll), await self._indexes_for(principal, db, coll))
            async with self._conn(principal) as conn:
                found: list[Any] = await self._missing_ok(_fetch(conn, sql, values), [])
                return found

        return pipeline.Reader(fetch, rows)

    async def explain(
        self,
        principal: Principal,
        db: str,
        coll: str,
        query: Document | None,
        sort: Document | None = None,
        *,
        analyzed: bool = False,
    ) -> dict[str, Any]:
        """The engine's plan of the find in MongoDB's explain shape (explained.py);
        ``analyzed``: run it (EXPLAIN ANALYZE) for executionStats."""
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(query, params, indexed)
        sql = compile_order(sort, params).select("bson", table(db, coll), where)
        options = "ANALYZE, FORMAT JSON" if analyzed else "FORMAT JSON"
        async with self._conn(principal) as conn:
            plan = await self._missing_ok(
                conn.fetchval(f"EXPLAIN ({options}) {sql}", *params.values), None
            )
            specs = await self._missing_ok(catalog.indexes(conn, db, coll), [])
        plan = orjson.loads(plan) if isinstance(plan, str) else plan
        return explained.explanation(plan, sql, explained.index_names(specs), analyzed)

    async def explain_write(
        self, principal: Principal, db: str, coll: str, write: explained.Write, *, analyzed: bool
    ) -> dict[str, Any]:
        """The plan of an update or delete in MongoDB's explain shape, writing nothing
        (explained.write_explanation): the engine's EXPLAIN of the write statement and
        of the read of its documents; ``analyzed``: that read runs (EXPLAIN ANALYZE), and
        its documents are read to count those that match and that the update changes."""
        catalog.check_db_name(db)
        await self._refuse_view(principal, db, coll)
        indexed = await self._indexes_for(principal, db, coll)
        params = Params()
        where = compile_filter(write.query, params, indexed)
        target = table(db, coll)
        order = compile_order(write.sort, params)
        one = "" if write.multi else "1"
        read = order.select("_id, bson", target, where, limit="" if params.recheck else one)
        rows = f"_id IN ({order.select('_id', target, where, limit=one)})" if one else where
        sql = (
            f"DELETE FROM {target} WHERE {rows}"
            if write.update is None
            else f"UPDATE {target} SET bson = bson WHERE {rows}"
        )
        options = "ANALYZE, FORMAT JSON" if analyzed else "FORMAT JSON"
        found: list[Any] = []
        async with self._conn(principal, write=True) as conn:
            plans = [
                await self._missing_ok(conn.fetchval(f"EXPLAIN ({o}) {q}", *params.values), None)
                for o, q in (("FORMAT JSON", sql), (options, read))
            ]
            if analyzed:
                found = await self._missing_ok(conn.fetch(read, *params.values), [])
            specs = await self._missing_ok(catalog.indexes(conn, db, coll), [])
        write_plan, read_plan = (orjson.loads(p) if isinstance(p, str) else p for p in plans)
        counts = None
        if analyzed:
            matched = modified = 0
            for row in found:
                old = bsonform.decode(row["bson"])
                if params.recheck and not matcher.matches(old, write.query or {}):
                    continue
                matched += 1
                if write.update is not None:
                    new = await _updated(old, row["bson"], write)
                    modified += bsonform.encode(new) != row["bson"]
                if one:
                    break
            counts = (matched, modified)
        names = explained.index_names(specs)
        return explained.write_explanation(write, read_plan, write_plan, sql, names, counts)

    # -- indexes ------------------------------------------------------------------------
    async def list_indexes(self, principal: Principal, db: str, coll: str) -> list[Document]:
        catalog.check_db_name(db)
        names = {c["name"] for c in await self.list_collections(principal, db)}
        if coll not in names:
            await self._refuse_view(principal, db, coll)
            raise catalog.not_found(f"ns does not exist: {db}.{coll}")
        async with self._conn(principal) as conn:
            specs = await self._missing_ok(catalog.indexes(conn, db, coll), [])
        return [catalog.ID_INDEX.describe(), *(s.describe() for s in specs)]

    async def create_indexes(
        self, principal: Principal, db: str, coll: str, specs: list[IndexSpec]
    ) -> tuple[int, int, bool]:
        catalog.check_db_name(db)
        catalog.check_collection_name(coll)
        async with self._conn(principal, write=True) as conn:
            try:
                async with conn.transaction():
                    # not _known: its table may have been dropped through SQL
                    created = await catalog.create_collection(conn, db, coll)
                    existing = {s.name: s for s in await catalog.indexes(conn, db, coll)}
                    before = len(existing) + 1
                    for spec in specs:
                        spec.engine_name = catalog.engine_index_name(db, coll, spec.name)
                        same = existing.get(spec.name)
                        if same is not None:
                            if same.key != spec.key or same.options != spec.options:
                                raise invalid(
                                    f"An existing index has the same name as the "
                                    f"requested index: {spec.name}",
                                    kind="index_key_specs_conflict",
                                )
                            continue
                        for other in existing.values():
                            if list(other.key.items()) == list(spec.key.items()):
                                raise invalid(
                                    f"Index already exists with a different name: {other.name}",
                                    kind="index_options_conflict",
                                )
                        for statement in catalog.index_ddl(db, coll, spec):
                            await conn.execute(statement)
                        ttl = spec.options.get("expireAfterSeconds")
                        await conn.execute(
                            f"INSERT INTO {CATALOG_SCHEMA}.indexes (db, collection, name, key, "
                            "options, engine_name, ttl_seconds) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                            db,
                            coll,
                            spec.name,
                            bsonform.encode(spec.key),
                            bsonform.encode(spec.options),
                            spec.engine_name,
                            int(ttl) if ttl is not None else None,
                        )
                        existing[spec.name] = spec
            except asyncpg.UniqueViolationError as exc:
                built = keytables.spec_for(specs, exc.constraint_name or "")
                if built is not None:  # its key table's unique index: the rows hold a duplicate
                    key_value = keytables.key_value(built, {}, exc.detail)
                    raise _duplicate_key(
                        db, coll, built, key_value, "Index build failed: "
                    ) from None
                raise HeliosError(
                    ErrorCode.CONFLICT,
                    f"E11000 duplicate key error collection: {db}.{coll}: {exc}",
                    kind="duplicate_key",
                ) from None
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        self._known.add((db, coll))
        self._indexed.pop((db, coll), None)
        return before, len(existing) + 1, created

    async def drop_indexes(self, principal: Principal, db: str, coll: str, which: Any) -> int:
        catalog.check_db_name(db)
        await self._refuse_view(principal, db, coll)
        async with self._conn(principal, write=True) as conn:
            try:
                async with conn.transaction():
                    specs = await catalog.indexes(conn, db, coll)
                    before = len(specs) + 1
                    if which == "*":
                        targets = specs
                    else:
                        wanted = which if isinstance(which, list) else [which]
                        targets = []
                        for item in wanted:
                            match = [
                                s
                                for s in specs
                                if s.name == item
                                or (
                                    isinstance(item, dict)
                                    and list(s.key.items()) == list(item.items())
                                )
                            ]
                            if item == "_id_" or item == {"_id": 1}:
                                raise invalid("cannot drop _id index", kind="invalid_options")
                            if not match:
                                raise HeliosError(
                                    ErrorCode.NOT_FOUND,
                                    f"index not found with name [{item}]",
                                    kind="index_not_found",
                                )
                            targets.extend(match)
                    for spec in targets:
                        for name in (
                            spec.engine_name,
                            catalog.multikey_index_name(spec.engine_name),
                        ):
                            await conn.execute(f"DROP INDEX IF EXISTS {qualified(db, name)}")
                        for statement in keytables.drop_ddl(spec):
                            await conn.execute(statement)
                        await conn.execute(
                            f"DELETE FROM {CATALOG_SCHEMA}.indexes WHERE db = $1 AND "
                            "collection = $2 AND name = $3",
                            db,
                            coll,
                            spec.name,
                        )
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        self._indexed.pop((db, coll), None)
        return before

    # -- statistics ---------------------------------------------------------------------
    async def collection_stats(self, principal: Principal, db: str, coll: str) -> Document:
        target = table(db, coll)
        async with self._conn(principal) as conn:
            row = await self._missing_ok(
                conn.fetchrow(
                    f"SELECT count(*) AS n, coalesce(sum(octet_length(bson)), 0)::bigint AS size, "
                    f"pg_table_size({quote_literal(target)}::regclass) AS storage, "
                    f"pg_indexes_size({quote_literal(target)}::regclass) AS indexes "
                    f"FROM {target}"
                ),
                None,
            )
            specs = await self._missing_ok(catalog.indexes(conn, db, coll), [])
        if row is None:
            return {"count": 0, "size": 0, "storageSize": 0, "totalIndexSize": 0, "nindexes": 0}
        return {
            "count": row["n"],
            "size": row["size"],
            "storageSize": row["storage"],
            "totalIndexSize": row["indexes"],
            "nindexes": len(specs) + 1,
            "indexes": ["_id_", *(s.name for s in specs)],
        }

    # -- TTL ------------------------------------------------------------------------------
    def start_ttl(self, principal_for_ttl: Principal) -> None:
        if self._ttl_task is None:
            self._ttl_task = asyncio.create_task(self._ttl_loop(principal_for_ttl))

    async def stop_ttl(self) -> None:
        if self._ttl_task is not None:
            self._ttl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ttl_task
            self._ttl_task = None

    async def close(self) -> None:
        """Stop the TTL sweep, finish batched lookups, give back the kept connection."""
        await self.stop_ttl()
        await self._lookups.close()
        await self._parking.close()

    async def _ttl_loop(self, principal: Principal) -> None:
        while True:
            await asyncio.sleep(TTL_INTERVAL_SECONDS)
            try:
                await self.expire_documents(principal)
            except Exception:
                log.warning("TTL sweep failed", exc_info=True)

    async def expire_documents(self, principal: Principal) -> int:
        removed = 0
        async with self._conn(principal, write=True) as conn:
            rows = await self._missing_ok(
                conn.fetch(
                    f"SELECT db, collection, key, ttl_seconds FROM {CATALOG_SCHEMA}.indexes "
                    "WHERE ttl_seconds IS NOT NULL"
                ),
                [],
            )
            for row in rows:
                path = next(iter(bsonform.decode(row["key"])))
                expr = catalog.key_expression(path)
                status = await self._missing_ok(
                    conn.execute(
                        f"DELETE FROM {table(row['db'], row['collection'])} WHERE "
                        f"jsonb_typeof({expr} -> '$date') = 'number' AND "
                        f"({expr} ->> '$date')::numeric"
                        " < extract(epoch FROM now()) * 1000 - $1::bigint * 1000",
                        row["ttl_seconds"],
                    ),
                    "DELETE 0",
                )
                removed += int(status.split()[-1])
        return removed


async def _run_chunked(
    first: list[Any], stages: list[Document], lookup: pipeline.Lookup, limits: pipeline.Limits
) -> list[Any]:
    """``stages`` over ``first`` and, when it is a ``streaming.Streamed`` list, the rest
    of its stream read a chunk at a time (pipeline.run_chunks)."""
    stream: streaming.Stream | None = getattr(first, "stream", None)

    async def chunks() -> AsyncIterator[list[Any]]:
        yield list(first)
        while stream is not None and not stream.done:
            yield await stream.fetch(streaming.CHUNK_ROWS)

    try:
        return await pipeline.run_chunks(chunks(), stages, lookup, limits)
    finally:
        if stream is not None:
            await stream.close()


def _find_statement(
    db: str, coll: str, query: FindQuery, indexed: dict[str, str], *, total: bool = False
) -> tuple[str, list[Any], bool]:
    """The SELECT of the stored BSON ``query`` selects, its values, and whether its rows
    are a superset to check again (filters.py ``recheck``; no skip or limit then).
    ``total``: in a total order (``_id`` last), the same in every statement, so one
    statement may read on where another stopped (OFFSET, streaming.py)."""
    spec = query.filter
    if query.limit and spec and len(spec) == 1 and not query.sort and not query.skip and not total:
        # one scalar equality on an indexed field: its two halves (lookups.equal_union).
        # The limit as ``(SELECT $2)``: with a plain ``$2`` the engine costs its generic
        # plan (limit unknown) above the plan for each run's limit whenever its row
        # estimate for the value is high (no statistics yet) and plans every run again
        # (engine CPU per find 60 -> 120 µs in bench/mongodb.py); this way both costings
        # ignore the limit's value and the generic plan is kept.
        path, value = next(iter(spec.items()))
        branches = equality_branches(path, value, indexed, "$1::jsonb")
        if branches is not None:
            union = equal_union(table(db, coll), branches)
            limit = abs(int(query.limit))
            return (
                f"SELECT bson FROM ({union}) AS s LIMIT (SELECT $2::bigint)",
                [bsonform.query_form(value), limit],
                False,
            )
    params = Params()
    where = compile_filter(query.filter, params, indexed)
    order = compile_order(query.sort, params)
    if total:
        order = order.then_id()
    skip = rows = ""  # their placeholders
    if query.skip and not params.recheck:
        skip = params.add(int(query.skip), "bigint")
    if query.limit and not params.recheck:
        rows = params.add(abs(int(query.limit)), "bigint")
    sql = order.select("bson", table(db, coll), where, skip, rows)
    return sql, params.values, params.recheck


def _batched(
    db: str, coll: str, spec: Document | None, limit: int, indexed: dict[str, str]
) -> Batched | None:
    """How find_soon's finds like this one (one plain ``_id``, or one scalar equality
    on an indexed field with a limit) share one statement per loop step, or None."""
    if not spec or len(spec) != 1:
        return None
    path, value = next(iter(spec.items()))
    if path == "_id":
        return Batched(table(db, coll)) if plain_id(value) else None
    if limit <= 0 or path not in indexed:
        return None
    branches = equality_branches(path, value, indexed, "q.v")
    lone = equality_branches(path, value, indexed, "$1::jsonb")
    if branches is None or lone is None:
        return None
    target = table(db, coll)
    return Batched(
        target,
        equal_union(target, branches),
        scalar_first(target, lone[0]),
        scalar_half(target, branches[0]),
    )


def _places(leaves: list[Any], values: list[Any]) -> tuple[int, ...] | None:
    """Which of a filter's values (``leaves``, by identity) each parameter is, or None
    when that is ambiguous or a parameter is not one of them."""
    where = {id(v): i for i, v in enumerate(leaves)}
    if len(where) != len(leaves):
        return None  # two values are one object (small ints): identity cannot tell
    places = [where.get(id(v), -1) for v in values]
    return None if -1 in places else tuple(places)


def _duplicate_key(
    db: str, coll: str, spec: IndexSpec, key_value: dict[str, Any], prefix: str = ""
) -> HeliosError:
    shown = ", ".join(f"{k}: {_show(v)}" for k, v in key_value.items())
    return HeliosError(
        ErrorCode.CONFLICT,
        f"{prefix}E11000 duplicate key error collection: {db}.{coll} index: {spec.name} "
        f"dup key: {{ {shown} }}",
        kind="duplicate_key",
        key_pattern=dict(spec.key),
        key_value=key_value,
    )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, ObjectId):
        return f"ObjectId('{value}')"
    if value is None:
        return "null"
    return repr(value)


def _encode_checked(document: Document) -> bytes:
    data = bsonform.encode(document)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise invalid(
            "object to insert exceeds the maximum size of 16 MiB", kind="document_too_large"
        )
    return data


def _row_for_insert(raw: bytes) -> tuple[tuple[Any, bytes, Any], bool]:
    """The row (``_id`` form, BSON, query form) that stores the document ``raw``, and
    whether it holds an Int64 or a Decimal128 (catalog.NARROW)."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise invalid(
            "object to insert exceeds the maximum size of 16 MiB", kind="document_too_large"
        )
    document = bsonform.decode(raw)
    if "_id" not in document:
        document = {"_id": ObjectId(), **document}
        raw = bsonform.encode(document)
    elif next(iter(document)) != "_id":
        document = {"_id": document["_id"], **{k: v for k, v in document.items() if k != "_id"}}
        raw = bsonform.encode(document)
    identifier = document["_id"]
    if isinstance(identifier, list):
        raise invalid("The '_id' value cannot be of type array", kind="bad_value")
    if isinstance(identifier, (Regex, re.Pattern)):
        raise invalid("can't use a regex for _id", kind="bad_value")
    for key in document:
        if key.startswith("$"):
            raise invalid(
                f"Document can't have $ prefixed field names: {key}", kind="dollar_prefixed"
            )
    form, wide = bsonform.wide_form(document)
    return (bsonform.id_form(identifier), raw, form), wide


async def _updated(old: Document, raw: bytes, write: explained.Write) -> Document:
    """``old`` (stored as ``raw``) as ``write``'s update would make it (explain)."""
    if isinstance(write.update, list):
        return await pipeline_update(old, write.update)
    if is_operator_update(write.update):
        fresh = bsonform.decode(raw)  # a private copy to change in place, as update's
        return apply_update(
            fresh, write.update, query=write.query, array_filters=write.array_filters, in_place=True
        )
    return _replacement(old, write.update)


def _replacement(old: Document, new: Document) -> Document:
    if "_id" in new and not equal(new["_id"], old["_id"]):
        raise invalid(
            "After applying the update, the (immutable) field '_id' was found to have been altered",
            kind="immutable_field",
        )
    return {"_id": old["_id"], **{k: v for k, v in new.items() if k != "_id"}}


_UPDATE_STAGES = ("$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith")


def check_update_pipeline(stages: list[Any]) -> None:
    for stage in stages:
        name = pipeline.stage_name(stage)
        if name not in _UPDATE_STAGES:
            raise invalid(
                f"{name} is not allowed to be used within an update", kind="invalid_options"
            )


async def pipeline_update(old: Document, stages: list[Document]) -> Document:
    """``old`` through an update pipeline (its ``_id`` kept, which it may not change)."""

    async def no_lookup(coll: str, query: Document) -> list[Document]:
        return []

    (new,) = await pipeline.run([old], stages, no_lookup)
    if "_id" in old and not equal(new.get("_id", old["_id"]), old["_id"]):
        raise invalid(
            "After applying the update, the (immutable) field '_id' was found to have been altered",
            kind="immutable_field",
        )
    return (
        {"_id": old["_id"], **{k: v for k, v in new.items() if k != "_id"}} if "_id" in old else new
    )


def _upsert_document(
    query: Document | None,
    update: Document,
    operator: bool,
    array_filters: list[Document] | None,
) -> Document:
    base: Document = {}
    for path, value in equality_fields(query).items():
        if isinstance(value, dict) and any(k.startswith("$") for k in value):
            continue
        target = base
        parts = path.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = copy.deepcopy(value)
    if operator:
        new = apply_update(base, update, array_filters=array_filters, inserting=True)
    else:
        new = {**({"_id": base["_id"]} if "_id" in base else {}), **update}
    if "_id" not in new:
        new = {"_id": ObjectId(), **new}
    elif next(iter(new)) != "_id":
        new = {"_id": new["_id"], **{k: v for k, v in new.items() if k != "_id"}}
    return new


def as_document(item: Any) -> Document:
    """An item of a find's or aggregate's result (stored BSON or a document) as a document."""
    return bsonform.decode(bytes(item)) if isinstance(item, (bytes, bytearray)) else item


def distinct_values(documents: Iterable[Document], key: str) -> list[Any]:
    """distinct's answer over ``documents``: the values at ``key``, an array's items
    one by one, each once (by MongoDB's equality)."""
    values: list[Any] = []
    for document in documents:
        for value in candidates(document, key):
            if not isinstance(value, list) and not any(equal(value, seen) for seen in values):
                values.append(value)
    return values


Callback = Callable[[], Awaitable[None]]
