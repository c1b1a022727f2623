"""Async queries: submitted now, run in the background, answered from the engine later.

    submit(principal, sql, params) -> {query_id, status: queued}
    get(principal, id)             -> status, timings, result or error
    cancel(principal, id)          -> cancelled (the statement is cancelled on the engine)

State lives in ``helios.async_queries`` (migration 5), so any node answers a GET and a
restart loses nothing finished; results are kept ``result_ttl_seconds``. Only the key (or
user) that submitted a query can read or cancel it; others get NOT_FOUND, so ids reveal
nothing. Each node runs at most ``max_running_per_node`` at once; the rest wait queued.
A cancel on the node running the query cancels its task (asyncpg then cancels the
statement); from another node it cancels the engine backend, but only while that backend
is still running this query's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.errors import ErrorCode, HeliosError, not_found
from heliosdb.security.principals import Principal
from heliosdb.services.query import QueryService, check_sql
from heliosdb.settings import AsyncQuerySettings

log = logging.getLogger("heliosdb.asyncqueries")

_PRUNE_EVERY_SECONDS = 60.0
_COLUMNS = "id::text AS id, status, submitted_at, started_at, finished_at, result, error"


class AsyncQueries:
    def __init__(self, engine: Engine, query: QueryService, settings: AsyncQuerySettings) -> None:
        self.engine = engine
        self.query = query
        self.settings = settings
        self.node = uuid.uuid4().hex
        self._slots = asyncio.Semaphore(settings.max_running_per_node)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            # Running on a backend that no longer exists: its node died with it.
            await conn.execute(
                "UPDATE helios.async_queries q SET status = 'failed', finished_at = now(), "
                "expires_at = now() + make_interval(secs => $1), error = $2::json "
                "WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
                "WHERE a.pid = q.backend_pid AND a.backend_start = q.backend_start)",
                self.settings.result_ttl_seconds,
                _error_json(HeliosError(ErrorCode.UNAVAILABLE, "the node running it stopped")),
            )
        self._pruner = asyncio.create_task(self._prune_forever(), name="async query pruning")

    async def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if tasks:
            with contextlib.suppress(HeliosError, asyncpg.PostgresError, OSError):
                async with self.engine.connection(Access.SYSTEM) as conn:
                    await conn.execute(
                        "UPDATE helios.async_queries SET status = 'failed', finished_at = now(), "
                        "expires_at = now() + make_interval(secs => $2), error = $3::json "
                        "WHERE node = $1 AND status IN ('queued', 'running')",
                        self.node,
                        self.settings.result_ttl_seconds,
                        _error_json(
                            HeliosError(ErrorCode.UNAVAILABLE, "the node running it stopped")
                        ),
                    )

    # -- requests -----------------------------------------------------------------

    async def submit(self, principal: Principal, sql: str, params: list[Any]) -> dict[str, Any]:
        check_sql(sql)
        query_id = str(uuid.uuid4())
        async with self.engine.connection(Access.SYSTEM) as conn:
            await conn.execute(
                "INSERT INTO helios.async_queries (id, principal_id, sql, params, status, node) "
                "VALUES ($1::uuid, $2, $3, $4::json, 'queued', $5)",
                query_id,
                principal.id,
                sql,
                params,
                self.node,
            )
        task = asyncio.create_task(self._run(principal, query_id, sql, params))
        self._tasks[query_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(query_id, None))
        return {"query_id": query_id, "status": "queued"}

    async def get(self, principal: Principal, query_id: str) -> dict[str, Any]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM helios.async_queries "  # noqa: S608 - constant
                "WHERE id::text = $1 AND principal_id = $2",
                query_id,
                principal.id,
            )
        if row is None:
            raise not_found(f"no async query {query_id!r}")
        return _describe(row)

    async def cancel(self, principal: Principal, query_id: str) -> dict[str, Any]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            before = await conn.fetchrow(
                "WITH old AS (SELECT id, status, backend_pid, backend_start, node, sql "
                "FROM helios.async_queries WHERE id::text = $1 AND principal_id = $2 FOR UPDATE) "
                "UPDATE helios.async_queries q SET status = 'cancelled', finished_at = now(), "
                "expires_at = now() + make_interval(secs => $3) FROM old WHERE q.id = old.id "
                "AND old.status IN ('queued', 'running') "
                "RETURNING old.status, old.backend_pid, old.backend_start, old.node, old.sql",
                query_id,
                principal.id,
                self.settings.result_ttl_seconds,
            )
            if before is not None and before["status"] == "running":
                task = self._tasks.get(query_id)
                if task is not None:
                    task.cancel()
                else:
                    await conn.execute(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = $1 "
                        "AND backend_start = $2 AND state = 'active' AND query = $3",
                        before["backend_pid"],
                        before["backend_start"],
                        before["sql"],
                    )
        return await self.get(principal, query_id)

    # -- running ------------------------------------------------------------------

    async def _run(self, principal: Principal, query_id: str, sql: str, params: list[Any]) -> None:
        async with self._slots:
            try:
                async with self.engine.connection(principal.access) as conn:
                    started = await self._mark_running(query_id, conn.get_server_pid())
                    if not started:
                        return  # cancelled while queued
                    result = await self.query.execute_on(conn, sql, params)
                if len(result.rows) > self.settings.max_result_rows:
                    raise HeliosError(
                        ErrorCode.RESOURCE_EXHAUSTED,
                        f"the result has more than {self.settings.max_result_rows} rows; "
                        "use POST /query/stream for large results",
                    )
                body = {
                    "columns": [{"name": c.name, "type": c.type} for c in result.columns],
                    "rows": result.rows,
                    "affected_rows": result.affected_rows,
                    "command": result.status,
                    "execution_time_ms": result.execution_time_ms,
                }
                await self._finish(query_id, "succeeded", body, None)
            except asyncio.CancelledError:
                raise
            except HeliosError as exc:
                await self._finish(query_id, "failed", None, _error_json(exc))
            except Exception as exc:
                log.exception("async query %s failed unexpectedly", query_id)
                await self._finish(
                    query_id, "failed", None, _error_json(HeliosError(ErrorCode.INTERNAL, str(exc)))
                )

    async def _mark_running(self, query_id: str, pid: int) -> bool:
        async with self.engine.connection(Access.SYSTEM) as conn:
            updated = await conn.fetchval(
                "UPDATE helios.async_queries SET status = 'running', started_at = now(), "
                "backend_pid = $2, backend_start = (SELECT backend_start FROM pg_stat_activity "
                "WHERE pid = $2) WHERE id = $1::uuid AND status = 'queued' RETURNING 1",
                query_id,
                pid,
            )
        return bool(updated)

    async def _finish(self, query_id: str, status: str, result: Any, error: Any) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            await conn.execute(
                "UPDATE helios.async_queries SET status = $2, finished_at = now(), "
                "expires_at = now() + make_interval(secs => $3), result = $4::json, "
                "error = $5::json WHERE id = $1::uuid AND status = 'running'",
                query_id,
                status,
                self.settings.result_ttl_seconds,
                result,
                error,
            )

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(_PRUNE_EVERY_SECONDS)
            try:
                async with self.engine.connection(Access.SYSTEM) as conn:
                    await conn.execute("DELETE FROM helios.async_queries WHERE expires_at < now()")
            except (HeliosError, asyncpg.PostgresError, OSError) as exc:
                log.warning("pruning async queries failed: %s", exc)


def _error_json(error: HeliosError) -> dict[str, Any]:
    """The error as stored (the pool's json codec encodes it)."""
    return {"code": error.code.value, "message": error.message, **error.details}


def _ms(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    elapsed: float = (end - start).total_seconds()
    return round(elapsed * 1000, 3)


def _describe(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "query_id": row["id"],
        "status": row["status"],
        "submitted_at": row["submitted_at"].isoformat(),
        "started_at": row["started_at"].isoformat() if row["started_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "timings": {
            "queued_ms": _ms(row["submitted_at"], row["started_at"] or row["finished_at"]),
            "running_ms": _ms(row["started_at"], row["finished_at"]),
        },
    }
    if row["result"] is not None:
        out["result"] = row["result"]
    if row["error"] is not None:
        out["error"] = row["error"]
    return out
