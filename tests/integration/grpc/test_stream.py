"""ExecuteQueryStream: rows from a server-side cursor, columns up front, cancellation."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import orjson
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer, query, trailers, values

Stub = heliosdb_pb2_grpc.HeliosDBStub


async def test_stream_returns_every_row_in_order(stub: Stub, rw_key: str) -> None:
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(
            sql="SELECT g AS n, 'row ' || g AS label FROM generate_series(1, $1) g ORDER BY g",
            params=[pb.Value(int_value=5_000)],
        ),
        metadata=bearer(rw_key),
    )
    initial = dict(await call.initial_metadata())
    assert orjson.loads(initial["heliosdb-columns"]) == [
        {"name": "n", "type": "int4"},
        {"name": "label", "type": "text"},
    ]
    seen = 0
    async for row in call:
        seen += 1
        assert values(row) == [seen, f"row {seen}"]
    assert seen == 5_000
    assert await call.code() == grpc.StatusCode.OK


async def test_stream_empty_result(stub: Stub, rw_key: str) -> None:
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(sql="SELECT 1 WHERE false"), metadata=bearer(rw_key)
    )
    assert [row async for row in call] == []


async def test_stream_in_transaction_sees_its_writes(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    begun = await stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=bearer(rw_key))
    tx = begun.transaction_id.id
    await query(
        stub, rw_key, f"INSERT INTO {table_name} SELECT generate_series(1, 10)", transaction_id=tx
    )
    request = pb.QueryRequest(sql=f"SELECT id FROM {table_name} ORDER BY id")
    request.transaction_id.id = tx
    rows = [values(r)[0] async for r in stub.ExecuteQueryStream(request, metadata=bearer(rw_key))]
    assert rows == list(range(1, 11))
    await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))


async def test_stream_bad_sql_invalid_argument(stub: Stub, rw_key: str) -> None:
    call = stub.ExecuteQueryStream(pb.QueryRequest(sql="SELEC 1"), metadata=bearer(rw_key))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(caught.value)["heliosdb-error-code"] == ("INVALID_ARGUMENT")


async def test_stream_error_mid_way_reported(stub: Stub, rw_key: str) -> None:
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(sql="SELECT 10 / (5000 - g) FROM generate_series(1, 10000) g"),
        metadata=bearer(rw_key),
    )
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            received += 1
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # 22012 division_by_zero
    assert received < 10000


async def test_stream_without_credentials_unauthenticated(stub: Stub) -> None:
    call = stub.ExecuteQueryStream(pb.QueryRequest(sql="SELECT 1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_stream_cancel_cancels_the_statement(stub: Stub, rw_key: str) -> None:
    # Rows past 2,000 take a second each: when the client gives up at row 1,500 the
    # server is waiting on the engine for the next batch, which only a cancel ends.
    marker = f"cancel_me_{uuid.uuid4().hex}"
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(
            sql=f"SELECT g, CASE WHEN g > 2000 THEN pg_sleep(1) END, '{marker}' "
            "FROM (SELECT generate_series(1, 100000000) AS g) s"
        ),
        metadata=bearer(rw_key),
    )
    received = 0
    async for _ in call:
        received += 1
        if received == 1500:
            break
    call.cancel()
    watch = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND state IN ('active', 'idle in transaction') AND query LIKE $1"
    )
    for _ in range(300):  # until the engine has let go of it; no assumption on how fast
        response = await query(stub, rw_key, watch, [pb.Value(string_value=f"%{marker}%")])
        if values(response.rows[0]) == [0]:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the cancelled stream's statement still runs on the engine")
