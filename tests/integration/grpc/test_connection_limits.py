"""How many connections the gRPC listener holds, and for how long.

At most ``grpc.max_connections`` are open at once: past it, the first call of a new
connection fails with ``RESOURCE_EXHAUSTED`` and a message saying why (a GOAWAY before
any call would leave grpcio reconnecting until the deadline), and the connection closes;
the open ones go on, and once one closes a new one is accepted again. A connection with
no call in progress for ``grpc.idle_timeout`` gets GOAWAY and closes; a client's next
call reconnects. Before, there was neither limit. Nodes here allow 2 connections, and
1 second idle.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import query, trailers, values
from tests.nodeproc import NodeProcess

LIMIT = 2
# grpcio channels to one target share their connections unless each has its own pool.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def limited(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data: Path = tmp_path_factory.mktemp("grpc-limited") / "data"
    yield from node.running_beside(data, {"HELIOSDB_GRPC__MAX_CONNECTIONS": str(LIMIT)})


@pytest.fixture(scope="module")
def hasty(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data: Path = tmp_path_factory.mktemp("grpc-hasty") / "data"
    yield from node.running_beside(data, {"HELIOSDB_GRPC__IDLE_TIMEOUT": "1"})


async def test_call_on_a_connection_past_the_limit_fails_with_resource_exhausted(
    limited: NodeProcess, rw_key: str
) -> None:
    target = f"127.0.0.1:{limited.ports['grpc']}"
    held = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(LIMIT)]
    try:
        for channel in held:  # each holds one connection
            stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
            assert values((await query(stub, rw_key, "SELECT 1")).rows[0]) == [1]

        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await query(heliosdb_pb2_grpc.HeliosDBStub(channel), rw_key, "SELECT 1")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == (
            f"the node holds its maximum of {LIMIT} open gRPC connections; retry later"
        )
        assert trailers(refused.value)["heliosdb-error-code"] == "RESOURCE_EXHAUSTED"

        # The open connections go on; one closing makes room for a new one.
        for channel in held:
            stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
            assert values((await query(stub, rw_key, "SELECT 2")).rows[0]) == [2]
        await held.pop().close(None)
        for _ in range(200):
            async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
                stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
                try:
                    assert values((await query(stub, rw_key, "SELECT 3")).rows[0]) == [3]
                    break
                except grpc.aio.AioRpcError as exc:  # the node sees the close a moment later
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no connection accepted after one closed")
    finally:
        for channel in held:
            await channel.close(None)

    refusals = limited.metric(r'heliosdb_refused_connections_total\{interface="grpc"\}')
    assert refusals is not None and refusals >= 1
    assert limited.metric(r'heliosdb_open_connections\{interface="grpc"\}') is not None


def test_connection_that_never_calls_gets_goaway_and_closes(hasty: NodeProcess) -> None:
    reader = h2.FrameReader()
    kinds: list[int] = []
    with socket.create_connection(("127.0.0.1", hasty.ports["grpc"]), timeout=30) as sock:
        sock.sendall(h2.PREFACE + h2.settings_frame({}))
        while chunk := sock.recv(65_536):
            kinds += [kind for kind, _, _, _ in reader.feed(chunk)]
    assert kinds[-1] == h2.GOAWAY


async def test_idle_channel_is_closed_and_its_next_call_reconnects(
    hasty: NodeProcess, rw_key: str
) -> None:
    target = f"127.0.0.1:{hasty.ports['grpc']}"
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        assert values((await query(stub, rw_key, "SELECT 1")).rows[0]) == [1]
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        await asyncio.wait_for(
            channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=30
        )
        assert channel.get_state() != grpc.ChannelConnectivity.READY
        assert values((await query(stub, rw_key, "SELECT 2")).rows[0]) == [2]
