"""Hostile requests: huge results, a NUL in the SQL text, bodies that never end.

A statement may return at most ``query.max_result_rows`` rows.

POST /query, gRPC ExecuteQuery and WebSocket ``query`` build their answer whole, so
the node counts rows as they arrive and stops the statement at the first row past the
cap (a cancel on the engine; a pipelined connection is dropped): a larger result fails
with RESOURCE_EXHAUSTED instead of being read into the node's memory (before the cap, a
``generate_series`` of some millions of rows took gigabytes). The node here has a cap of
50 rows, so every path (the pool's, the pipelined connection's, a transaction's) is
tried with results just over it.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer
from tests.integration.websocket.wsclient import connect, request
from tests.nodeproc import NodeProcess

CAP = 50
PENDING = 3_000_000  # body bytes of unfinished requests the node holds, all together
SERIES = "SELECT g FROM generate_series(1, $1::int) g"


@pytest.fixture(scope="module")
def capped(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with small caps, on the session's engine (one engine per test session)."""
    data: Path = tmp_path_factory.mktemp("capped") / "data"
    process = node.beside(
        data,
        {
            "HELIOSDB_QUERY__MAX_RESULT_ROWS": str(CAP),
            "HELIOSDB_HTTP__MAX_PENDING_BODY_BYTES": str(PENDING),
        },
    )
    yield process
    process.stop()


@pytest.fixture
async def client(capped: NodeProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {capped.admin_key}"}
    async with httpx.AsyncClient(base_url=capped.api, headers=headers, timeout=60) as c:
        yield c


def _too_many(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED"
    assert error["limit"] == CAP
    assert f"more than {CAP} rows" in error["message"]


async def _rows(client: httpx.AsyncClient, sql: str, params: list[Any]) -> list[list[Any]]:
    response = await client.post("/query", json={"sql": sql, "params": params})
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


async def test_a_result_at_the_cap_is_answered_and_one_over_it_fails(
    client: httpx.AsyncClient,
) -> None:
    assert len(await _rows(client, SERIES + " -- pool", [CAP])) == CAP
    _too_many(await client.post("/query", json={"sql": SERIES + " -- pool", "params": [CAP + 1]}))
    # millions of rows: the node cancels the statement at row CAP + 1 and answers at once
    _too_many(await client.post("/query", json={"sql": SERIES + " -- pool", "params": [10**8]}))
    assert await _rows(client, "SELECT 1", []) == [[1]]


async def test_the_pipelined_path_stops_at_the_cap_too(client: httpx.AsyncClient) -> None:
    """A statement learned with a small result runs later on the principal's pipeline,
    where the same parameters may ask for far more rows. The pipeline drops its engine
    connection at the first row past the cap (a cancel could reach a statement queued
    behind it) and opens new ones: the pipeline answers again afterwards."""

    async def pipelined() -> int:
        count: int = (await client.get("/health")).json()["engine"]["pipelines"]["statements"]
        return count

    async def until_pipelined(rows: int) -> None:
        for _ in range(200):
            before = await pipelined()
            assert len(await _rows(client, SERIES, [rows])) == rows
            if await pipelined() > before:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the pipeline never answered")

    await until_pipelined(3)
    _too_many(await client.post("/query", json={"sql": SERIES, "params": [10**8]}))
    await until_pipelined(CAP)
    _too_many(await client.post("/query", json={"sql": SERIES, "params": [CAP + 1]}))
    await until_pipelined(CAP)


async def test_a_write_over_the_cap_is_applied_and_its_rows_not_sent(
    client: httpx.AsyncClient,
) -> None:
    await _rows(client, "CREATE TABLE hostile_returned (n int)", [])
    insert = "INSERT INTO hostile_returned SELECT generate_series(1, $1::int) RETURNING n"
    _too_many(await client.post("/query", json={"sql": insert, "params": [CAP * 2]}))
    assert await _rows(client, "SELECT count(*) FROM hostile_returned", []) == [[CAP * 2]]


async def test_grpc_execute_query_and_its_transactions_stop_at_the_cap(
    capped: NodeProcess,
) -> None:
    assert capped.admin_key is not None
    metadata = bearer(capped.admin_key)
    big = pb.QueryRequest(sql="SELECT generate_series(1, 100000000)")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{capped.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteQuery(big, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"more than {CAP} rows" in (caught.value.details() or "")
        begun = await stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=metadata)
        big.transaction_id.id = begun.transaction_id.id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteQuery(big, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The engine cancelled the statement: the transaction is aborted, as after any
        # failed statement, and says so until it is rolled back.
        assert "transaction is aborted" in (caught.value.details() or "")
        after = pb.QueryRequest(sql="SELECT 1")
        after.transaction_id.id = begun.transaction_id.id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteQuery(after, metadata=metadata)
        assert "aborted" in (caught.value.details() or "")  # SQLSTATE 25P02
        await stub.RollbackTransaction(begun.transaction_id, metadata=metadata)
        small = pb.QueryRequest(sql="SELECT 1")
        assert len((await stub.ExecuteQuery(small, metadata=metadata)).rows) == 1


async def test_websocket_query_stops_at_the_cap(capped: NodeProcess) -> None:
    assert capped.admin_key is not None
    url = f"ws://127.0.0.1:{capped.ports['websocket']}/ws"
    async with connect(url, capped.admin_key) as ws:
        answer = await request(ws, "query", {"sql": "SELECT generate_series(1, 100000000)"})
        assert answer["success"] is False
        assert answer["error"]["code"] == "RESOURCE_EXHAUSTED"
        answer = await request(ws, "query", {"sql": "SELECT 1 AS n"})
        assert answer["data"]["rows"] == [[1]]


@pytest.mark.parametrize(
    ("path", "extra"),
    [("/query", {}), ("/query", {"script": True}), ("/query/stream", {}), ("/query/async", {})],
)
async def test_a_nul_in_the_sql_is_the_clients_error(
    client: httpx.AsyncClient, path: str, extra: dict[str, Any]
) -> None:
    """The engine refuses a protocol string with a NUL as a malformed message (08P01, a
    connection-class state that read as 503 UNAVAILABLE; stored, a 500)."""
    response = await client.post(path, json={"sql": "SELECT 1\u0000", **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert "NUL" in response.json()["error"]["message"]
    assert await _rows(client, "SELECT 1", []) == [[1]]


async def test_a_nul_in_a_key_name_is_the_clients_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/keys", json={"name": "a\u0000b"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_complete_bodies_give_their_bytes_back(client: httpx.AsyncClient) -> None:
    padded = {"sql": "SELECT 1", "pad": "x" * 1_000_000}
    for _ in range(4):  # 4 MB in all, one after the other: never more than 1 MB held
        assert (await client.post("/query", json=padded)).status_code == 200


def test_bodies_that_never_end_are_refused_past_the_budget(capped: NodeProcess) -> None:
    """Slow senders, without credentials: each body within http.max_body_bytes, never
    finished. Before, the node held every one (40 connections: 300 MB of RSS)."""
    head = (
        b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 2000000\r\n\r\n"
    )
    senders = []
    try:
        for _ in range(3):  # 3.6 MB together
            sock = socket.create_connection(("127.0.0.1", capped.ports["http"]), timeout=30)
            sock.sendall(head + b'{"sql": "' + b" " * 1_200_000)
            senders.append(sock)
        readable, _, _ = select.select(senders, [], [], 30)
        assert readable, "no request was refused"
        answer = readable[0].recv(65_536)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b'"code":"RESOURCE_EXHAUSTED"' in answer
        assert b"connection: close" in answer
    finally:
        for sock in senders:
            sock.close()
    headers = {"Authorization": f"Bearer {capped.admin_key}"}
    answered = httpx.post(f"{capped.api}/query", json={"sql": "SELECT 1"}, headers=headers)
    assert answered.json()["rows"] == [[1]]
