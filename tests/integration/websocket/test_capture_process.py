"""The capture leader in the node's capture process (capture_process.py), and hubs that
LISTEN only while they have subscriptions (services/changes/hub.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import httpx

from tests.integration.websocket.wsclient import connect, events, first_event, quiet, subscribe
from tests.nodeproc import NodeProcess


async def _sql(api: httpx.AsyncClient, sql: str) -> None:
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text


async def _captured_through(engine: asyncpg.Connection, position: int) -> int:
    """Wait until the capture has written events past ``position``; the newest one."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        last = int(await engine.fetchval("SELECT max(last_position) FROM helios.change_capture"))
        if last > position:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError("the capture wrote nothing")


async def _hub_sessions(engine: asyncpg.Connection) -> dict[int, object]:
    """Every hub's engine session and when it last ran a statement."""
    rows = await engine.fetch(
        "SELECT pid, state_change FROM pg_stat_activity WHERE application_name = 'heliosdb-changes'"
    )
    return {row["pid"]: row["state_change"] for row in rows}


async def test_the_node_captures_in_a_process_of_its_own(
    node: NodeProcess, ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    (pid,) = node.capture_pids()
    assert node.process is not None and pid != node.process.pid
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name)
        await _sql(api, f"INSERT INTO {table_name} VALUES (1)")
        await events(ws, 1)
        # Killed (its lock session goes with it): the node starts another, which (or
        # another node's) resumes from the stored progress: nothing lost, nothing twice.
        os.kill(pid, signal.SIGKILL)
        for i in range(2, 6):
            await _sql(api, f"INSERT INTO {table_name} VALUES ({i})")
        got = await events(ws, 4, timeout=60)
        assert [m["data"]["row"]["id"] for m in got] == [2, 3, 4, 5]
        assert await quiet(ws) == []
    deadline = time.monotonic() + 30
    while not node.capture_pids() - {pid} and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(node.capture_pids() - {pid}) == 1


async def test_a_hub_without_subscriptions_is_not_woken_by_captured_writes(
    node: NodeProcess, ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    engine = await asyncpg.connect(node.engine_url)
    try:
        await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
        async with connect(ws_url, rw_key) as ws:
            await subscribe(ws, table_name)
            await _sql(api, f"INSERT INTO {table_name} VALUES (0)")
            (seen,) = await events(ws, 1)
        # A listening hub looks at the log at least once a second; one that does not
        # listen runs no statement at all, however much is captured.
        await asyncio.sleep(1.5)
        before = await _hub_sessions(engine)
        last = int(await engine.fetchval("SELECT max(last_position) FROM helios.change_capture"))
        for i in range(1, 11):
            await _sql(api, f"INSERT INTO {table_name} VALUES ({i})")
        last = await _captured_through(engine, last + 9)
        await asyncio.sleep(1.5)
        assert await _hub_sessions(engine) == before

        # The next live subscription starts at the log's end (none of the events written
        # while nobody listened), a resuming one gets every one of them, in order.
        async with connect(ws_url, rw_key) as ws, connect(ws_url, rw_key) as resumed:
            await subscribe(ws, table_name)
            await subscribe(resumed, table_name, from_position=seen["data"]["position"])
            await _sql(api, f"INSERT INTO {table_name} VALUES (11)")
            (live,) = await events(ws, 1)
            assert live["data"]["row"]["id"] == 11 and live["data"]["position"] > last
            assert await quiet(ws) == []
            got = await events(resumed, 11)
            assert [m["data"]["row"]["id"] for m in got] == list(range(1, 12))
    finally:
        await engine.close()


async def test_health_says_where_capture_runs_how_far_it_got_and_its_lag(
    node: NodeProcess, ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    event = await first_event(api, ws_url, rw_key, table_name)
    body = (await api.get("/health")).json()
    changes = body["changes"]
    assert changes["available"] is True and changes["capture"] == "process"
    assert changes["leader"] is True  # this node's capture process, or another node's
    assert changes["last_position"] >= event["data"]["position"]
    assert isinstance(changes["lag_bytes"], int) and changes["lag_bytes"] >= 0
