"""The envelope: responses carry the request id; bad input gets an error and the socket lives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.integration.websocket.rawclient import RawClient
from tests.integration.websocket.wsclient import (
    connect,
    events,
    next_message,
    receive,
    request,
    subscribe,
)


async def test_ping_without_id(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "request", "action": "ping"}))
    answer = await receive(ws)
    assert answer["type"] == "response" and answer["success"] and answer["data"]["pong"]


async def test_malformed_messages_get_errors_and_the_connection_goes_on(
    ws: ClientConnection,
) -> None:
    for bad in ("not json", "[1, 2]", '{"type": "request"}', '{"action": 5}',
                '{"action": "ping", "data": [1]}', '{"type": "event", "action": "ping"}',
                b'\xff\xfe', '{"id": "x1", "action": "nonsense"}'):  # fmt: skip
        await ws.send(bad)
        answer = await receive(ws)
        assert answer["type"] == "response" and answer["success"] is False, bad
        assert answer["error"]["code"] == "INVALID_ARGUMENT", answer
    assert answer["id"] == "x1"
    pong = await request(ws, "ping")
    assert pong["success"] is True


async def test_query_action(ws: ClientConnection) -> None:
    answer = await request(
        ws, "query", {"sql": "SELECT $1::int + 1 AS n, 1.5::numeric AS d", "params": [41]}
    )
    assert answer["success"], answer
    assert answer["data"]["rows"] == [[42, "1.5"]]
    assert answer["data"]["columns"][0] == {"name": "n", "type": "int4"}
    bad = await request(ws, "query", {"sql": "SELECT * FROM no_such_table"})
    assert bad["success"] is False and bad["error"]["code"] in ("NOT_FOUND", "ENGINE_ERROR")


async def test_unsubscribe_and_duplicates(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    assert (
        await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int)"})
    ).status_code == 200
    sub = await subscribe(ws, table_name)
    again = await request(ws, "subscribe", {"table": table_name}, request_id=sub)
    assert again["error"]["code"] == "ALREADY_EXISTS"
    gone = await request(ws, "unsubscribe", {"subscription_id": sub})
    assert gone["success"] is True
    missing = await request(ws, "unsubscribe", {"subscription_id": sub})
    assert missing["error"]["code"] == "NOT_FOUND"
    bad_requests: list[Any] = [
        {"table": ""},
        {"table": 5},
        {"table": table_name, "events": ["SELECT"]},
        {"table": table_name, "events": []},
        {"table": table_name, "filter": 3},
    ]
    for bad in bad_requests:
        answer = await request(ws, "subscribe", bad)
        assert answer["error"]["code"] == "INVALID_ARGUMENT", bad


async def test_subscription_limit(
    ws: ClientConnection, api: httpx.AsyncClient, table_name: str
) -> None:
    assert (
        await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int)"})
    ).status_code == 200
    answers = []
    for i in range(101):
        answers.append(await request(ws, "subscribe", {"table": table_name}, request_id=f"s{i}"))
    assert all(a["success"] for a in answers[:100])
    assert answers[100]["error"]["code"] == "RESOURCE_EXHAUSTED"


async def test_wrong_path_is_refused(ws_url: str) -> None:
    try:
        async with websockets.connect(ws_url.replace("/ws", "/other")):
            raise AssertionError("connected on a wrong path")
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 404


async def test_oversized_message_closes_with_1009(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"action": "ping", "data": {"x": "y" * (2 * 1024 * 1024)}}))
    try:
        await next_message(ws)
        raise AssertionError("the connection stayed open")
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 1009


async def test_slow_consumer_subscription_ends_with_an_error(
    ws_url: str, rw_key: str, api: httpx.AsyncClient, table_name: str
) -> None:
    create = f"CREATE TABLE {table_name} (id int, pad text)"
    assert (await api.post("/query", json={"sql": create})).status_code == 200
    # A client that stops reading: its small socket buffer and the server's fill, then the
    # server's bounded queue (10,000 messages by default) overflows. A second client that
    # subscribes to the last row only tells us when the hub has dispatched them all.
    slow = await asyncio.to_thread(RawClient, ws_url)
    try:
        slow.send(
            {"type": "request", "id": "a", "action": "authenticate", "data": {"token": rw_key}}
        )
        assert (await asyncio.to_thread(slow.receive))["success"] is True
        slow.send(
            {"type": "request", "id": "s", "action": "subscribe", "data": {"table": table_name}}
        )
        assert (await asyncio.to_thread(slow.receive))["success"] is True
        async with connect(ws_url, rw_key) as fast:
            await subscribe(fast, table_name, filter="id = 15000")
            fill = (
                f"INSERT INTO {table_name} "
                "SELECT g, repeat('p', 2000) FROM generate_series(1, 15000) g"
            )
            assert (await api.post("/query", json={"sql": fill})).status_code == 200
            (last,) = await events(fast, 1, timeout=60)
            assert last["data"]["row"]["id"] == 15000
        seen, message = await asyncio.to_thread(slow.skip_events)
    finally:
        slow.close()
    assert message["type"] == "error", message
    assert message["subscription_id"] == "s"
    assert message["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert message["error"]["reason"] == "slow_consumer"
    assert message["error"]["from_position"] >= 1
    assert seen < 15000
