"""BeginTransaction / queries with transaction_id / Commit / Rollback, idle expiry, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer, query, values

Stub = heliosdb_pb2_grpc.HeliosDBStub


async def begin(stub: Stub, key: str, **options: object) -> str:
    response = await stub.BeginTransaction(
        pb.BeginTransactionRequest(**options),  # type: ignore[arg-type]
        metadata=bearer(key),
    )
    return str(response.transaction_id.id)


async def count(stub: Stub, key: str, table: str, tx: str | None = None) -> int:
    response = await query(stub, key, f"SELECT count(*) FROM {table}", transaction_id=tx)
    return int(values(response.rows[0])[0])


async def test_transaction_commit_makes_writes_visible(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    tx = await begin(stub, rw_key)
    await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1), (2)", transaction_id=tx)
    assert await count(stub, rw_key, table_name, tx) == 2
    assert await count(stub, rw_key, table_name) == 0
    committed = await stub.CommitTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))
    assert committed.committed and committed.transaction_id.id == tx
    assert await count(stub, rw_key, table_name) == 2


async def test_transaction_rollback_discards_writes(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    tx = await begin(stub, rw_key)
    await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)", transaction_id=tx)
    rolled = await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))
    assert rolled.rolled_back
    assert await count(stub, rw_key, table_name) == 0


async def test_transaction_ended_or_unknown_id_not_found(stub: Stub, rw_key: str) -> None:
    tx = await begin(stub, rw_key)
    await stub.CommitTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))
    for call in (
        lambda: stub.CommitTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key)),
        lambda: stub.RollbackTransaction(pb.TransactionId(id="tx_nope"), metadata=bearer(rw_key)),
        lambda: query(stub, rw_key, "SELECT 1", transaction_id=tx),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_transaction_of_another_principal_not_found(
    stub: Stub, rw_key: str, make_key: Callable[..., str]
) -> None:
    other = make_key("secret")
    tx = await begin(stub, rw_key)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query(stub, other, "SELECT 1", transaction_id=tx)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CommitTransaction(pb.TransactionId(id=tx), metadata=bearer(other))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))


async def test_transaction_read_only_refuses_writes(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    response = await stub.BeginTransaction(
        pb.BeginTransactionRequest(read_only=True), metadata=bearer(rw_key)
    )
    assert response.read_only
    tx = response.transaction_id.id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)", transaction_id=tx)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))


async def test_transaction_repeatable_read_keeps_its_snapshot(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    response = await stub.BeginTransaction(
        pb.BeginTransactionRequest(isolation_level=pb.REPEATABLE_READ), metadata=bearer(rw_key)
    )
    assert response.isolation_level == pb.REPEATABLE_READ
    tx = response.transaction_id.id
    assert await count(stub, rw_key, table_name, tx) == 0
    await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)")
    assert await count(stub, rw_key, table_name, tx) == 0
    await stub.CommitTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))
    assert await count(stub, rw_key, table_name) == 1


async def test_transaction_error_then_queries_conflict_until_rollback(
    stub: Stub, rw_key: str
) -> None:
    tx = await begin(stub, rw_key)
    with pytest.raises(grpc.aio.AioRpcError):
        await query(stub, rw_key, "SELECT 1/0", transaction_id=tx)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELECT 1", transaction_id=tx)
    assert caught.value.code() == grpc.StatusCode.ABORTED  # 25P02: transaction is aborted
    await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(rw_key))


async def test_transaction_idle_timeout_rolls_back(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    response = await stub.BeginTransaction(
        pb.BeginTransactionRequest(idle_timeout_seconds=1), metadata=bearer(rw_key)
    )
    assert response.idle_timeout_seconds == 1
    tx = response.transaction_id.id
    await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)", transaction_id=tx)
    for _ in range(200):  # wait for the reaper, without asserting how fast it is
        try:
            await query(stub, rw_key, "SELECT 1", transaction_id=tx)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            break
        await asyncio.sleep(2)
    else:
        pytest.fail("the idle transaction was never rolled back")
    assert await count(stub, rw_key, table_name) == 0


async def test_transaction_per_principal_limit(stub: Stub, make_key: Callable[..., str]) -> None:
    key = make_key("secret")
    opened = [await begin(stub, key) for _ in range(4)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await begin(stub, key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await stub.RollbackTransaction(pb.TransactionId(id=opened[0]), metadata=bearer(key))
    opened[0] = await begin(stub, key)
    for tx in opened:
        await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(key))


async def test_transaction_read_only_key_gets_read_only_transaction(
    stub: Stub, rw_key: str, ro_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    tx = await begin(stub, ro_key)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, ro_key, f"INSERT INTO {table_name} VALUES (1)", transaction_id=tx)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await stub.RollbackTransaction(pb.TransactionId(id=tx), metadata=bearer(ro_key))


async def test_begin_transaction_without_credentials_unauthenticated(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BeginTransaction(pb.BeginTransactionRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_begin_transaction_bad_isolation_invalid_argument(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BeginTransaction(
            pb.BeginTransactionRequest(isolation_level=42),  # type: ignore[arg-type]
            metadata=bearer(rw_key),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
