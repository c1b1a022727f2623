"""Row streams: one statement's rows read from an engine portal as the client consumes them.

    async with streams.open(principal, sql, params) as stream:
        stream.columns                  known before the first row
        async for rows in stream: ...   batches of at most ``batch_rows`` rows

The statement runs in a transaction of its own (or in the caller's pinned transaction)
through a server-side cursor, so memory holds one batch whatever the result's size,
and the consumer's pace is the engine's pace. Leaving the block early (a client that
cancels) cancels the statement on the engine and rolls the transaction back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from heliosdb.engine import Engine
from heliosdb.engine.codecs import to_param, type_name
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import invalid
from heliosdb.security.principals import Principal
from heliosdb.services.query import Column, check_sql

_ENGINE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(slots=True)
class RowStream:
    columns: list[Column]
    cursor: Any
    batch_rows: int

    async def __aiter__(self) -> AsyncIterator[list[list[Any]]]:
        while True:
            try:
                records = await self.cursor.fetch(self.batch_rows)
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
            if not records:
                return
            # Floats keep NaN and infinities: unlike JSON, protocol buffers carry them.
            yield [list(r) for r in records]
            if len(records) < self.batch_rows:
                return


class RowStreams:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def open(
        self,
        principal: Principal,
        sql: str,
        params: Sequence[Any] = (),
        *,
        batch_rows: int = 1000,
        connection: Any = None,
    ) -> AsyncIterator[RowStream]:
        """A stream of ``sql``'s rows; on ``connection`` (already in a transaction) if given."""
        check_sql(sql)
        if connection is not None:
            yield await self._start(connection, sql, params, batch_rows)
            return
        async with self.engine.connection(principal.access) as conn:
            try:
                tx = conn.transaction(readonly=principal.read_only)
                await tx.start()
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None
            try:
                yield await self._start(conn, sql, params, batch_rows)
            except BaseException:
                with contextlib.suppress(*_ENGINE_ERRORS):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except _ENGINE_ERRORS as exc:
                raise from_engine(exc) from None

    async def _start(
        self, conn: Any, sql: str, params: Sequence[Any], batch_rows: int
    ) -> RowStream:
        try:
            stmt = await conn.prepare(sql)
            declared = stmt.get_parameters()
            if len(params) != len(declared):
                raise invalid(
                    f"the statement takes {len(declared)} parameter(s) but {len(params)} were given"
                )
            args = [
                to_param(value, t, i + 1)
                for i, (value, t) in enumerate(zip(params, declared, strict=True))
            ]
            cursor = await stmt.cursor(*args)
        except _ENGINE_ERRORS as exc:
            raise from_engine(exc) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise invalid(f"a parameter does not fit its column type: {exc}") from None
        attributes = stmt.get_attributes()
        columns = [Column(a.name, type_name(a.type)) for a in attributes]
        return RowStream(columns, cursor, batch_rows)
