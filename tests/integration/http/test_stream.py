"""POST /query/stream: NDJSON from a server-side cursor; flat memory; disconnect cancels."""

from __future__ import annotations

import json

import httpx
import psutil

from tests.integration.engine_activity import until_engine_lets_go
from tests.nodeproc import NodeProcess


async def test_stream_small_result(api: httpx.AsyncClient) -> None:
    body = {"sql": "SELECT g AS n, 'x' || g AS s, 'NaN'::float8 AS f FROM generate_series(1, $1) g",
            "params": [3]}  # fmt: skip
    async with api.stream("POST", "/query/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert lines[0] == {
        "columns": [
            {"name": "n", "type": "int4"},
            {"name": "s", "type": "text"},
            {"name": "f", "type": "float8"},
        ]
    }
    assert lines[1:4] == [[1, "x1", "NaN"], [2, "x2", "NaN"], [3, "x3", "NaN"]]
    assert lines[4]["metrics"]["rows_returned"] == 3


async def test_stream_errors(api: httpx.AsyncClient) -> None:
    response = await api.post("/query/stream", json={"sql": "SELECT * FROM no_such_table"})
    assert response.status_code in (400, 404) and "error" in response.json()
    response = await api.post("/query/stream", json={"sql": 7})
    assert response.status_code == 400
    # A failure after the first rows: an error line ends the stream.
    sql = "SELECT 1 / (1000 - g) FROM generate_series(1, 5000) g"
    async with api.stream("POST", "/query/stream", json={"sql": sql}) as streamed:
        lines = [json.loads(line) async for line in streamed.aiter_lines() if line]
    assert "columns" in lines[0] and "error" in lines[-1]


async def test_stream_a_million_rows_in_flat_memory(
    api: httpx.AsyncClient, node: NodeProcess
) -> None:
    assert node.process is not None
    server = psutil.Process(node.process.pid)
    before = server.memory_info().rss
    peak = before
    sql = "SELECT g, repeat('r', 50) AS pad FROM generate_series(1, 1000000) g"
    count = 0
    async with api.stream("POST", "/query/stream", json={"sql": sql}, timeout=300) as response:
        async for line in response.aiter_lines():
            if line.startswith("["):
                count += 1
                if count % 100_000 == 0:
                    peak = max(peak, server.memory_info().rss)
            elif line.startswith('{"metrics"'):
                trailer = json.loads(line)
    assert count == 1_000_000 and trailer["metrics"]["rows_returned"] == 1_000_000
    # ~70 MB of rows went through; the node held a few batches at a time.
    assert peak - before < 50 * 1024 * 1024, (before, peak)


async def test_client_disconnect_cancels_the_statement(
    api: httpx.AsyncClient, node: NodeProcess
) -> None:
    marker = "stream_cancel_91c2"
    # A nested loop over two small series yields its first rows at once (a single big
    # generate_series would be materialised first).
    sql = (
        f"SELECT a * 100000 + b, '{marker}' "
        "FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
    )
    async with api.stream("POST", "/query/stream", json={"sql": sql}) as response:
        async for line in response.aiter_lines():
            if line.startswith("["):
                break  # leave with the statement still producing rows
    await until_engine_lets_go(node, marker)
