"""Fixtures for the WebSocket API: its URL, an authenticated client, the engine's DSN."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.integration.websocket.wsclient import connect
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="session")
def ws_url(node: NodeProcess) -> str:
    return f"ws://127.0.0.1:{node.ports['websocket']}/ws"


@pytest.fixture(scope="session")
def engine_dsn(node: NodeProcess) -> str:
    """A direct superuser connection to the node's embedded engine (bypassing HeliosDB)."""
    return node.engine_url


@pytest.fixture
async def ws(ws_url: str, rw_key: str) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url, rw_key) as client:
        yield client
