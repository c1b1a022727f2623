"""SQL from clients: one parameterised statement, or a script when asked for.

The statement runs on an engine connection logged in as the principal's role, so the
engine decides what it may do. Single statements go through the extended protocol
(which by itself refuses a second statement); scripts use the simple protocol and
take no parameters.

A plain SELECT that has run once through the pool, and whose parameter and column types
the pipeline decodes, runs next time on a pipelined connection of its principal
(engine/pipeline.py): the statements of requests that arrive together leave in one
write. Anything the pipeline cannot take as the pool would (another type, a value its
encoder refuses, a busy or not yet open pipeline, a changed plan) takes the pool path.
"""

from __future__ import annotations

import functools
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.codecs import non_finite_fixer, to_param, type_name
from heliosdb.engine.pipeline import (
    DECODERS,
    ENCODERS,
    Pipeline,
    Pipelines,
    Unfit,
    decode_rows,
)
from heliosdb.engine.rowcap import TooManyBytes, TooManyRows
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.security.principals import Principal

MAX_SQL_LENGTH = 1_000_000
_COUNT_TAIL = re.compile(r"(\d+)$")
# Tags whose trailing number counts rows changed rather than rows returned.
_WRITE_TAGS = ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY")
_PLAIN_TAGS = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE")
# Functions whose effect outlives the statement: settings and session advisory locks.
_SESSION_FUNCTIONS = ("set_config", "advisory_lock", "dblink")
_SESSION_FUNCTION = re.compile("|".join(_SESSION_FUNCTIONS), re.IGNORECASE)
# A locking clause makes a SELECT wait on other sessions' row locks: not one to queue
# other statements behind on a pipeline.
_LOCKING = re.compile(r"\bfor\s+(no\s+key\s+)?(update|share|key\s+share)\b", re.IGNORECASE)
_PIPELINED_ACCESS = (Access.READ_WRITE, Access.READ_ONLY)
_MAX_PIPELINED_STATEMENTS = 4096


@dataclass(slots=True)
class Column:
    name: str
    type: str


@dataclass(slots=True)
class QueryResult:
    columns: Sequence[Column]  # shared with the statement's plan: not to be changed
    rows: list[list[Any]]
    affected_rows: int
    status: str
    execution_time_ms: float
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a prepared statement's types say about its parameters and rows, worked out once."""

    parameters: tuple[Any, ...]
    columns: tuple[Column, ...]
    fix: Callable[[list[Any]], list[Any]] | None
    signature: tuple[str, ...]  # "name:oid" per column, as pipeline.Prepared has them

    @staticmethod
    def of(stmt: Any) -> _Plan:
        attributes = stmt.get_attributes()
        return _Plan(
            parameters=tuple(stmt.get_parameters()),
            columns=tuple(Column(a.name, type_name(a.type)) for a in attributes),
            fix=non_finite_fixer([a.type.name for a in attributes]),
            signature=tuple(f"{a.name}:{a.type.oid}" for a in attributes),
        )


class _Pipelinable:
    """A plain SELECT's pool plan with the pipeline's codecs for its types, made once."""

    __slots__ = ("decoders", "encoders", "oids", "plan")

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.oids = tuple(p.oid for p in plan.parameters)
        self.encoders = [ENCODERS[oid] for oid in self.oids]
        self.decoders = [DECODERS[int(s.rsplit(":", 1)[1])] for s in plan.signature]

    @staticmethod
    def of(plan: _Plan) -> _Pipelinable | None:
        """None when a parameter or column type is not one the pipeline encodes/decodes."""
        if all(p.oid in ENCODERS for p in plan.parameters) and all(
            int(s.rsplit(":", 1)[1]) in DECODERS for s in plan.signature
        ):
            return _Pipelinable(plan)
        return None


class QueryService:
    def __init__(self, engine: Engine, max_rows: int = 0, max_bytes: int = 0) -> None:
        """``max_rows``: a result with more rows fails with RESOURCE_EXHAUSTED, and so
        does one of more than ``max_bytes`` bytes of rows (as the engine sends them); the
        node counts rows and bytes as they arrive and stops the statement past either, so
        it never holds more (0: no limit). No Execute row limit: the engine may plan
        parallel workers."""
        self.engine = engine
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        settings = {**engine.session_settings(), "application_name": "heliosdb-pipeline"}
        self.pipelines = Pipelines(engine, settings)
        engine.closers.append(self.pipelines.close)
        # statement text -> its pool plan, for plain SELECTs the pipeline may run
        self._pipelined: dict[str, _Pipelinable] = {}

    async def execute(
        self, principal: Principal, sql: str, params: Sequence[Any] = (), *, script: bool = False
    ) -> QueryResult:
        check_sql(sql)
        if script and params:
            raise invalid("a script takes no params; use one statement with $1..$n instead")
        started = time.perf_counter()
        fast = self._pipelined.get(sql) if not script else None
        if fast is not None:
            pipeline = self.pipelines.pick(principal.access, principal.id)
            if pipeline is not None:
                result = await self._run_pipelined(pipeline, fast, sql, params, started)
                if result is not None:
                    return result
        lease = self.engine.connection(principal.access, owner=principal.id)
        async with lease:
            conn = lease.raw  # not the pool's proxy, which forwards each call via __getattr__
            try:
                if script:
                    status = await conn.execute(sql)
                    return QueryResult([], [], _affected(status), status, _ms(started))
                # _run_statement's steps, here: a coroutine level is paid on every resumption
                binder = _Binder(conn, sql, params)
                records, stmt = await conn.run_prepared(
                    sql, binder.bind, cap=self.max_rows, max_bytes=self.max_bytes
                )
                result = binder.result(records, stmt, started)
                if _leaves_session_alone(result.status, sql):
                    conn.keep_session(principal.id)
                    if fast is None and principal.access in _PIPELINED_ACCESS:
                        self._learn(sql, binder.plan, result.status)
                return result
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
            except (asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None
            except TooManyRows as exc:
                self._too_many(exc)

    def _learn(self, sql: str, plan: _Plan | None, status: str) -> None:
        """Note a plain SELECT the pipeline can run as the pool did."""
        if (
            plan is not None
            and status.startswith("SELECT")
            and "\0" not in sql  # a protocol string ends at NUL
            and _LOCKING.search(sql) is None
        ):
            fast = _Pipelinable.of(plan)
            if fast is not None:
                if len(self._pipelined) >= _MAX_PIPELINED_STATEMENTS:
                    self._pipelined.clear()
                self._pipelined[sql] = fast

    async def _run_pipelined(
        self,
        pipeline: Pipeline,
        fast: _Pipelinable,
        sql: str,
        params: Sequence[Any],
        started: float,
    ) -> QueryResult | None:
        """The statement on ``pipeline``, answered as the pool path answers it; None: the
        pool path must answer (nothing ran)."""
        prepared = pipeline.ready(sql)
        if prepared is None or prepared.checked is not fast:
            try:
                prepared = await pipeline.prepared(sql)
            except (Unfit, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                return None  # the pool path prepares it and says what is wrong
            if (
                prepared is None
                or prepared.columns != fast.plan.signature
                or prepared.parameters != fast.oids
            ):
                # its types changed: the pool path learns again, the pipeline prepares anew
                self._pipelined.pop(sql, None)
                pipeline.forget(sql)
                return None
            prepared.checked = fast
        plan = fast.plan
        declared = plan.parameters
        _check_count(len(declared), len(params))
        values: list[bytes | None] = []
        try:
            for i, t in enumerate(declared):
                value = to_param(params[i], t, i + 1)
                values.append(None if value is None else fast.encoders[i](value))
        except (TypeError, ValueError, OverflowError, struct.error, UnicodeEncodeError):
            return None  # the pool path's codecs say why this value does not fit
        try:
            rows, tag = await pipeline.run(prepared, values, self.max_rows, self.max_bytes)
        except Unfit:
            return None
        except TooManyRows as exc:
            self._too_many(exc)
        except asyncpg.InvalidCachedStatementError:
            pipeline.forget(sql)
            self._pipelined.pop(sql, None)
            return None  # the engine refused it before running it
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise from_engine(exc) from None
        records = decode_rows(rows, fast.decoders)
        fix = plan.fix
        if fix is not None:
            records = [fix(r) for r in records]
        status = tag.decode()
        self.pipelines.statements += 1
        return QueryResult(plan.columns, records, _affected(status), status, _ms(started))

    async def execute_on(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """One statement on an engine connection the caller holds (a pinned transaction's)."""
        check_sql(sql)
        try:
            return await self._run_statement(conn, sql, params, time.perf_counter())
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise from_engine(exc) from None
        except TooManyRows as exc:
            self._too_many(exc)

    async def _run_statement(
        self, conn: Any, sql: str, params: Sequence[Any], started: float
    ) -> QueryResult:
        binder = _Binder(conn, sql, params)
        records, stmt = await conn.run_prepared(
            sql, binder.bind, cap=self.max_rows, max_bytes=self.max_bytes
        )
        return binder.result(records, stmt, started)

    def _too_many(self, exc: TooManyRows) -> NoReturn:
        aborted = " (cancelled: the transaction is aborted, roll it back)" if exc.aborted else ""
        if exc.lost:
            aborted = " (its engine connection was closed: a transaction on it is rolled back)"
        if isinstance(exc, TooManyBytes):
            what, limit = f"exceeds query.max_result_bytes ({self.max_bytes} bytes)", self.max_bytes
        else:
            what, limit = f"has more than {self.max_rows} rows", self.max_rows
        raise HeliosError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"the result {what}{aborted}; read it with a LIMIT, "
            "or stream it (POST /query/stream, gRPC ExecuteQueryStream)",
            limit=limit,
        ) from None


class _Binder:
    """One statement's parameters bound for its prepared types, and its rows as a result
    (the plan worked out once per server-side statement)."""

    __slots__ = ("conn", "params", "plan", "sql")

    def __init__(self, conn: Any, sql: str, params: Sequence[Any]) -> None:
        self.conn = conn
        self.sql = sql
        self.params = params
        self.plan: _Plan | None = None

    def bind(self, stmt: Any) -> list[Any]:
        self.plan = plan = self.conn.describe(stmt, self.sql, _Plan.of)
        declared = plan.parameters
        params = self.params
        _check_count(len(declared), len(params))
        # as many as declared (checked above): zip's strict=True would parse its keyword
        # argument on every request
        return [to_param(params[i], t, i + 1) for i, t in enumerate(declared)]

    def result(self, records: list[Any], stmt: Any, started: float) -> QueryResult:
        plan = self.plan
        assert plan is not None
        fix = plan.fix
        rows = [list(r) for r in records] if fix is None else [fix(list(r)) for r in records]
        status = stmt.get_statusmsg() or ""
        return QueryResult(plan.columns, rows, _affected(status), status, _ms(started))


def check_sql(sql: Any) -> None:
    """A statement's text as the engine can take it, or the client's error."""
    if not isinstance(sql, str) or not sql.strip():
        raise invalid("sql must be a non-empty string")
    if len(sql) > MAX_SQL_LENGTH:
        raise invalid(f"sql is longer than {MAX_SQL_LENGTH} characters")
    if "\0" in sql:
        # A NUL ends a protocol string: the engine would refuse the message as malformed
        # (08P01, a connection-class state a client takes for an outage).
        raise invalid("sql must not contain NUL characters (U+0000)")


def _check_count(declared: int, given: int) -> None:
    if given != declared:
        raise invalid(f"the statement takes {declared} parameter(s) but {given} were given")


def _leaves_session_alone(status: str, sql: str) -> bool:
    """Whether a statement that succeeded cannot have changed its session's state.

    Plain reads and writes leave it alone; SET, LISTEN, DECLARE, PREPARE, BEGIN and the
    like do not, nor do the functions that change settings or take session locks. The
    answer only lets the same principal's next statement skip the session reset, so a
    function that changes settings behind another name affects that principal alone.
    """
    return status.startswith(_PLAIN_TAGS) and not _calls_session_function(sql)


@functools.lru_cache(maxsize=4096)
def _calls_session_function(sql: str) -> bool:
    # Remembered per statement text: the search is a case-insensitive scan of the whole
    # statement, more work than the rest of a point select's checks together.
    return _SESSION_FUNCTION.search(sql) is not None


def _affected(status: str) -> int:
    if not status.startswith(_WRITE_TAGS):
        return 0
    match = _COUNT_TAIL.search(status)
    return int(match.group(1)) if match else 0


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
