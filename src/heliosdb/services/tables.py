"""Tables as resources: list, describe, create from a JSON description, drop.

Names in a description are quoted by engine/quoting.py; types and defaults are
compiled from allow-lists (services/columntypes.py). Everything runs on the
principal's engine connection, so a read-only principal's CREATE or DROP is refused
by the engine itself (PERMISSION_DENIED).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from heliosdb.engine import Engine
from heliosdb.engine.quoting import qualified, quote_ident
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import HeliosError, invalid
from heliosdb.security.principals import Principal
from heliosdb.services import catalog
from heliosdb.services.columntypes import compile_default, compile_type

MAX_COLUMNS = 1600
MAX_INDEXES = 64
INDEX_METHODS = frozenset({"btree", "hash", "gin", "brin"})
_TABLE_KEYS = frozenset({"name", "schema", "columns", "primary_key", "indexes"})
_COLUMN_KEYS = frozenset({"name", "type", "nullable", "default", "primary_key", "unique"})
_INDEX_KEYS = frozenset({"columns", "unique", "name", "method"})


class TablesService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def list_tables(
        self, principal: Principal, schema: str | None = None
    ) -> list[dict[str, Any]]:
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                tables = await catalog.list_tables(conn, schema)
                conn.keep_session(principal.id)  # catalog reads change no session state
                return tables
            except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None

    async def describe(
        self, principal: Principal, name: str, schema: str | None = None
    ) -> dict[str, Any]:
        schema_name, table_name = catalog.split_name(name, schema)
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                table = await catalog.get_table(conn, schema_name, table_name)
                conn.keep_session(principal.id)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None
        return table.describe()

    async def create(self, principal: Principal, spec: Any) -> dict[str, Any]:
        statements, schema, name = compile_create(spec)
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                async with conn.transaction():
                    for statement in statements:
                        await conn.execute(statement)
                    table = await catalog.get_table(conn, schema, name)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None
        return table.describe()

    async def drop(
        self, principal: Principal, name: str, schema: str | None = None, *, cascade: bool = False
    ) -> dict[str, Any]:
        schema_name, table_name = catalog.split_name(name, schema)
        async with self.engine.connection(principal.access, owner=principal.id) as conn:
            try:
                async with conn.transaction():
                    table = await catalog.get_table(conn, schema_name, table_name)
                    keyword = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(table.kind, "TABLE")
                    suffix = " CASCADE" if cascade else ""
                    await conn.execute(f"DROP {keyword} {table.sql_name}{suffix}")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise from_engine(exc) from None
        return {"dropped": True, "schema": schema_name, "name": table_name}


def compile_create(spec: Any) -> tuple[list[str], str, str]:
    """The statements that create the described table, and its schema and name."""
    if not isinstance(spec, dict):
        raise invalid("the table description must be a JSON object")
    _no_unknown_keys(spec, _TABLE_KEYS, "table")
    name = _name(spec.get("name"), "table name")
    schema = _name(spec.get("schema", catalog.DEFAULT_SCHEMA), "schema")
    if catalog.is_system_schema(schema):
        raise invalid(f"tables cannot be created in the system schema {schema!r}")
    columns = spec.get("columns")
    if not isinstance(columns, list) or not columns:
        raise invalid("columns must be a non-empty array of column objects")
    if len(columns) > MAX_COLUMNS:
        raise invalid(f"a table has at most {MAX_COLUMNS} columns")
    definitions: list[str] = []
    names: list[str] = []
    column_pk: list[str] = []
    for column in columns:
        definition, column_name, is_pk = _column(column)
        if column_name in names:
            raise invalid(f"column {column_name!r} appears twice")
        names.append(column_name)
        definitions.append(definition)
        if is_pk:
            column_pk.append(column_name)
    primary_key = _column_list(spec.get("primary_key", []), names, "primary_key", empty_ok=True)
    if primary_key and column_pk and primary_key != column_pk:
        raise invalid("give the primary key either on columns or as primary_key, not both")
    primary_key = primary_key or column_pk
    if primary_key:
        definitions.append(f"PRIMARY KEY ({', '.join(quote_ident(c) for c in primary_key)})")
    table_sql = qualified(schema, name)
    statements = [f"CREATE TABLE {table_sql} ({', '.join(definitions)})"]
    indexes = spec.get("indexes", [])
    if not isinstance(indexes, list) or len(indexes) > MAX_INDEXES:
        raise invalid(f"indexes must be an array of at most {MAX_INDEXES} index objects")
    statements.extend(_index(index, table_sql, names) for index in indexes)
    return statements, schema, name


def _column(column: Any) -> tuple[str, str, bool]:
    if not isinstance(column, dict):
        raise invalid("each column must be a JSON object with name and type")
    _no_unknown_keys(column, _COLUMN_KEYS, "column")
    name = _name(column.get("name"), "column name")
    parts = [quote_ident(name), compile_type(column.get("type"))]
    is_pk = _flag(column, "primary_key")
    nullable = column.get("nullable", True)
    if not isinstance(nullable, bool):
        raise invalid(f"nullable of column {name!r} must be true or false")
    if not nullable:
        parts.append("NOT NULL")
    if "default" in column:
        try:
            parts.append("DEFAULT " + compile_default(column["default"]))
        except HeliosError as exc:
            raise invalid(f"default of column {name!r}: {exc.message}") from None
    if _flag(column, "unique"):
        parts.append("UNIQUE")
    return " ".join(parts), name, is_pk


def _index(index: Any, table_sql: str, names: list[str]) -> str:
    if not isinstance(index, dict):
        raise invalid("each index must be a JSON object with columns")
    _no_unknown_keys(index, _INDEX_KEYS, "index")
    columns = _column_list(index.get("columns"), names, "index columns", empty_ok=False)
    method = index.get("method", "btree")
    if method not in INDEX_METHODS:
        raise invalid(f"index method must be one of {', '.join(sorted(INDEX_METHODS))}")
    unique = "UNIQUE " if _flag(index, "unique") else ""
    index_name = ""
    if index.get("name") is not None:
        index_name = quote_ident(_name(index["name"], "index name")) + " "
    column_sql = ", ".join(quote_ident(c) for c in columns)
    return f"CREATE {unique}INDEX {index_name}ON {table_sql} USING {method} ({column_sql})"


def _column_list(value: Any, names: list[str], what: str, *, empty_ok: bool) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (not value and not empty_ok):
        raise invalid(f"{what} must be an array of column names")
    for item in value:
        if item not in names:
            raise invalid(f"{what} names an unknown column: {str(item)[:100]!r}")
    if len(set(value)) != len(value):
        raise invalid(f"{what} repeats a column")
    return list(value)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"{what} must be a non-empty string")
    quote_ident(value)  # length and NUL checks
    return value


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise invalid(f"{key} must be true or false")
    return value


def _no_unknown_keys(data: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise invalid(
            f"unknown {what} field(s): {', '.join(unknown)[:200]}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
