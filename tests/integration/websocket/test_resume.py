"""Positions: reconnecting with from_position loses nothing; past retention, a clear error."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.websocket.rawclient import RawClient
from tests.integration.websocket.wsclient import (
    connect,
    events,
    first_event,
    prune,
    request,
    subscribe,
)
from tests.nodeproc import NodeProcess


async def _sql(api: httpx.AsyncClient, sql: str) -> None:
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text


async def test_reconnect_with_from_position_loses_nothing(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    first = await first_event(api, ws_url, rw_key, table_name)
    seen = first["data"]["position"]
    # Missed while disconnected: another table's rows interleave with ours.
    await _sql(api, f"CREATE TABLE {table_name}_other (id int)")
    for i in range(2, 6):
        await _sql(api, f"INSERT INTO {table_name} VALUES ({i})")
        await _sql(api, f"INSERT INTO {table_name}_other VALUES ({i})")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name, from_position=seen)
        await _sql(api, f"INSERT INTO {table_name} VALUES (6)")  # live, after the catch-up
        got = await events(ws, 5)
    assert [m["data"]["row"]["id"] for m in got] == [2, 3, 4, 5, 6]
    positions = [m["data"]["position"] for m in got]
    assert positions == sorted(positions) and positions[0] > seen


async def test_many_missed_events_catch_up_in_order(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name)
        await _sql(api, f"INSERT INTO {table_name} VALUES (0)")
        (first,) = await events(ws, 1)
    await _sql(api, f"INSERT INTO {table_name} SELECT generate_series(1, 4500)")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name, from_position=first["data"]["position"])
        got = await events(ws, 4500)
    assert [m["data"]["row"]["id"] for m in got] == list(range(1, 4501))


async def test_retention_window_resync_outside_and_catch_up_inside(
    node: NodeProcess, ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    first = await first_event(api, ws_url, rw_key, table_name)
    seen = first["data"]["position"]
    for i in (2, 3):
        await _sql(api, f"INSERT INTO {table_name} VALUES ({i})")
    # A window of an hour keeps them: every missed event arrives, in order.
    assert prune(node, 3600) < seen
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name, from_position=seen)
        got = await events(ws, 2)
    assert [m["data"]["row"]["id"] for m in got] == [2, 3]
    # A window of 0 s: the sweep removes everything committed so far.
    pruned = prune(node, 0)
    assert pruned >= got[-1]["data"]["position"]
    for i in (4, 5):
        await _sql(api, f"INSERT INTO {table_name} VALUES ({i})")
    async with connect(ws_url, rw_key) as ws:
        answer = await request(ws, "subscribe", {"table": table_name, "from_position": seen})
        assert answer["success"] is False, answer
        error = answer["error"]
        assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "resync_required"
        assert "resync" in error["message"] and error["oldest_position"] == pruned + 1
        # A client that had read everything up to the sweep misses nothing after it.
        await subscribe(ws, table_name, from_position=error["oldest_position"] - 1)
        after = await events(ws, 2)
    assert [m["data"]["row"]["id"] for m in after] == [4, 5]
    assert after[0]["data"]["position"] > pruned


async def test_from_position_must_be_a_known_position(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as ws:
        ahead = await request(ws, "subscribe", {"table": table_name, "from_position": 10**15})
        assert ahead["error"]["code"] == "INVALID_ARGUMENT"
        for bad in (-1, "3", True, 1.5):
            answer = await request(ws, "subscribe", {"table": table_name, "from_position": bad})
            assert answer["error"]["code"] == "INVALID_ARGUMENT", bad


async def test_sweep_overtaking_a_catch_up_ends_it_asking_to_resync(
    node: NodeProcess, ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY, pad text)")
    missed = 12000
    async with connect(ws_url, rw_key) as ws:
        everything = await subscribe(ws, table_name)
        await _sql(api, f"INSERT INTO {table_name} VALUES (0, '')")
        (first,) = await events(ws, 1)
        answer = await request(ws, "unsubscribe", {"subscription_id": everything})
        assert answer["success"], answer
        await subscribe(ws, table_name, filter=f"id = {missed}")
        await _sql(
            api,
            f"INSERT INTO {table_name} SELECT g, repeat('p', 2000) "
            f"FROM generate_series(1, {missed}) g",
        )
        # Captured (in the event table) once the last row's event has been delivered.
        (last,) = await events(ws, 1, timeout=120)
        assert last["data"]["row"]["id"] == missed
    # A client that resumes, then stops reading: its catch-up (read from the event table
    # at the client's pace) stalls with most of the missed events still unread.
    slow = await asyncio.to_thread(RawClient, ws_url)
    try:
        slow.send(
            {"type": "request", "id": "a", "action": "authenticate", "data": {"token": rw_key}}
        )
        assert (await asyncio.to_thread(slow.receive))["success"] is True
        resume = {"table": table_name, "from_position": first["data"]["position"]}
        slow.send({"type": "request", "id": "s", "action": "subscribe", "data": resume})
        assert (await asyncio.to_thread(slow.receive))["success"] is True
        prune(node, 0)  # meanwhile the sweep removes them
        seen, message = await asyncio.to_thread(slow.skip_events)
    finally:
        slow.close()
    assert message["type"] == "error" and message["subscription_id"] == "s", message
    assert message["error"]["code"] == "INVALID_ARGUMENT", message
    assert message["error"]["reason"] == "resync_required"
    assert seen < missed
