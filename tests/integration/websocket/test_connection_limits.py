"""How many connections the WebSocket listener holds.

At most ``websocket.max_connections`` are open at once, handshakes included: past it a
new connection is answered ``503`` with the spec's error body before any upgrade, and
closed; the open ones go on, and once one closes a new one is accepted again. Before,
there was no limit. The node here allows 3.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.integration.websocket.wsclient import connect, request
from tests.nodeproc import NodeProcess

LIMIT = 3


@pytest.fixture(scope="module")
def limited(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data: Path = tmp_path_factory.mktemp("ws-limited") / "data"
    yield from node.running_beside(data, {"HELIOSDB_WEBSOCKET__MAX_CONNECTIONS": str(LIMIT)})


async def test_connection_past_the_limit_gets_503_before_the_upgrade(
    limited: NodeProcess, rw_key: str
) -> None:
    url = f"ws://127.0.0.1:{limited.ports['websocket']}/ws"
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connect(url, rw_key)) for _ in range(LIMIT)]

        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, subprotocols=["heliosdb.v1"])  # type: ignore[list-item]
        response = refused.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert json.loads(response.body) == {
            "error": {
                "code": "RESOURCE_EXHAUSTED",
                "message": f"the node holds its maximum of {LIMIT} open WebSocket connections; "
                "retry later",
                "limit": LIMIT,
                "retry_after": 1,
            }
        }

        # The open connections go on; one closing makes room for a new one.
        for ws in held:
            assert (await request(ws, "ping"))["success"]
        await held.pop().close()
        for _ in range(200):
            try:
                async with connect(url, rw_key) as ws:
                    assert (await request(ws, "ping"))["success"]
                break
            except InvalidStatus:  # the node sees the close a moment after the client
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("no connection accepted after one closed")

    refusals = limited.metric(r'heliosdb_refused_connections_total\{interface="websocket"\}')
    assert refusals is not None and refusals >= 1
    assert limited.metric(r'heliosdb_open_connections\{interface="websocket"\}') is not None
