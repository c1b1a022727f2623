"""What the engine's catalog says about user tables: the only source of names we trust.

Every table or column name a client sends is looked up here before it reaches SQL
(and is quoted by engine/quoting.py even then). System schemas (``helios``,
``pg_*``, ``information_schema``) are invisible: naming a table there is NOT_FOUND.
The queries run on the principal's own engine connection, so a role sees what its
privileges let it see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from heliosdb.engine.quoting import qualified, quote_ident
from heliosdb.errors import invalid, not_found

DEFAULT_SCHEMA = "public"
# helios and helios_* hold HeliosDB's own tables (keys, key-value and document catalogs):
# readable through SQL where the role allows, but not tables of the tables/rows API.
_SYSTEM_SCHEMA_FILTER = (
    "n.nspname <> 'helios' AND n.nspname NOT LIKE 'helios\\_%' "
    "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'"
)
_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view"}

_LIST_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       GREATEST(c.reltuples, 0)::bigint AS estimated_rows
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {_SYSTEM_SCHEMA_FILTER}
  AND ($1::text IS NULL OR n.nspname = $1)
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname
"""  # noqa: S608 - a constant: the filter above is our own text

_DESCRIBE_SQL = f"""
SELECT c.oid, c.relkind::text AS kind, GREATEST(c.reltuples, 0)::bigint AS estimated_rows,
  (SELECT coalesce(json_agg(json_build_object(
      'name', a.attname,
      'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
      'udt', t.typname,
      'nullable', NOT a.attnotnull,
      'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid),
      'identity', a.attidentity <> '',
      'generated', a.attgenerated <> '') ORDER BY a.attnum), '[]'::json)
   FROM pg_catalog.pg_attribute a
   JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
   LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(json_agg(json_build_object(
      'name', ic.relname,
      'unique', i.indisunique,
      'primary', i.indisprimary,
      'method', am.amname,
      'columns', (SELECT coalesce(json_agg(
                     coalesce(a.attname::text, pg_catalog.pg_get_indexdef(i.indexrelid, k.n::int,
                              true)) ORDER BY k.n), '[]'::json)
                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                  LEFT JOIN pg_catalog.pg_attribute a
                    ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
                  WHERE k.n <= i.indnkeyatts),
      'definition', pg_catalog.pg_get_indexdef(i.indexrelid)) ORDER BY ic.relname), '[]'::json)
   FROM pg_catalog.pg_index i
   JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
   JOIN pg_catalog.pg_am am ON am.oid = ic.relam
   WHERE i.indrelid = c.oid) AS indexes
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm')
  AND {_SYSTEM_SCHEMA_FILTER}
"""  # noqa: S608 - a constant: the filter above is our own text


# The lean form for row requests: column names and the primary key, nothing to format.
_LOOKUP_SQL = f"""
SELECT c.relkind::text AS kind,
  array(SELECT a.attname::text FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum) AS columns,
  array(SELECT a.attname::text
        FROM pg_catalog.pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary
        ORDER BY k.n) AS primary_key
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm')
  AND {_SYSTEM_SCHEMA_FILTER}
"""  # noqa: S608 - a constant: the filter above is our own text


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    type: str
    udt: str
    nullable: bool
    default: str | None
    identity: bool
    generated: bool


@dataclass(frozen=True, slots=True)
class IndexInfo:
    name: str
    columns: list[str]
    unique: bool
    primary: bool
    method: str
    definition: str


@dataclass(slots=True)
class TableInfo:
    schema: str
    name: str
    kind: str
    estimated_rows: int
    columns: list[ColumnInfo]
    indexes: list[IndexInfo]
    by_name: dict[str, ColumnInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {c.name: c for c in self.columns}

    @property
    def sql_name(self) -> str:
        """The table's schema-qualified, quoted name."""
        return qualified(self.schema, self.name)

    @property
    def display_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def primary_key(self) -> list[str]:
        for index in self.indexes:
            if index.primary:
                return list(index.columns)
        return []

    def column(self, name: str) -> ColumnInfo:
        info = self.by_name.get(name)
        if info is None:
            raise invalid(
                f"unknown column {name[:100]!r} in table {self.display_name}", column=name[:100]
            )
        return info

    def quoted(self, name: str) -> str:
        """A checked column's SQL; the column resolver of filters on this table."""
        return quote_ident(self.column(name).name)

    def describe(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "type": _RELKINDS.get(self.kind, self.kind),
            "estimated_rows": self.estimated_rows,
            "columns": [
                {
                    "name": c.name,
                    "type": c.type,
                    "nullable": c.nullable,
                    "default": c.default,
                    "primary_key": c.name in self.primary_key,
                    **({"identity": True} if c.identity else {}),
                    **({"generated": True} if c.generated else {}),
                }
                for c in self.columns
            ],
            "primary_key": self.primary_key,
            "indexes": [
                {
                    "name": i.name,
                    "columns": i.columns,
                    "unique": i.unique,
                    "primary": i.primary,
                    "method": i.method,
                    "definition": i.definition,
                }
                for i in self.indexes
            ],
        }


def split_name(name: str, schema: str | None) -> tuple[str, str]:
    """(schema, table) from a path name and an optional ``schema`` parameter."""
    if not name or len(name) > 200:
        raise invalid("a table name must be 1 to 200 characters")
    if schema:
        return schema, name
    if "." in name:
        first, _, rest = name.partition(".")
        if first and rest:
            return first, rest
    return DEFAULT_SCHEMA, name


def is_system_schema(schema: str) -> bool:
    return schema in ("helios", "information_schema") or schema.startswith("pg_")


async def list_tables(conn: Any, schema: str | None = None) -> list[dict[str, Any]]:
    stmt = await conn.prepared(_LIST_SQL)
    return [
        {
            "schema": r["schema"],
            "name": r["name"],
            "type": _RELKINDS.get(r["kind"], r["kind"]),
            "estimated_rows": r["estimated_rows"],
        }
        for r in await stmt.fetch(schema)
    ]


async def find_table(conn: Any, schema: str, name: str) -> TableInfo | None:
    if is_system_schema(schema):
        return None
    stmt = await conn.prepared(_DESCRIBE_SQL)
    row = await stmt.fetchrow(schema, name)
    if row is None:
        return None
    return TableInfo(
        schema=schema,
        name=name,
        kind=row["kind"],
        estimated_rows=row["estimated_rows"],
        columns=[ColumnInfo(**c) for c in row["columns"]],
        indexes=[IndexInfo(**i) for i in row["indexes"]],
    )


async def find_table_columns(conn: Any, schema: str, name: str) -> TableInfo | None:
    """The lean lookup for row requests: names, column names and primary key only."""
    if is_system_schema(schema):
        return None
    stmt = await conn.prepared(_LOOKUP_SQL)
    row = await stmt.fetchrow(schema, name)
    if row is None:
        return None
    pk = list(row["primary_key"])
    return TableInfo(
        schema=schema,
        name=name,
        kind=row["kind"],
        estimated_rows=0,
        columns=[ColumnInfo(c, "", "", True, None, False, False) for c in row["columns"]],
        indexes=[IndexInfo("", pk, True, True, "", "")] if pk else [],
    )


async def get_table(conn: Any, schema: str, name: str, *, detailed: bool = True) -> TableInfo:
    """The table, or NOT_FOUND; ``detailed=False`` knows only column names and primary key."""
    find = find_table if detailed else find_table_columns
    table = await find(conn, schema, name)
    if table is None:
        raise not_found(f"table {schema[:100]}.{name[:100]} does not exist", table=name[:200])
    return table
