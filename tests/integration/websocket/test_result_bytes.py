"""WebSocket ``query`` bounds the bytes of a result.

``query.max_result_bytes`` (4 MiB on the node here): a few wide rows past it get a
RESOURCE_EXHAUSTED response naming the limit, the node stops the statement without
holding its rows, and the connection goes on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.engine_activity import until_engine_lets_go
from tests.integration.websocket.wsclient import connect, request
from tests.integration.wide_results import (
    MAX_BYTES,
    MEMORY_BOUND,
    capped_node,
    peak_memory,
    wide,
)
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def capped(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    yield from capped_node(node, tmp_path_factory)


async def test_query_past_the_byte_cap_fails_and_the_connection_goes_on(
    capped: NodeProcess, rw_key: str
) -> None:
    url = f"ws://127.0.0.1:{capped.ports['websocket']}/ws"
    async with connect(url, rw_key) as ws:
        before = peak_memory(capped)
        answer = await request(ws, "query", {"sql": wide(100, marker="ws_wide")})
        assert peak_memory(capped) - before < MEMORY_BOUND
        assert answer["success"] is False
        assert answer["error"]["code"] == "RESOURCE_EXHAUSTED"
        assert f"query.max_result_bytes ({MAX_BYTES} bytes)" in answer["error"]["message"]
        await until_engine_lets_go(capped, "ws_wide")
        answer = await request(ws, "query", {"sql": wide(3, 1000, "ws_small")})
        assert answer["data"]["rows"] == [["x" * 1000]] * 3
