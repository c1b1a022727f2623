"""Two nodes over one engine: each sees every event, with the same positions."""

from __future__ import annotations

import asyncpg
import httpx

from tests.integration.websocket.wsclient import connect, events, subscribe
from tests.nodeproc import NodeProcess


def _sql(node: NodeProcess, key: str, sql: str) -> None:
    response = httpx.post(
        f"{node.api}/query", json={"sql": sql}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text


async def test_every_node_sees_every_event(
    node: NodeProcess, second_node: NodeProcess, ws_url: str, rw_key: str, table_name: str
) -> None:
    second_url = f"ws://127.0.0.1:{second_node.ports['websocket']}/ws"
    _sql(node, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY, origin text)")
    async with connect(ws_url, rw_key) as first_ws, connect(second_url, rw_key) as second_ws:
        await subscribe(first_ws, table_name)
        await subscribe(second_ws, table_name)
        _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (1, 'first')")
        _sql(second_node, rw_key, f"INSERT INTO {table_name} VALUES (2, 'second')")
        on_first = await events(first_ws, 2)
        on_second = await events(second_ws, 2)
    assert [m["data"] for m in on_first] == [m["data"] for m in on_second]
    assert [m["data"]["row"]["origin"] for m in on_first] == ["first", "second"]


async def test_losing_the_capture_leader_loses_no_event(
    node: NodeProcess, second_node: NodeProcess, ws_url: str, rw_key: str, table_name: str
) -> None:
    second_url = f"ws://127.0.0.1:{second_node.ports['websocket']}/ws"
    engine = await asyncpg.connect(node.engine_url)
    _sql(node, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    try:
        async with connect(ws_url, rw_key) as first_ws, connect(second_url, rw_key) as second_ws:
            await subscribe(first_ws, table_name)
            await subscribe(second_ws, table_name)
            _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (1)")
            # The leader's engine session ends (as when its node dies): its advisory lock
            # goes with it, and a node (either) takes over from the stored progress.
            killed = await engine.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'heliosdb-capture' AND pid IN "
                "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
            )
            assert killed == 1
            for i in range(2, 12):
                _sql(second_node, rw_key, f"INSERT INTO {table_name} VALUES ({i})")
            on_first = await events(first_ws, 11, timeout=60)
            on_second = await events(second_ws, 11, timeout=60)
    finally:
        await engine.close()
    assert [m["data"]["row"]["id"] for m in on_first] == list(range(1, 12))
    assert [m["data"] for m in on_first] == [m["data"] for m in on_second]
