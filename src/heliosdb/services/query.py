"""SQL from clients: one parameterised statement, or a script when asked for.

The statement runs on an engine connection logged in as the principal's role, so the
engine decides what it may do. Single statements go through the extended protocol
(which by itself refuses a second statement); scripts use the simple protocol and
take no parameters.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from heliosdb.engine import Engine
from heliosdb.engine.codecs import non_finite_fixer, to_param, type_name
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import invalid
from heliosdb.security.principals import Principal

MAX_SQL_LENGTH = 1_000_000
_COUNT_TAIL = re.compile(r"(\d+)$")
# Tags whose trailing number counts rows changed rather than rows returned.
_WRITE_TAGS = ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY")
_PLAIN_TAGS = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE")
# Functions whose effect outlives the statement: settings and session advisory locks.
_SESSION_FUNCTIONS = ("set_config", "advisory_lock", "dblink")
_SESSION_FUNCTION = re.compile("|".join(_SESSION_FUNCTIONS), re.IGNORECASE)


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

    @staticmethod
    def of(stmt: Any) -> _Plan:
        attributes = stmt.get_attributes()
        return _Plan(
            parameters=tuple(stmt.get_parameters()),
            columns=tuple(Column(a.name, type_name(a.type)) for a in attributes),
            fix=non_finite_fixer([a.type.name for a in attributes]),
        )


class QueryService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def execute(
        self, principal: Principal, sql: str, params: Sequence[Any] = (), *, script: bool = False
    ) -> QueryResult:
        if not isinstance(sql, str) or not sql.strip():
            raise invalid("sql must be a non-empty string")
        if len(sql) > MAX_SQL_LENGTH:
            raise invalid(f"sql is longer than {MAX_SQL_LENGTH} characters")
        if script and params:
            raise invalid("a script takes no params; use one statement with $1..$n instead")
        started = time.perf_counter()
        lease = self.engine.connection(principal.access, owner=principal.id)
        async with lease:
            conn = lease.raw  # not the pool's proxy, which forwards each call via __getattr__
            try:
                if script:
                    status = await conn.execute(sql)
                    return QueryResult([], [], _affected(status), status, _ms(started))
                # _run_statement's steps, here: a coroutine level is paid on every resumption
                binder = _Binder(conn, sql, params)
                records, stmt = await conn.run_prepared(sql, binder.bind)
                result = binder.result(records, stmt, started)
                if _leaves_session_alone(result.status, sql):
                    conn.keep_session(principal.id)
                return result
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
            except (asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None

    async def execute_on(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """One statement on an engine connection the caller holds (a pinned transaction's)."""
        if not isinstance(sql, str) or not sql.strip():
            raise invalid("sql must be a non-empty string")
        if len(sql) > MAX_SQL_LENGTH:
            raise invalid(f"sql is longer than {MAX_SQL_LENGTH} characters")
        try:
            return await self._run_statement(conn, sql, params, time.perf_counter())
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise from_engine(exc) from None

    async def _run_statement(
        self, conn: Any, sql: str, params: Sequence[Any], started: float
    ) -> QueryResult:
        binder = _Binder(conn, sql, params)
        records, stmt = await conn.run_prepared(sql, binder.bind)
        return binder.result(records, stmt, started)


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
        if len(params) != len(declared):
            raise invalid(
                f"the statement takes {len(declared)} parameter(s) but {len(params)} were given"
            )
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
