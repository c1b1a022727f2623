"""POST /query keeps the engine's parallel plans under the result row cap.

The row cap (``query.max_result_rows``) is kept by counting rows as they arrive, not by
the Execute message's row limit: the engine plans no parallel workers for a statement
run with a row limit. A PARALLEL SAFE function that returns the process it runs in shows
whether workers took part: a parallel scan runs it in the leader and in each worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

ROWS = 1_000_000  # enough for the engine's default costs to choose a parallel scan


async def _query(api: httpx.AsyncClient, sql: str, **extra: Any) -> list[list[Any]]:
    response = await api.post("/query", json={"sql": sql, **extra})
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


async def _pipelined(api: httpx.AsyncClient) -> int:
    count: int = (await api.get("/health")).json()["engine"]["pipelines"]["statements"]
    return count


@pytest.fixture
async def parallel_table(api: httpx.AsyncClient, table_name: str) -> str:
    function = f"{table_name}_backend"
    await _query(
        api,
        f"CREATE TABLE {table_name} AS SELECT g AS id FROM generate_series(1, {ROWS}) g;"
        f"ANALYZE {table_name};"
        f"CREATE FUNCTION {function}(n int) RETURNS int LANGUAGE plpgsql PARALLEL SAFE"
        " AS $$BEGIN RETURN pg_backend_pid(); END$$",
        script=True,
    )
    return table_name


async def test_query_a_parallel_scan_runs_in_the_engines_workers(
    api: httpx.AsyncClient, parallel_table: str
) -> None:
    backend = f"{parallel_table}_backend"
    plan = await _query(api, f"EXPLAIN SELECT count(*) FROM {parallel_table}")
    assert any("Parallel Seq Scan" in line for [line] in plan)
    processes = (
        f"SELECT count(*) FROM (SELECT DISTINCT {backend}(id) FROM {parallel_table}"
        " WHERE id % 100 = 0) AS s"
    )
    # The first run takes the pool path; once learned, the statement runs on the key's
    # pipelined connection (docs/architecture.md, "Pipelined statements"): both count
    # rows the same way.
    for _ in range(200):
        before = await _pipelined(api)
        [[count]] = await _query(api, processes)
        assert count > 1  # the leader and at least one worker; 1 without workers
        if await _pipelined(api) > before:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the pipeline never answered")
    [[total]] = await _query(api, f"SELECT count(*) FROM {parallel_table}")
    assert total == ROWS
