"""A thin test client over the `websockets` library: requests and awaited answers."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.nodeproc import NodeProcess

TIMEOUT = 20.0


def prune(node: NodeProcess, retention_seconds: float) -> int:
    """The retention sweep, run now through the operator's command against the live node;
    returns the position it has pruned through."""
    done = subprocess.run(
        [
            sys.executable, "-m", "heliosdb", "changes", "prune",
            "--data-dir", str(node.data_dir),
            "--retention-seconds", str(retention_seconds),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    match = re.search(r"pruned through position (\d+)", done.stdout)
    assert match, done.stdout
    return int(match.group(1))


@asynccontextmanager
async def connect(
    url: str, key: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(url, subprotocols=["heliosdb.v1"], **options) as ws:  # type: ignore[list-item]
        if key is not None:
            answer = await request(ws, "authenticate", {"token": key})
            assert answer["success"], answer
        yield ws


async def receive(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def request(
    ws: ClientConnection,
    action: str,
    data: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Send one request; return its response (events that arrive first are kept for later)."""
    request_id = request_id or f"{action}-{uuid.uuid4().hex[:8]}"
    await ws.send(json.dumps({"type": "request", "id": request_id, "action": action, "data": data}))
    pending = _pending(ws)
    while True:
        message = await receive(ws)
        if message.get("type") == "response" and message.get("id") == request_id:
            return message
        pending.append(message)


async def subscribe(ws: ClientConnection, table: str, **data: Any) -> str:
    answer = await request(ws, "subscribe", {"table": table, **data})
    assert answer["success"], answer
    subscription_id: str = answer["data"]["subscription_id"]
    return subscription_id


async def next_message(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    pending = _pending(ws)
    if pending:
        return pending.pop(0)
    return await receive(ws, timeout)


async def events(
    ws: ClientConnection, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` event messages (other messages are an error)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        message = await next_message(ws, timeout)
        assert message["type"] == "event", message
        out.append(message)
    return out


async def quiet(ws: ClientConnection, seconds: float = 0.5) -> list[dict[str, Any]]:
    """Whatever arrives within ``seconds`` (used after a marker proves delivery is done)."""
    got = list(_pending(ws))
    _pending(ws).clear()
    try:
        while True:
            got.append(await receive(ws, seconds))
    except TimeoutError:
        return got


_PENDING: dict[int, list[dict[str, Any]]] = {}


def _pending(ws: ClientConnection) -> list[dict[str, Any]]:
    return _PENDING.setdefault(id(ws), [])


async def first_event(api: httpx.AsyncClient, ws_url: str, key: str, table: str) -> dict[str, Any]:
    """Create ``table`` (``id int PRIMARY KEY``), subscribe to it, insert row 1 through
    the REST API and return that row's event (the subscriber then disconnects)."""
    created = await api.post("/query", json={"sql": f"CREATE TABLE {table} (id int PRIMARY KEY)"})
    assert created.status_code == 200, created.text
    async with connect(ws_url, key) as ws:
        await subscribe(ws, table)
        inserted = await api.post("/query", json={"sql": f"INSERT INTO {table} VALUES (1)"})
        assert inserted.status_code == 200, inserted.text
        (event,) = await events(ws, 1)
    return event
