"""gRPC in a node's worker processes (``--workers 2``): the node and its worker share the
port; a transaction lives in the process that began it, and a call naming it is routed
there from whichever process it reaches (front.py); the per-principal limit on open
transactions holds across the processes (counted in the engine, services/transactions.py).
The node runs on the session node's engine, so keys made there work here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer, query, values
from tests.nodeproc import NodeProcess

Stub = heliosdb_pb2_grpc.HeliosDBStub
ATTEMPTS = 60  # fresh connections until two land on different processes (~1e-18 to fail)


@pytest.fixture(scope="module")
def workers_node(
    node: NodeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("grpc-workers") / "data"
    process = node.beside(data_dir, args=("--workers", "2"))
    yield process
    process.stop()


def _channel(node: NodeProcess) -> grpc.aio.Channel:
    # A channel of its own (not sharing a subchannel with the others): one connection.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{node.ports['grpc']}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def _process_of(stub: Stub, key: str) -> str:
    """Which process serves this channel's connection: the prefix of its transaction ids."""
    begun = await stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=bearer(key))
    await stub.RollbackTransaction(begun.transaction_id, metadata=bearer(key))
    return str(begun.transaction_id.id).split(".", 1)[0]


@pytest.fixture(scope="module")
async def two_processes(workers_node: NodeProcess) -> AsyncIterator[tuple[Stub, Stub]]:
    """Two stubs whose connections are served by different processes of the node."""
    key = workers_node.admin_key
    assert key is not None
    channels = []
    first: tuple[Stub, str] | None = None
    try:
        for _ in range(ATTEMPTS):
            channel = _channel(workers_node)
            channels.append(channel)
            stub = Stub(channel)
            process = await _process_of(stub, key)
            if first is None:
                first = (stub, process)
            elif process != first[1]:
                yield first[0], stub
                return
        pytest.fail("every connection landed on one process")
    finally:
        for channel in channels:
            await channel.close(None)


@pytest.fixture(scope="module")
async def table(workers_node: NodeProcess, two_processes: tuple[Stub, Stub]) -> str:
    name = f"grpc_workers_{uuid.uuid4().hex[:8]}"
    key = workers_node.admin_key
    assert key is not None
    await query(two_processes[0], key, f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    return name


async def test_transaction_begun_on_one_process_used_from_another(
    workers_node: NodeProcess, two_processes: tuple[Stub, Stub], table: str
) -> None:
    key = workers_node.admin_key
    assert key is not None
    here, there = two_processes
    begun = await here.BeginTransaction(pb.BeginTransactionRequest(), metadata=bearer(key))
    tid = begun.transaction_id.id
    insert = f"INSERT INTO {table} VALUES (1, 'from the other process')"
    await query(there, key, insert, transaction_id=tid)
    seen = await query(there, key, f"SELECT note FROM {table} WHERE id = 1", transaction_id=tid)
    assert [values(r) for r in seen.rows] == [["from the other process"]]
    outside = await query(here, key, f"SELECT count(*) FROM {table}")
    assert values(outside.rows[0]) == [0]  # not committed yet
    rows = [
        values(row)
        async for row in there.ExecuteQueryStream(
            pb.QueryRequest(
                sql=f"SELECT id, note FROM {table}", transaction_id=pb.TransactionId(id=tid)
            ),
            metadata=bearer(key),
        )
    ]
    assert rows == [[1, "from the other process"]]
    committed = await there.CommitTransaction(pb.TransactionId(id=tid), metadata=bearer(key))
    assert committed.committed
    after = await query(here, key, f"SELECT count(*) FROM {table}")
    assert values(after.rows[0]) == [1]


async def test_rollback_from_another_process(
    workers_node: NodeProcess, two_processes: tuple[Stub, Stub], table: str
) -> None:
    key = workers_node.admin_key
    assert key is not None
    here, there = two_processes
    begun = await there.BeginTransaction(pb.BeginTransactionRequest(), metadata=bearer(key))
    tid = begun.transaction_id.id
    await query(here, key, f"INSERT INTO {table} VALUES (2, 'rolled back')", transaction_id=tid)
    rolled = await here.RollbackTransaction(pb.TransactionId(id=tid), metadata=bearer(key))
    assert rolled.rolled_back
    after = await query(there, key, f"SELECT count(*) FROM {table} WHERE id = 2")
    assert values(after.rows[0]) == [0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(here, key, "SELECT 1", transaction_id=tid)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("tid", ["0.nope", "1.nope", "9.nope", "nope", ".", "1."])
async def test_unknown_transaction_ids_not_found(
    workers_node: NodeProcess, two_processes: tuple[Stub, Stub], tid: str
) -> None:
    key = workers_node.admin_key
    assert key is not None
    for stub in two_processes:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query(stub, key, "SELECT 1", transaction_id=tid)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CommitTransaction(pb.TransactionId(id=tid), metadata=bearer(key))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _begin(stub: Stub, key: str) -> str:
    begun = await stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=bearer(key))
    return str(begun.transaction_id.id)


async def _refused(stub: Stub, key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _begin(stub, key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_transaction_limit_holds_across_processes(
    two_processes: tuple[Stub, Stub], make_key: Callable[..., str]
) -> None:
    """The limit (grpc.max_transactions_per_principal, 4) counts what the principal holds
    on both processes: two each, and neither process takes a fifth; a slot ended on one
    process (rollback, commit) is free again on the other."""
    key = make_key("secret")
    here, there = two_processes
    opened = [await _begin(stub, key) for stub in (here, there, here, there)]
    assert {tid.split(".")[0] for tid in opened} == {"0", "1"}
    await _refused(here, key)
    await _refused(there, key)
    await here.RollbackTransaction(pb.TransactionId(id=opened[1]), metadata=bearer(key))
    opened[1] = await _begin(here, key)  # the slot another process's transaction held
    await _refused(there, key)
    await there.CommitTransaction(pb.TransactionId(id=opened[0]), metadata=bearer(key))
    opened[0] = await _begin(there, key)
    await _refused(here, key)
    other = make_key("secret")  # another principal is not affected
    await there.RollbackTransaction(
        pb.TransactionId(id=await _begin(there, other)), metadata=bearer(other)
    )
    for tid in opened:
        await here.RollbackTransaction(pb.TransactionId(id=tid), metadata=bearer(key))
    await here.RollbackTransaction(
        pb.TransactionId(id=await _begin(here, key)), metadata=bearer(key)
    )
