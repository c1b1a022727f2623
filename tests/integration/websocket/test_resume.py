"""Positions: reconnecting with from_position loses nothing; past retention, a clear error."""

from __future__ import annotations

import asyncpg
import httpx

from tests.integration.websocket.wsclient import connect, events, request, subscribe


async def _sql(api: httpx.AsyncClient, sql: str) -> None:
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text


async def test_reconnect_with_from_position_loses_nothing(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name)
        await _sql(api, f"INSERT INTO {table_name} VALUES (1)")
        (first,) = await events(ws, 1)
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


async def test_from_position_past_retention_asks_to_resync(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, engine_dsn: str, table_name: str
) -> None:
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    conn = await asyncpg.connect(engine_dsn)
    try:
        # What the retention sweep records after removing old events.
        await conn.execute("UPDATE helios.change_capture SET pruned_through = 1")
        async with connect(ws_url, rw_key) as ws:
            answer = await request(ws, "subscribe", {"table": table_name, "from_position": 0})
            assert answer["success"] is False
            assert answer["error"]["code"] == "INVALID_ARGUMENT"
            assert answer["error"]["reason"] == "resync_required"
            assert "resync" in answer["error"]["message"]
            ahead = await request(ws, "subscribe", {"table": table_name, "from_position": 10**15})
            assert ahead["error"]["code"] == "INVALID_ARGUMENT"
            for bad in (-1, "3", True, 1.5):
                answer = await request(ws, "subscribe", {"table": table_name, "from_position": bad})
                assert answer["error"]["code"] == "INVALID_ARGUMENT", bad
    finally:
        await conn.execute("UPDATE helios.change_capture SET pruned_through = 0")
        await conn.close()
