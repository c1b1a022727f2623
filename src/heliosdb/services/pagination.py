"""One page of rows: the SELECT for filters, order and limit, and its opaque cursor.

Keyset pagination: the order keys get the primary key appended (so the order is
total), each page asks for ``limit + 1`` rows to know whether there is a next page, and
the cursor carries the last row's key values; the next page starts strictly after them,
NULLs placed as the order places them. A table without a primary key (or a view) pages
by offset. The cursor names its order, so it cannot be replayed under another one; its
values are bind parameters like any other value.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from heliosdb.engine.codecs import json_default
from heliosdb.engine.quoting import quote_ident
from heliosdb.errors import invalid
from heliosdb.services import catalog
from heliosdb.services.filters import CompiledFilter
from heliosdb.services.postgrest import OrderKey

_CURSOR_VERSION = 1


class ReadQuery:
    """SELECT ... WHERE filters AND after-cursor ORDER BY keys LIMIT n+1."""

    def __init__(
        self,
        table: catalog.TableInfo,
        *,
        select: list[str] | None,
        order: list[OrderKey],
        where: CompiledFilter,
        cursor: str | None,
        limit: int,
    ) -> None:
        """``where`` must number its parameters from $1."""
        self.table = table
        self.columns = select
        for column in self.columns or ():
            table.column(column)
        for key in order:
            table.column(key.column)
        self.order = list(order)
        pk = table.primary_key
        self.keyset = bool(pk)
        if self.keyset:
            ordered = {k.column for k in self.order}
            self.order += [OrderKey(column) for column in pk if column not in ordered]
        self.signature = ",".join(
            f"{k.column}:{'d' if k.descending else 'a'}:{'f' if k.effective_nulls_first else 'l'}"
            for k in self.order
        )
        self.params: list[Any] = list(where.params)
        conditions = [where.sql] if where.sql else []
        self.offset = 0
        if cursor is not None:
            position = _decode_cursor(cursor, self.signature, self.keyset, len(self.order))
            if self.keyset:
                conditions.append(self._after(position))
            else:
                self.offset = int(position)
        # Every column is "*" rather than a list, so a column added since the table
        # was described shows up at once (the engine re-prepares the statement).
        selected = [quote_ident(c) for c in self.columns] if self.columns else ["*"]
        selected += [quote_ident(k.column) for k in self.order]
        self.hidden = len(self.order)
        sql = f"SELECT {', '.join(selected)} FROM {table.sql_name}"  # noqa: S608 - quoted names
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if self.order:
            sql += " ORDER BY " + ", ".join(_order_sql(k) for k in self.order)
        self.params.append(limit + 1)
        sql += f" LIMIT ${len(self.params)}"
        if self.offset:
            self.params.append(self.offset)
            sql += f" OFFSET ${len(self.params)}"
        self.sql = sql
        self.limit = limit

    def _after(self, values: list[Any]) -> str:
        """Rows strictly after the cursor's key values in this order (nulls included)."""
        placeholders: list[str | None] = []
        for value in values:
            if value is None:
                placeholders.append(None)
            else:
                self.params.append(value)
                placeholders.append(f"${len(self.params)}")
        alternatives = []
        for i, key in enumerate(self.order):
            after = _after_key(quote_ident(key.column), key, placeholders[i])
            if after is None:
                continue
            equal = [
                f"{quote_ident(k.column)} = {p}" if p else f"{quote_ident(k.column)} IS NULL"
                for k, p in zip(self.order[:i], placeholders[:i], strict=True)
            ]
            alternatives.append("(" + " AND ".join([*equal, after]) + ")")
        return "(" + (" OR ".join(alternatives) or "false") + ")"

    def next_cursor(self, last: Any) -> str:
        if self.keyset:
            position: Any = list(last)[len(last) - self.hidden :]
        else:
            position = self.offset + self.limit
        payload = {"v": _CURSOR_VERSION, "o": self.signature, "p": position}
        raw = orjson.dumps(payload, default=json_default)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_key(column: str, key: OrderKey, placeholder: str | None) -> str | None:
    nulls_first = key.effective_nulls_first
    if placeholder is None:
        return f"{column} IS NOT NULL" if nulls_first else None
    op = "<" if key.descending else ">"
    if nulls_first:
        return f"{column} {op} {placeholder}"
    return f"({column} {op} {placeholder} OR {column} IS NULL)"


def _order_sql(key: OrderKey) -> str:
    sql = quote_ident(key.column) + (" DESC" if key.descending else " ASC")
    if key.nulls_first is not None:
        sql += " NULLS FIRST" if key.nulls_first else " NULLS LAST"
    return sql


def _decode_cursor(cursor: str, signature: str, keyset: bool, keys: int) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid("the cursor is not valid; use next_cursor from a previous page") from None
    if not isinstance(payload, dict) or payload.get("v") != _CURSOR_VERSION:
        raise invalid("the cursor is not valid; use next_cursor from a previous page")
    if payload.get("o") != signature:
        raise invalid("the cursor belongs to a different order; keep order= the same across pages")
    position = payload.get("p")
    if keyset:
        if not isinstance(position, list) or len(position) != keys:
            raise invalid("the cursor is not valid; use next_cursor from a previous page")
        return position
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise invalid("the cursor is not valid; use next_cursor from a previous page")
    return position
