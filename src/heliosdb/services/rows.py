"""Rows of a table as a resource: read with filters, order and a cursor; insert; update; delete.

A request names its table and carries PostgREST-style parameters (parsed into a
:class:`RowRequest` by :func:`parse_request`). Table and column names are checked against
the catalog and quoted; filters are compiled by services/filters.py; every value is a
bind parameter. Reads page with an opaque cursor (services/pagination.py). Updates and
deletes without any filter are refused unless ``all`` is set. Table descriptions are
cached per node for a moment and read afresh when the engine says they are stale.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from pglast import ast, enums

from heliosdb.engine import Engine
from heliosdb.engine.codecs import non_finite_fixer, type_name
from heliosdb.engine.quoting import quote_ident
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import HeliosError, invalid
from heliosdb.security.principals import Principal
from heliosdb.services import catalog
from heliosdb.services.filters import CompiledFilter, and_all, bind_params, compile_expression
from heliosdb.services.filters import parse_filter as parse_where
from heliosdb.services.pagination import ReadQuery
from heliosdb.services.postgrest import OrderKey, parse_conditions, parse_order, parse_select
from heliosdb.settings import RowsSettings

RESERVED = frozenset(
    {"select", "order", "limit", "cursor", "where", "pk", "all", "return", "schema"}
)
MAX_PARAMS_PER_STATEMENT = 30_000
CATALOG_CACHE_ENTRIES = 1024
# Engine errors that say a cached table description is out of date.
_STALE_SQLSTATES = frozenset({"42P01", "42703"})
T = TypeVar("T")


@dataclass(slots=True)
class RowRequest:
    """The parameters of one rows request, parsed but not yet checked against a table."""

    schema: str | None = None
    select: list[str] | None = None
    conditions: list[ast.Node] = field(default_factory=list)
    where: str | None = None
    order: list[OrderKey] = field(default_factory=list)
    limit: int | None = None
    cursor: str | None = None
    pk: str | None = None
    all: bool = False
    representation: bool | None = None  # return=representation / minimal; None = default

    @property
    def has_filter(self) -> bool:
        return bool(self.conditions or self.where or self.pk is not None)


def parse_request(pairs: Iterable[tuple[str, str]]) -> RowRequest:
    """Query parameters (name, value) in order; repeated filter names are ANDed."""
    request = RowRequest()
    seen: set[str] = set()
    filters: list[tuple[str, str]] = []
    for name, value in pairs:
        if name not in RESERVED:
            filters.append((name, value))
            continue
        if name in seen:
            raise invalid(f"the parameter {name!r} may be given only once")
        seen.add(name)
        if name == "select":
            request.select = parse_select(value)
        elif name == "order":
            request.order = parse_order(value)
        elif name == "limit":
            request.limit = _int(value, "limit")
        elif name == "cursor":
            request.cursor = value
        elif name == "where":
            request.where = value
        elif name == "pk":
            request.pk = value
        elif name == "all":
            request.all = _bool(value, "all")
        elif name == "return":
            if value not in ("representation", "minimal"):
                raise invalid("return= takes representation or minimal")
            request.representation = value == "representation"
        elif name == "schema":
            request.schema = value or None
    request.conditions = parse_conditions(filters)
    return request


class RowsService:
    def __init__(self, engine: Engine, settings: RowsSettings) -> None:
        self.engine = engine
        self.settings = settings
        # (schema, name) -> (expiry on the monotonic clock, lean description)
        self._tables: OrderedDict[tuple[str, str], tuple[float, catalog.TableInfo]] = OrderedDict()

    async def read(self, principal: Principal, name: str, request: RowRequest) -> dict[str, Any]:
        limit = self._limit(request.limit)
        async with self.engine.connection(principal.access, owner=principal.id) as conn:

            async def work(table: catalog.TableInfo) -> tuple[ReadQuery, list[Any], Any]:
                query = ReadQuery(
                    table,
                    select=request.select,
                    order=request.order,
                    where=_filter(table, request, 0),
                    cursor=request.cursor,
                    limit=limit,
                )
                records, attributes, _ = await _run(conn, query.sql, query.params)
                return query, records, attributes

            query, records, attributes = await self._with_table(
                conn, principal, name, request, work
            )
        shown = len(attributes) - query.hidden
        names = [a.name for a in attributes[:shown]]
        fix = non_finite_fixer([a.type.name for a in attributes[:shown]])
        more = len(records) > limit
        records = records[:limit]
        rows = []
        for record in records:
            values = list(record)[: len(names)]
            rows.append(dict(zip(names, fix(values) if fix else values, strict=True)))
        next_cursor = query.next_cursor(records[-1]) if more and records else None
        return {
            "columns": [
                {"name": n, "type": type_name(a.type)}
                for n, a in zip(names, attributes, strict=False)
            ],
            "rows": rows,
            "count": len(rows),
            "next_cursor": next_cursor,
        }

    async def insert(
        self, principal: Principal, name: str, request: RowRequest, body: Any
    ) -> dict[str, Any]:
        items = body if isinstance(body, list) else [body]
        if not items or not all(isinstance(item, dict) for item in items):
            raise invalid("the body must be a JSON object or a non-empty array of objects")
        if len(items) > self.settings.max_insert_rows:
            raise invalid(f"at most {self.settings.max_insert_rows} rows per request")
        returning = request.representation is not False
        _refuse_read_parameters(request, "insert")
        if request.has_filter or request.all:
            raise invalid("filters, pk= and all= do not apply to an insert")
        keys = list(dict.fromkeys(k for item in items for k in item))
        async with self.engine.connection(principal.access, owner=principal.id) as conn:

            async def work(table: catalog.TableInfo) -> tuple[int, list[dict[str, Any]]]:
                for key in keys:
                    table.column(key)
                out: list[dict[str, Any]] = []
                affected = 0
                async with conn.transaction():
                    for sql, values in _insert_statements(table, request, keys, items, returning):
                        records, attributes, status = await _run(
                            conn, sql, values, cache=len(items) <= 1
                        )
                        affected += _affected(status)
                        out.extend(_objects(records, attributes))
                return affected, out

            affected, out = await self._with_table(conn, principal, name, request, work)
        result: dict[str, Any] = {"affected_rows": affected}
        if returning:
            result["rows"] = out
        return result

    async def update(
        self, principal: Principal, name: str, request: RowRequest, body: Any
    ) -> dict[str, Any]:
        if not isinstance(body, dict) or not body:
            raise invalid("the body must be a JSON object of column: new value")
        self._require_filter(request, "update")
        values = list(body.values())
        async with self.engine.connection(principal.access, owner=principal.id) as conn:

            async def work(table: catalog.TableInfo) -> tuple[list[Any], Any, str]:
                assignments = [f"{table.quoted(k)} = ${i}" for i, k in enumerate(body, 1)]
                where = _filter(table, request, len(values))
                sql = f"UPDATE {table.sql_name} SET {', '.join(assignments)}"  # noqa: S608
                sql += _where_clause(where) + _returning(table, request, request.representation)
                return await _run(conn, sql, values + where.params)

            records, attributes, status = await self._with_table(
                conn, principal, name, request, work
            )
        return _write_result(status, records, attributes, request.representation)

    async def delete(self, principal: Principal, name: str, request: RowRequest) -> dict[str, Any]:
        self._require_filter(request, "delete")
        async with self.engine.connection(principal.access, owner=principal.id) as conn:

            async def work(table: catalog.TableInfo) -> tuple[list[Any], Any, str]:
                where = _filter(table, request, 0)
                sql = f"DELETE FROM {table.sql_name}"  # noqa: S608 - a checked, quoted name
                sql += _where_clause(where) + _returning(table, request, request.representation)
                return await _run(conn, sql, where.params)

            records, attributes, status = await self._with_table(
                conn, principal, name, request, work
            )
        return _write_result(status, records, attributes, request.representation)

    async def _with_table(
        self,
        conn: Any,
        principal: Principal,
        name: str,
        request: RowRequest,
        work: Callable[[catalog.TableInfo], Awaitable[T]],
    ) -> T:
        """Run ``work`` with the table's description, from the cache when it is fresh.

        A cached description may be out of date (DDL by another request or node). The
        engine notices (undefined table or column, changed result type) and so does the
        description (a column it does not know): then ``work``, which failed before
        changing anything, runs once more with a description read afresh.

        The statements here change no session state, so the session is kept for the
        principal's next request (no reset round trip; see Engine.connection).
        """
        key = catalog.split_name(name, request.schema)
        table = self._cached(key)
        try:
            if table is not None:
                try:
                    result = await work(table)
                    conn.keep_session(principal.id)
                    return result
                except (HeliosError, asyncpg.PostgresError) as exc:
                    if not _looks_stale(exc):
                        raise
                    self._tables.pop(key, None)
            table = await catalog.get_table(conn, *key, detailed=False)
            self._remember(key, table)
            result = await work(table)
            conn.keep_session(principal.id)
            return result
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) == "42P01":
                self._tables.pop(key, None)
            raise from_engine(exc) from None
        except (asyncpg.InterfaceError, TimeoutError) as exc:
            raise from_engine(exc) from None

    def _cached(self, key: tuple[str, str]) -> catalog.TableInfo | None:
        entry = self._tables.get(key)
        if entry is None:
            return None
        expires, table = entry
        if expires < time.monotonic():
            del self._tables[key]
            return None
        return table

    def _remember(self, key: tuple[str, str], table: catalog.TableInfo) -> None:
        ttl = self.settings.catalog_cache_seconds
        if ttl <= 0:
            return
        self._tables[key] = (time.monotonic() + ttl, table)
        self._tables.move_to_end(key)
        while len(self._tables) > CATALOG_CACHE_ENTRIES:
            self._tables.popitem(last=False)

    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return self.settings.default_limit
        if not 0 < limit <= self.settings.max_limit:
            raise invalid(f"limit must be between 1 and {self.settings.max_limit}")
        return limit

    @staticmethod
    def _require_filter(request: RowRequest, verb: str) -> None:
        _refuse_read_parameters(request, verb)
        if request.has_filter and request.all:
            raise invalid(f"give either filters or all=true to {verb}, not both")
        if not request.has_filter and not request.all:
            raise invalid(
                f"refusing to {verb} every row: add a filter (column=op.value, where=, pk=) "
                "or all=true"
            )


# -- statements -------------------------------------------------------------------------


def _looks_stale(exc: BaseException) -> bool:
    if isinstance(exc, HeliosError):
        return "column" in exc.details  # a column the cached description does not know
    return getattr(exc, "sqlstate", None) in _STALE_SQLSTATES


def _refuse_read_parameters(request: RowRequest, verb: str) -> None:
    used = [
        name
        for name, value in (
            ("order", request.order),
            ("limit", request.limit),
            ("cursor", request.cursor),
        )
        if value
    ]
    if used:
        raise invalid(f"{', '.join(used)} apply to reads only, not to {verb}")


def _filter(table: catalog.TableInfo, request: RowRequest, offset: int) -> CompiledFilter:
    nodes = list(request.conditions)
    if request.where is not None:
        nodes.append(parse_where(request.where))
    if request.pk is not None:
        nodes.extend(_pk_conditions(table, request.pk))
    node = and_all(nodes)
    if node is None:
        return CompiledFilter("", [])
    return compile_expression(node, table.quoted, param_offset=offset)


def _pk_conditions(table: catalog.TableInfo, value: str) -> list[ast.Node]:
    pk = table.primary_key
    if not pk:
        raise invalid(f"table {table.display_name} has no primary key; filter by columns instead")
    parts = [value] if len(pk) == 1 else value.split(",")
    if len(parts) != len(pk):
        raise invalid(f"pk= takes {len(pk)} comma-separated values ({', '.join(pk)})")
    return [
        ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP,
            name=(ast.String(sval="="),),
            lexpr=ast.ColumnRef(fields=(ast.String(sval=column),)),
            rexpr=ast.A_Const(isnull=False, val=ast.String(sval=part)),
        )
        for column, part in zip(pk, parts, strict=True)
    ]


def _where_clause(where: CompiledFilter) -> str:
    return f" WHERE {where.sql}" if where.sql else ""


def _returning(table: catalog.TableInfo, request: RowRequest, representation: bool | None) -> str:
    """RETURNING the ``select=`` columns (default all) when the rows are wanted back."""
    if not representation:
        return ""
    if request.select is None:
        return " RETURNING *"
    return " RETURNING " + ", ".join(table.quoted(name) for name in request.select)


def _insert_statements(
    table: catalog.TableInfo,
    request: RowRequest,
    keys: list[str],
    items: list[dict[str, Any]],
    returning: bool,
) -> Iterable[tuple[str, list[Any]]]:
    suffix = _returning(table, request, returning)
    if not keys:
        for _ in items:
            yield f"INSERT INTO {table.sql_name} DEFAULT VALUES{suffix}", []
        return
    columns = ", ".join(quote_ident(k) for k in keys)
    per_statement = max(1, MAX_PARAMS_PER_STATEMENT // len(keys))
    for start in range(0, len(items), per_statement):
        tuples: list[str] = []
        values: list[Any] = []
        for item in items[start : start + per_statement]:
            slots = []
            for key in keys:
                if key in item:
                    values.append(item[key])
                    slots.append(f"${len(values)}")
                else:
                    slots.append("DEFAULT")
            tuples.append(f"({', '.join(slots)})")
        values_sql = ", ".join(tuples)
        sql = f"INSERT INTO {table.sql_name} ({columns}) VALUES {values_sql}{suffix}"  # noqa: S608
        yield sql, values


# -- execution --------------------------------------------------------------------------


async def _run(
    conn: Any, sql: str, values: Sequence[Any], *, cache: bool = True
) -> tuple[list[Any], Sequence[Any], str]:
    """Run ``sql`` with JSON ``values`` bound to the types the engine infers for them."""
    records, stmt = await conn.run_prepared(
        sql, lambda stmt: bind_params(values, stmt.get_parameters()), cache=cache, what="a value"
    )
    return records, stmt.get_attributes(), stmt.get_statusmsg() or ""


def _objects(records: list[Any], attributes: Sequence[Any]) -> list[dict[str, Any]]:
    fix = non_finite_fixer([a.type.name for a in attributes])
    names = [a.name for a in attributes]
    out = []
    for record in records:
        values = list(record)
        out.append(dict(zip(names, fix(values) if fix else values, strict=True)))
    return out


def _write_result(
    status: str, records: list[Any], attributes: Sequence[Any], representation: bool | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"affected_rows": _affected(status)}
    if representation:
        result["rows"] = _objects(records, attributes)
    return result


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise invalid(f"{name} must be an integer") from None


def _bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise invalid(f"{name} must be true or false")
