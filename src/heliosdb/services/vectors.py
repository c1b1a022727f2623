"""Vector indexes: engine tables with a pgvector column and an HNSW index.

    helios.vector_indexes          one row per index (dimension, metric, HNSW parameters)
    helios_vectors.<name>          id text PK, embedding vector(n), metadata jsonb
                                   + HNSW index on embedding, GIN index on metadata

Every data statement runs on the principal's engine role (read-only keys search, they
cannot upsert); the tables are plain tables, so SQL on any interface can read them.

Search: ``ORDER BY embedding <op> $1 LIMIT k`` with ``hnsw.ef_search`` at least k: the
request's ``ef_search`` if it sets one, else the index's if it was created with one, else
one that follows k (``default_ef_search``: max(EF_SEARCH_FLOOR, EF_SEARCH_PER_K * k), at
most pgvector's 1000), chosen by measurement so the defaults give recall@10 >= 0.95 (see
docs/vectors.md). The response says which ef_search ran and where it came from. With a
filter, pgvector's iterative index scan (``hnsw.iterative_scan = relaxed_order``) keeps
walking the graph until k rows pass the filter; if it still returns fewer than k (a
filter so selective that the scan gave up), the search runs again exactly (no index),
so it returns k rows whenever k rows match. The response says which path answered.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from heliosdb.engine import Access, Engine
from heliosdb.engine.quoting import qualified, quote_ident
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError, denied, invalid, not_found
from heliosdb.security.principals import Principal
from heliosdb.services.metadata_filters import (
    FIELD_TYPES,
    CompiledFilter,
    compile_metadata_filter,
)

SCHEMA = "helios_vectors"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_DIMENSION = 2000  # pgvector's HNSW limit for the vector type
MAX_EF_SEARCH = 1000  # pgvector's largest hnsw.ef_search
MAX_TOP_K = MAX_EF_SEARCH
MAX_BATCH = 10_000
MAX_ID_LENGTH = 512
INDEX_CACHE_SECONDS = 5.0
MAX_CACHED_FILTERS = 1024
MAX_CACHED_STATEMENTS = 1024
DEFAULTS = {"m": 16, "ef_construction": 128}
# ef_search when neither the request nor the index sets one: it follows top_k.
EF_SEARCH_FLOOR = 400
EF_SEARCH_PER_K = 8
LIMITS = {"m": (2, 100), "ef_construction": (4, 1000), "ef_search": (1, 1000)}
_ENGINE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    opclass: str
    operator: str

    def score(self, distance: float) -> float:
        """What clients rank by: cosine similarity, L2 distance, or the inner product."""
        if self.name == "cosine":
            return 1.0 - distance
        if self.name == "inner_product":
            return -distance
        return distance


METRICS = {
    "cosine": Metric("cosine", "vector_cosine_ops", "<=>"),
    "l2": Metric("l2", "vector_l2_ops", "<->"),
    "inner_product": Metric("inner_product", "vector_ip_ops", "<#>"),
}
_METRIC_ALIASES = {"euclidean": "l2", "ip": "inner_product", "dot": "inner_product"}


@dataclass(frozen=True, slots=True)
class VectorIndex:
    name: str
    dimension: int
    metric: str
    m: int
    ef_construction: int
    ef_search: int | None  # None: the default, which follows top_k (default_ef_search)
    metadata_fields: dict[str, str] | None
    created_at: Any = None

    @property
    def table(self) -> str:
        return qualified(SCHEMA, self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dimension": self.dimension,
            "metric": self.metric,
            "hnsw": {"m": self.m, "ef_construction": self.ef_construction},
            "ef_search": self.ef_search,
            "metadata_fields": self.metadata_fields,
            "table": f"{SCHEMA}.{self.name}",
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class VectorRecord:
    id: str
    vector: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Match:
    id: str
    score: float
    distance: float
    vector: list[float] | None = None
    metadata: dict[str, Any] | None = None


@dataclass(slots=True)
class SearchResult:
    matches: list[Match]
    search_path: str
    ef_search: int
    execution_time_ms: float
    # Where ef_search came from: "request", "index" or "default" (followed top_k).
    ef_search_source: str = "default"


class Vectors:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Index definitions, read on every search: kept a few seconds. This node's own
        # create/drop evict at once; another node's drop shows within the TTL (a search
        # meanwhile fails with the engine's "no such table").
        self._indexes: dict[str, tuple[float, VectorIndex]] = {}
        # Compiled filters by (text, declared fields, first parameter number): parsing one
        # with pglast and walking its tree costs more than the rest of a search's own work.
        self._filters: dict[tuple[str, Any, int], CompiledFilter] = {}
        # Search statements (by index, by exact scan) by their shape: building the text
        # (quoting, joining) on every search cost more than reading a dict.
        self._statements: dict[tuple[str, str, int, bool, bool, str | None], tuple[str, str]] = {}

    # -- indexes ---------------------------------------------------------------------------

    async def create_index(
        self,
        principal: Principal,
        name: str,
        dimension: int,
        *,
        metric: str = "cosine",
        m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        metadata_fields: Mapping[str, str] | None = None,
    ) -> VectorIndex:
        _require_writer(principal)
        index = VectorIndex(
            name=_checked_name(name),
            dimension=_int_in("dimension", dimension, 1, MAX_DIMENSION),
            metric=_checked_metric(metric),
            m=_int_in("m", m, *LIMITS["m"], default=DEFAULTS["m"]),
            ef_construction=_int_in(
                "ef_construction", ef_construction, *LIMITS["ef_construction"],
                default=DEFAULTS["ef_construction"],
            ),
            ef_search=None
            if ef_search is None
            else _int_in("ef_search", ef_search, *LIMITS["ef_search"]),
            metadata_fields=_checked_fields(metadata_fields),
        )  # fmt: skip
        if index.ef_construction < 2 * index.m:
            raise invalid("ef_construction must be at least twice m")
        async with self.engine.connection(Access.SYSTEM) as conn:
            try:
                await conn.execute(
                    "INSERT INTO helios.vector_indexes (name, dimension, metric, m, "
                    "ef_construction, ef_search, metadata_fields, created_by) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    index.name, index.dimension, index.metric, index.m,
                    index.ef_construction, index.ef_search, index.metadata_fields, principal.id,
                )  # fmt: skip
            except asyncpg.UniqueViolationError:
                raise HeliosError(
                    ErrorCode.ALREADY_EXISTS, f"vector index {index.name!r} already exists"
                ) from None
        try:
            await self._create_table(principal, index)
        except BaseException:
            async with self.engine.connection(Access.SYSTEM) as conn:
                await conn.execute("DELETE FROM helios.vector_indexes WHERE name = $1", index.name)
            raise
        self._indexes.pop(index.name, None)
        return await self.get_index(index.name)

    async def _create_table(self, principal: Principal, index: VectorIndex) -> None:
        metric = METRICS[index.metric]
        table = index.table
        # DDL takes no parameters; every name is quoted and every number is an int we checked.
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SCHEMA)}",
            f"CREATE TABLE {table} ("
            " id text PRIMARY KEY,"
            f" embedding public.vector({int(index.dimension)}) NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{}'::jsonb,"
            " updated_at timestamptz NOT NULL DEFAULT now())",
            f"CREATE INDEX {quote_ident(index.name + '_hnsw')} ON {table} "
            f"USING hnsw (embedding public.{metric.opclass}) "
            f"WITH (m = {int(index.m)}, ef_construction = {int(index.ef_construction)})",
            f"CREATE INDEX ON {table} USING gin (metadata jsonb_path_ops)",
        ]
        async with self.engine.connection(principal.access) as conn:
            try:
                async with conn.transaction():
                    for statement in statements:
                        await conn.execute(statement)
            except asyncpg.DuplicateTableError:
                raise HeliosError(
                    ErrorCode.ALREADY_EXISTS,
                    f"a table {SCHEMA}.{index.name} already exists in the engine",
                ) from None
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None

    async def get_index(self, name: str) -> VectorIndex:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise not_found(f"no vector index {str(name)[:80]!r}")
        cached = self._indexes.get(name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT name, dimension, metric, m, ef_construction, ef_search, "
                "metadata_fields, created_at FROM helios.vector_indexes WHERE name = $1",
                name,
            )
        if row is None:
            self._indexes.pop(name, None)
            raise not_found(f"no vector index {name!r}")
        index = VectorIndex(**dict(row))
        if len(self._indexes) > 10_000:
            self._indexes.clear()
        self._indexes[name] = (time.monotonic() + INDEX_CACHE_SECONDS, index)
        return index

    async def list_indexes(self) -> list[VectorIndex]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            rows = await conn.fetch(
                "SELECT name, dimension, metric, m, ef_construction, ef_search, "
                "metadata_fields, created_at FROM helios.vector_indexes ORDER BY name"
            )
        return [VectorIndex(**dict(r)) for r in rows]

    async def describe(self, principal: Principal, name: str) -> dict[str, Any]:
        index = await self.get_index(name)
        async with self.engine.connection(principal.access) as conn:
            try:
                count = await conn.fetchval(f"SELECT count(*) FROM {index.table}")  # noqa: S608
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
        return {**index.as_dict(), "count": count}

    async def drop_index(self, principal: Principal, name: str) -> None:
        _require_writer(principal)
        index = await self.get_index(name)
        self._indexes.pop(name, None)
        async with self.engine.connection(principal.access) as conn:
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {index.table}")
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
        async with self.engine.connection(Access.SYSTEM) as conn:
            await conn.execute("DELETE FROM helios.vector_indexes WHERE name = $1", index.name)

    # -- data ------------------------------------------------------------------------------

    async def upsert(self, principal: Principal, name: str, records: Sequence[VectorRecord]) -> int:
        """Insert or replace records by id (the last of duplicates in a batch wins)."""
        _require_writer(principal)
        index = await self.get_index(name)
        if not records:
            raise invalid("upsert needs at least one vector")
        if len(records) > MAX_BATCH:
            raise invalid(f"upsert takes at most {MAX_BATCH} vectors per request")
        latest: dict[str, VectorRecord] = {}
        for position, record in enumerate(records):
            _check_record(index, record, position)
            latest[record.id] = record
        ids = list(latest)
        vectors = [_vector_text(r.vector) for r in latest.values()]
        metadata = [orjson.dumps(r.metadata).decode() for r in latest.values()]
        sql = (
            f"INSERT INTO {index.table} (id, embedding, metadata) "  # noqa: S608
            "SELECT i, e::public.vector, m::jsonb "
            "FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, e, m) "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, "
            "metadata = EXCLUDED.metadata, updated_at = now()"
        )
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                await conn.execute(sql, ids, vectors, metadata)
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
            conn.keep_session(principal.id)  # an INSERT changes no session state
        return len(ids)

    async def delete(self, principal: Principal, name: str, ids: Sequence[str]) -> int:
        _require_writer(principal)
        index = await self.get_index(name)
        async with self.engine.connection(principal.access) as conn:
            try:
                status = await conn.execute(
                    f"DELETE FROM {index.table} WHERE id = ANY($1::text[])",  # noqa: S608
                    [str(i) for i in ids],
                )
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
        return int(status.rsplit(" ", 1)[-1])

    async def search(
        self,
        principal: Principal,
        name: str,
        vector: Sequence[float],
        top_k: int = 10,
        *,
        filter: str | None = None,
        include_vectors: bool = False,
        include_metadata: bool = False,
        exact: bool = False,
        ef_search: int | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        index = await self.get_index(name)
        top_k = _int_in("top_k", top_k, 1, MAX_TOP_K, default=10)
        query = _checked_vector(index, vector, "vector")
        if ef_search is not None:
            ef, source = _int_in("ef_search", ef_search, *LIMITS["ef_search"]), "request"
        elif index.ef_search is not None:
            ef, source = index.ef_search, "index"
        else:
            ef, source = default_ef_search(top_k), "default"
        ef = max(top_k, ef)
        metric = METRICS[index.metric]
        filtered = filter is not None and filter != ""
        path = "exact" if exact else ("hnsw_iterative" if filtered else "hnsw")
        iterative = "relaxed_order" if path == "hnsw_iterative" else "off"
        params: list[Any] = [_vector_text(query), str(ef), iterative]
        condition = None
        if filtered:
            compiled = self._compiled_filter(str(filter), index, len(params))
            condition = compiled.sql
            params += compiled.params
        by_index, brute = self._statement(
            index, top_k, include_vectors, include_metadata, condition
        )
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                rows = await _fetch(conn, brute if path == "exact" else by_index, params)
                if path != "exact" and len(rows) < top_k:
                    path = "exact"
                    rows = await _fetch(conn, brute, params)
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
            conn.keep_session(principal.id)  # the settings above were statement-local
        # relaxed_order (a filtered scan) may return rows slightly out of distance order.
        rows.sort(key=_distance)
        score = metric.score
        # Columns by position: id, distance, then embedding and metadata as requested.
        matches = [
            Match(
                id=r[0],
                score=score(r[1]),
                distance=r[1],
                vector=r[2] if include_vectors else None,
                metadata=r[-1] if include_metadata else None,
            )
            for r in rows
        ]
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return SearchResult(matches, path, ef, elapsed, source)

    def _statement(
        self,
        index: VectorIndex,
        top_k: int,
        include_vectors: bool,
        include_metadata: bool,
        condition: str | None,
    ) -> tuple[str, str]:
        """The search statement by the index and the exact one (``ORDER BY distance +
        0``) for an index, k, the columns asked for and the compiled filter's SQL; $1 is
        the query vector, $2 ef_search, $3 the iterative scan mode, $4... the filter's.

        k is written into the statement (an int we checked), not bound: with ``LIMIT $n``
        the engine's generic plan looks dearer than the custom ones (it guesses a tenth
        of the rows), so a filtered search was planned afresh on every execution; with
        the literal it settles on a generic plan after five, as raw pgvector's does."""
        key = (index.name, index.metric, top_k, include_vectors, include_metadata, condition)
        cached = self._statements.get(key)
        if cached is not None:
            return cached
        operator = METRICS[index.metric].operator
        columns = [f"embedding {operator} $1::public.vector AS distance"]
        if include_vectors:
            columns.append("embedding")
        if include_metadata:
            columns.append("metadata")
        # pgvector reads its settings when the index scan starts. An uncorrelated subquery
        # in WHERE becomes an InitPlan that the engine runs as a one-time filter before
        # the scan below it starts, so the settings travel in the search statement itself
        # instead of costing a round trip of their own. They are transaction-local
        # (is_local = true): outside a transaction block they end with the statement, so
        # the session is left as it was and goes back to the pool without a reset (which
        # would cost a second round trip per search).
        conditions = [
            "(SELECT set_config('hnsw.ef_search', $2, true) "
            "|| set_config('hnsw.iterative_scan', $3, true)) IS NOT NULL"
        ]
        if condition is not None:
            conditions.append(condition)
        head = (
            f"SELECT id, {', '.join(columns)} FROM {index.table} "  # noqa: S608
            f"WHERE {' AND '.join(conditions)} "
        )
        # Exact search orders by an expression no index serves. It is a statement of its
        # own on purpose: the engine may keep one generic plan per statement whatever the
        # planner settings say, so a setting could not be trusted to turn the index off.
        statements = (
            head + f"ORDER BY distance LIMIT {int(top_k)}",
            head + f"ORDER BY (embedding {operator} $1::public.vector) + 0 LIMIT {int(top_k)}",
        )
        if len(self._statements) >= MAX_CACHED_STATEMENTS:
            self._statements.clear()
        self._statements[key] = statements
        return statements

    def _compiled_filter(self, text: str, index: VectorIndex, offset: int) -> CompiledFilter:
        fields = index.metadata_fields
        key = (text, tuple(sorted(fields.items())) if fields else None, offset)
        compiled = self._filters.get(key)
        if compiled is None:
            compiled = compile_metadata_filter(text, fields=fields, param_offset=offset)
            if len(self._filters) >= MAX_CACHED_FILTERS:
                self._filters.clear()
            self._filters[key] = compiled
        return compiled


def default_ef_search(top_k: int) -> int:
    """The HNSW beam when neither the request nor the index sets one: it follows top_k,
    since recall@k at a fixed beam falls as k grows (pgvector returns at most ef_search
    rows, and a beam of a few k misses many of the k nearest)."""
    return min(MAX_EF_SEARCH, max(EF_SEARCH_FLOOR, EF_SEARCH_PER_K * top_k))


def _distance(row: Any) -> float:
    distance: float = row[1]
    return distance


async def _fetch(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    records: list[Any] = (await conn.run_prepared(sql, lambda stmt: params))[0]
    return records


def _require_writer(principal: Principal) -> None:
    if principal.read_only:
        raise denied("a read-only key cannot change vector indexes")


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > 58:
        raise invalid(
            "an index name is 1 to 58 letters, digits or underscores, not starting with a digit"
        )
    return name


def _checked_metric(metric: Any) -> str:
    metric = _METRIC_ALIASES.get(metric, metric)
    if metric not in METRICS:
        raise invalid(f"metric must be one of {', '.join(METRICS)}")
    return str(metric)


def _checked_fields(fields: Mapping[str, str] | None) -> dict[str, str] | None:
    if fields is None:
        return None
    if not isinstance(fields, Mapping):
        raise invalid("metadata_fields must be an object of field name -> type")
    for key, kind in fields.items():
        if not isinstance(key, str) or not key or kind not in FIELD_TYPES:
            raise invalid(f"metadata field types are {', '.join(FIELD_TYPES)}; got {key}: {kind}")
    return dict(fields)


def _int_in(name: str, value: Any, low: int, high: int, *, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}")
    return value


def _checked_vector(index: VectorIndex, vector: Any, where: str) -> list[float]:
    if not isinstance(vector, Sequence) or isinstance(vector, str | bytes):
        raise invalid(f"{where} must be an array of numbers")
    if len(vector) != index.dimension:
        raise invalid(
            f"{where} has {len(vector)} dimensions; index {index.name!r} has {index.dimension}"
        )
    kinds = set(map(type, vector))
    if kinds == _FLOAT and type(vector) is list:
        # The common case (a JSON array of floats, a protobuf repeated float made a list):
        # one C-speed pass for the types, one for finiteness. A sum is NaN or infinite
        # when any term is, or when finite terms overflow (then each is looked at).
        values: list[float] = vector
        if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
            raise invalid(f"{where} contains NaN or infinity")
    else:
        if not kinds <= _NUMBER:  # bool is an int to Python, but not a number here
            numeric = (float, int)
            if not all(isinstance(v, numeric) and type(v) is not bool for v in vector):
                raise invalid(f"{where} must contain only numbers")
        try:
            values = [float(v) for v in vector]
        except OverflowError:
            raise invalid(f"{where} contains a number too large for a vector") from None
        if not all(map(math.isfinite, values)):
            raise invalid(f"{where} contains NaN or infinity")
    if index.metric == "cosine" and not any(values):
        raise invalid(f"{where} is all zeros, which has no cosine distance")
    return values


_FLOAT = {float}
_NUMBER = {float, int}


def _check_record(index: VectorIndex, record: VectorRecord, position: int) -> None:
    if not isinstance(record.id, str) or not record.id or len(record.id) > MAX_ID_LENGTH:
        raise invalid(f"vectors[{position}].id must be a string of 1 to {MAX_ID_LENGTH} chars")
    record.vector = _checked_vector(index, record.vector, f"vectors[{position}].vector")
    if not isinstance(record.metadata, dict):
        raise invalid(f"vectors[{position}].metadata must be an object")


def _vector_text(values: Sequence[float]) -> str:
    """pgvector's text form, ``[1.5,2.0,...]``: a JSON array of finite floats is exactly that
    (orjson writes each float's shortest round-trip form, as ``repr`` does, ten times faster).
    """
    return orjson.dumps(values).decode()
