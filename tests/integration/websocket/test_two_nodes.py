"""Two nodes over one engine: each sees every event, with the same positions; a node
that lags behind catches up from the event table, or past the retention window says
so; a subscriber resumes with from_position on either node."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx

from tests.integration.websocket.wsclient import (
    connect,
    events,
    next_message,
    prune,
    request,
    subscribe,
)
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


@contextmanager
def _paused(node: NodeProcess) -> Iterator[None]:
    """The node's process and its capture process stopped (SIGSTOP), as in a long stall
    of its machine: its hub reads nothing meanwhile, its leader (if it leads) writes
    nothing, and their sockets keep what arrives."""
    assert node.process is not None
    pids = [node.process.pid, *node.capture_pids()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def _lead_from(engine_url: str) -> None:
    """End whichever capture leader session holds the lock; with the second node paused,
    only the first can take over (within about a second, from the stored progress)."""
    engine = await asyncpg.connect(engine_url)
    try:
        await engine.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'heliosdb-capture' AND pid IN "
            "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
        )
    finally:
        await engine.close()


async def test_a_lagging_node_catches_up_within_the_window_and_resyncs_past_it(
    node: NodeProcess, second_node: NodeProcess, ws_url: str, rw_key: str, table_name: str
) -> None:
    second_url = f"ws://127.0.0.1:{second_node.ports['websocket']}/ws"
    _sql(node, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as first_ws, connect(second_url, rw_key) as second_ws:
        await subscribe(first_ws, table_name)
        lagging = await subscribe(second_ws, table_name)
        _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (0)")
        await events(first_ws, 1, timeout=60)
        await events(second_ws, 1, timeout=60)

        # Within the window: the stalled node reads what it missed from the event table
        # and its live subscriber gets every event, in order, nothing twice.
        with _paused(second_node):
            await _lead_from(node.engine_url)
            for i in range(1, 6):
                _sql(node, rw_key, f"INSERT INTO {table_name} VALUES ({i})")
            on_first = await events(first_ws, 5, timeout=60)
        on_second = await events(second_ws, 5, timeout=60)
        assert [m["data"]["row"]["id"] for m in on_second] == [1, 2, 3, 4, 5]
        assert [m["data"] for m in on_second] == [m["data"] for m in on_first]

        # Past it: the events it missed are swept before it reads them. Its subscriber
        # is told to resync (never a silent gap), and can subscribe again. (One batch
        # too big to travel in the NOTIFY itself: events.encode_notice.)
        with _paused(second_node):
            await _lead_from(node.engine_url)
            _sql(node, rw_key, f"INSERT INTO {table_name} SELECT generate_series(6, 105)")
            try:
                await events(first_ws, 100, timeout=30)
            except BaseException:
                print("FIRST", "".join(node.output[-40:]))
                print("SECOND", "".join(second_node.output[-40:]))
                raise
            pruned = prune(node, 0)
        _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (106)")
        (newest,) = await events(first_ws, 1, timeout=60)
        message = await next_message(second_ws, timeout=60)
        assert message["type"] == "error" and message["subscription_id"] == lagging, message
        error = message["error"]
        assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "resync_required"
        assert "resync" in error["message"]
        assert pruned < error["oldest_position"] <= newest["data"]["position"]
        # Resubscribing from the oldest event kept loses nothing from there on.
        await subscribe(second_ws, table_name, from_position=error["oldest_position"] - 1)
        _sql(second_node, rw_key, f"INSERT INTO {table_name} VALUES (107)")
        got = await events(second_ws, 2, timeout=60)
    assert [m["data"]["row"]["id"] for m in got] == [106, 107]
    assert got[0]["data"] == newest["data"]


async def test_resume_on_the_other_node_gets_every_missed_event_in_order(
    node: NodeProcess, second_node: NodeProcess, ws_url: str, rw_key: str, table_name: str
) -> None:
    second_url = f"ws://127.0.0.1:{second_node.ports['websocket']}/ws"
    _sql(node, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY, origin text)")
    _sql(node, rw_key, f"CREATE TABLE {table_name}_other (id int)")
    async with connect(ws_url, rw_key) as ws:
        await subscribe(ws, table_name)
        _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (0, 'first')")
        (seen,) = await events(ws, 1, timeout=60)
    # Missed while disconnected: written through both nodes, other tables interleaved.
    for i in range(1, 41):
        origin, by = ("first", node) if i % 2 else ("second", second_node)
        _sql(by, rw_key, f"INSERT INTO {table_name} VALUES ({i}, '{origin}')")
        _sql(by, rw_key, f"INSERT INTO {table_name}_other VALUES ({i})")
    async with connect(second_url, rw_key) as ws:
        await subscribe(ws, table_name, from_position=seen["data"]["position"])
        _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (41, 'first')")  # live
        got = await events(ws, 41, timeout=60)
    assert [m["data"]["row"]["id"] for m in got] == list(range(1, 42))
    positions = [m["data"]["position"] for m in got]
    assert positions == sorted(set(positions)) and positions[0] > seen["data"]["position"]

    # The same resume after the sweep: the other node refuses it with the resync error.
    pruned = prune(node, 0)
    async with connect(second_url, rw_key) as ws:
        answer = await request(
            ws, "subscribe", {"table": table_name, "from_position": seen["data"]["position"]}
        )
        assert answer["success"] is False, answer
        assert answer["error"]["reason"] == "resync_required"
        assert answer["error"]["oldest_position"] == pruned + 1


async def _walsenders(engine_url: str) -> int:
    """The capture's replication (walsender) sessions: one while a node leads by stream."""
    engine = await asyncpg.connect(engine_url)
    try:
        count: int = await engine.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
            "AND application_name = 'heliosdb-capture'"
        )
    finally:
        await engine.close()
    return count


async def test_the_lead_passes_between_a_polling_and_a_streaming_leader_without_loss(
    node: NodeProcess, second_node: NodeProcess, ws_url: str, rw_key: str, table_name: str
) -> None:
    """The second node polls the slot when it leads (changes.stream false, see
    tests/conftest.py); the first streams it. Both give the same events, in order, and
    each takes over where the other stopped, even from a stalled streaming leader whose
    replication session still holds the slot."""
    second_url = f"ws://127.0.0.1:{second_node.ports['websocket']}/ws"
    _sql(node, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, rw_key) as first_ws, connect(second_url, rw_key) as second_ws:
        await subscribe(first_ws, table_name)
        await subscribe(second_ws, table_name)
        with _paused(second_node):
            await _lead_from(node.engine_url)  # only the first (streaming) can take it
            _sql(node, rw_key, f"INSERT INTO {table_name} VALUES (1)")
            await events(first_ws, 1, timeout=60)
            assert await _walsenders(node.engine_url) == 1
        with _paused(node):  # its replication session stays, holding the slot
            await _lead_from(node.engine_url)  # only the second (polling) can take it
            for i in range(2, 5):
                _sql(second_node, rw_key, f"INSERT INTO {table_name} VALUES ({i})")
            on_second = await events(second_ws, 4, timeout=60)
            assert await _walsenders(node.engine_url) == 0
        with _paused(second_node):
            await _lead_from(node.engine_url)
            for i in range(5, 8):
                _sql(node, rw_key, f"INSERT INTO {table_name} VALUES ({i})")
            on_first = await events(first_ws, 6, timeout=60)
        on_second += await events(second_ws, 3, timeout=60)
    assert [m["data"]["row"]["id"] for m in on_second] == list(range(1, 8))
    assert [m["data"] for m in on_second[1:]] == [m["data"] for m in on_first]
    positions = [m["data"]["position"] for m in on_second]
    assert positions == list(range(positions[0], positions[0] + 7))
