"""gRPC ExecuteQuery bounds the bytes of a result, in and out of transactions.

``query.max_result_bytes`` (4 MiB on the node here): a few wide rows past it fail with
RESOURCE_EXHAUSTED naming the limit, the node stops the statement without holding its
rows, and inside a transaction the cancelled statement aborts the transaction, as any
failed statement does, until it is rolled back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.engine_activity import until_engine_lets_go
from tests.integration.grpc.conftest import bearer, query
from tests.integration.wide_results import (
    MAX_BYTES,
    MEMORY_BOUND,
    capped_node,
    peak_memory,
    wide,
)
from tests.nodeproc import NodeProcess

Stub = heliosdb_pb2_grpc.HeliosDBStub


@pytest.fixture(scope="module")
def capped(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    yield from capped_node(node, tmp_path_factory)


@pytest.fixture
async def capped_stub(capped: NodeProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{capped.ports['grpc']}") as channel:
        yield heliosdb_pb2_grpc.HeliosDBStub(channel)


async def _refused(stub: Stub, key: str, sql: str, transaction_id: str | None = None) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, key, sql, transaction_id=transaction_id)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert f"the result exceeds query.max_result_bytes ({MAX_BYTES} bytes)" in details
    return details


async def test_execute_query_past_the_byte_cap_fails_and_the_node_goes_on(
    capped_stub: Stub, capped: NodeProcess, rw_key: str
) -> None:
    before = peak_memory(capped)
    await _refused(capped_stub, rw_key, wide(100, marker="grpc_wide"))
    assert peak_memory(capped) - before < MEMORY_BOUND
    await until_engine_lets_go(capped, "grpc_wide")
    small = await query(capped_stub, rw_key, wide(3, 1000, "grpc_small"))
    assert [row.values[0].string_value for row in small.rows] == ["x" * 1000] * 3


async def test_in_a_transaction_the_statement_past_the_byte_cap_aborts_it(
    capped_stub: Stub, capped: NodeProcess, rw_key: str
) -> None:
    metadata = bearer(rw_key)
    begun = await capped_stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=metadata)
    tx = begun.transaction_id.id
    under = await query(capped_stub, rw_key, wide(2, 1000, "tx_small"), transaction_id=tx)
    assert len(under.rows) == 2
    details = await _refused(capped_stub, rw_key, wide(100, marker="tx_wide"), tx)
    assert "transaction is aborted" in details
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(capped_stub, rw_key, "SELECT 1", transaction_id=tx)
    assert "aborted" in (caught.value.details() or "")  # SQLSTATE 25P02
    await capped_stub.RollbackTransaction(begun.transaction_id, metadata=metadata)
    await until_engine_lets_go(capped, "tx_wide")
    assert len((await query(capped_stub, rw_key, "SELECT 1")).rows) == 1


async def test_in_a_transaction_a_single_row_larger_than_the_cap_ends_the_transaction(
    capped_stub: Stub, capped: NodeProcess, rw_key: str
) -> None:
    """A row past the cap whose header came in the result's first, unwalked bytes: the
    node closes the engine connection (rest.md, "Result size"), so the transaction is
    rolled back by the engine, and says so."""
    metadata = bearer(rw_key)
    begun = await capped_stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=metadata)
    tx = begun.transaction_id.id
    details = await _refused(capped_stub, rw_key, wide(1, 20_000_000, "tx_huge"), tx)
    assert "engine connection was closed" in details
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(capped_stub, rw_key, "SELECT 1", transaction_id=tx)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # as an expired transaction
    await until_engine_lets_go(capped, "tx_huge")
    assert len((await query(capped_stub, rw_key, "SELECT 1")).rows) == 1
