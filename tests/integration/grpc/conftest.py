"""Fixtures for the gRPC API: grpc.aio stubs on the session's node, per key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

import grpc
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.nodeproc import NodeProcess


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str | bytes]:
    """An error's trailing metadata by key (grpc-stubs types its items as objects; they
    are (key, value) pairs)."""
    pairs = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    return dict(pairs)


def values(row: pb.Row) -> list[Any]:
    """A row as plain Python values (the kind each Value carries)."""
    out: list[Any] = []
    for value in row.values:
        kind = value.WhichOneof("kind")
        out.append(None if kind in (None, "null_value") else getattr(value, kind))
    return out


async def query(
    stub: heliosdb_pb2_grpc.HeliosDBStub,
    key: str,
    sql: str,
    params: Sequence[pb.Value] = (),
    transaction_id: str | None = None,
) -> pb.QueryResponse:
    request = pb.QueryRequest(sql=sql, params=list(params))
    if transaction_id is not None:
        request.transaction_id.id = transaction_id
    response: pb.QueryResponse = await stub.ExecuteQuery(request, metadata=bearer(key))
    return response


@pytest.fixture(scope="session")
def grpc_target(node: NodeProcess) -> str:
    return f"127.0.0.1:{node.ports['grpc']}"


@pytest.fixture
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_target) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> heliosdb_pb2_grpc.HeliosDBStub:
    return heliosdb_pb2_grpc.HeliosDBStub(channel)
