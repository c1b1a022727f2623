"""POST /query and async queries bound the bytes of a result, not only its rows.

``query.max_result_bytes`` caps the bytes of rows one statement may return (as the
engine sends them). A few wide rows pass it long before the row cap: the node counts the
bytes as they arrive and stops the statement at the first row that would pass the cap
(the engine cancels it; a pipelined connection is dropped), so it never holds the
result: ``503 RESOURCE_EXHAUSTED`` naming the limit, and the node goes on. The node here
caps results at 4 MiB; its wide rows are 1 MB each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.engine_activity import until_engine_lets_go
from tests.integration.http.test_async_queries import TERMINAL, _wait
from tests.integration.wide_results import (
    MAX_BYTES,
    MEMORY_BOUND,
    ROW_BYTES,
    capped_node,
    peak_memory,
    wide,
)
from tests.nodeproc import NodeProcess

NAMED = f"query.max_result_bytes ({MAX_BYTES} bytes)"
PARAMETERIZED = "SELECT repeat('x', $1::int) FROM generate_series(1, $2::int) -- {}"


@pytest.fixture(scope="module")
def capped(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    yield from capped_node(node, tmp_path_factory)


@pytest.fixture
async def client(capped: NodeProcess, rw_key: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {rw_key}"}
    async with httpx.AsyncClient(base_url=capped.api, headers=headers, timeout=60) as c:
        yield c


def _too_big(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED"
    assert error["limit"] == MAX_BYTES
    assert f"the result exceeds {NAMED}" in error["message"]
    message: str = error["message"]
    return message


async def _rows(client: httpx.AsyncClient, sql: str, params: list[Any]) -> list[list[Any]]:
    response = await client.post("/query", json={"sql": sql, "params": params})
    assert response.status_code == 200, response.text[:500]
    rows: list[list[Any]] = response.json()["rows"]
    return rows


async def test_a_few_wide_rows_past_the_byte_cap_fail_and_the_node_holds_none_of_them(
    client: httpx.AsyncClient, capped: NodeProcess
) -> None:
    """100 rows of 1 MB: far under the row cap, 24 times the byte cap. Before, the node
    held all of them (and their JSON): its peak memory grew by hundreds of MB."""
    before = peak_memory(capped)
    _too_big(await client.post("/query", json={"sql": wide(100, marker="wide_pool")}))
    assert peak_memory(capped) - before < MEMORY_BOUND
    await until_engine_lets_go(capped, "wide_pool")
    assert await _rows(client, "SELECT 1", []) == [[1]]


async def test_a_result_of_exactly_the_cap_is_answered_and_one_byte_more_fails(
    client: httpx.AsyncClient,
) -> None:
    width = MAX_BYTES // 4 - ROW_BYTES  # 4 rows: MAX_BYTES exactly
    rows = await _rows(client, wide(4, width, "exact"), [])
    assert len(rows) == 4 and all(row == ["x" * width] for row in rows)
    _too_big(await client.post("/query", json={"sql": wide(4, width + 1, "exact")}))
    assert await _rows(client, wide(3, 1000, "small"), []) == [["x" * 1000]] * 3


async def test_the_pipelined_path_stops_at_the_byte_cap_too(
    client: httpx.AsyncClient, capped: NodeProcess
) -> None:
    """A statement learned with a small result runs later on the key's pipelined
    connection, where other parameters may make it huge: the pipeline drops its engine
    connection at the header of the first row past the cap, and opens new ones."""
    sql = PARAMETERIZED.format("wide_pipelined")

    async def pipelined() -> int:
        count: int = (await client.get("/health")).json()["engine"]["pipelines"]["statements"]
        return count

    async def until_pipelined() -> None:
        for _ in range(200):
            before = await pipelined()
            assert await _rows(client, sql, [10, 2]) == [["x" * 10]] * 2
            if await pipelined() > before:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the pipeline never answered")

    await until_pipelined()
    before = peak_memory(capped)
    _too_big(await client.post("/query", json={"sql": sql, "params": [1_000_000, 100]}))
    _too_big(await client.post("/query", json={"sql": sql, "params": [20_000_000, 1]}))
    assert peak_memory(capped) - before < MEMORY_BOUND
    await until_engine_lets_go(capped, "wide_pipelined")
    await until_pipelined()


async def test_a_single_row_larger_than_the_cap_fails_and_the_node_goes_on(
    client: httpx.AsyncClient, capped: NodeProcess
) -> None:
    """A row whose header comes in the result's first bytes, which pass unwalked (so
    small results cost no walk), cannot be cut there: the node closes that engine
    connection instead of cancelling, and the statement ends all the same."""
    before = peak_memory(capped)
    message = _too_big(await client.post("/query", json={"sql": wide(1, 20_000_000, "huge")}))
    assert "engine connection was closed" in message
    assert peak_memory(capped) - before < MEMORY_BOUND
    await until_engine_lets_go(capped, "huge")
    for _ in range(4):  # every pooled connection answers
        assert await _rows(client, "SELECT 1", []) == [[1]]


async def test_an_async_query_past_the_byte_cap_fails(client: httpx.AsyncClient) -> None:
    response = await client.post("/query/async", json={"sql": wide(100, marker="wide_async")})
    done = await _wait(client, response.json()["query_id"], TERMINAL)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert f"the result exceeds {NAMED}" in done["error"]["message"]
    response = await client.post("/query/async", json={"sql": wide(3, 1000, "small_async")})
    done = await _wait(client, response.json()["query_id"], TERMINAL)
    assert done["result"]["rows"] == [["x" * 1000]] * 3
