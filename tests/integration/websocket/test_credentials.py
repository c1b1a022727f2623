"""Credentials on an open socket: expiry and revocation are announced before the close;
authenticate again refreshes the credential and keeps the subscriptions."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.websocket.wsclient import connect, events, next_message, request, subscribe
from tests.nodeproc import NodeProcess


def _create_key(node: NodeProcess, admin_key: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{node.api}/keys",
        json={"name": f"ws-cred-{uuid.uuid4().hex[:6]}", "kind": "secret", **extra},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _sql(api: httpx.AsyncClient, sql: str) -> None:
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text


async def _until(moment: str) -> None:
    """Sleep until a moment (ISO 8601) has passed."""
    left = (dt.datetime.fromisoformat(moment) - dt.datetime.now(dt.UTC)).total_seconds()
    await asyncio.sleep(max(0.0, left) + 0.2)


async def _closed_code(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await next_message(ws)
    assert closed.value.rcvd is not None
    code: int = closed.value.rcvd.code
    return code


async def test_expired_key_is_told_then_closed(
    node: NodeProcess, admin_key: str, api: httpx.AsyncClient, ws_url: str, table_name: str
) -> None:
    created = _create_key(node, admin_key, expires_in_seconds=2)
    assert created["expires_at"] is not None
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url) as ws:
        answer = await request(ws, "authenticate", {"token": created["key"]})
        assert answer["success"], answer
        assert dt.datetime.fromisoformat(answer["data"]["expires_at"]) == (
            dt.datetime.fromisoformat(created["expires_at"])
        )
        await subscribe(ws, table_name)
        message = await next_message(ws)
        assert message["type"] == "error" and message["subscription_id"] is None, message
        assert message["error"]["code"] == "UNAUTHENTICATED"
        assert message["error"]["reason"] == "credential_expired"
        assert "expired" in message["error"]["message"]
        assert await _closed_code(ws) == 4001
    # Expired everywhere: REST refuses it, and so does a new socket.
    response = httpx.get(
        f"{node.api}/tables", headers={"Authorization": f"Bearer {created['key']}"}
    )
    assert response.status_code == 401, response.text
    async with connect(ws_url) as ws:
        answer = await request(ws, "authenticate", {"token": created["key"]})
        assert answer["success"] is False and answer["error"]["code"] == "UNAUTHENTICATED"


async def test_reauthenticate_before_expiry_keeps_the_socket_and_subscriptions(
    node: NodeProcess,
    admin_key: str,
    rw_key: str,
    api: httpx.AsyncClient,
    ws_url: str,
    table_name: str,
) -> None:
    short = _create_key(node, admin_key, expires_in_seconds=2)
    longer = _create_key(node, admin_key, expires_in_seconds=3600)
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, short["key"]) as ws:
        sub = await subscribe(ws, table_name)
        await _sql(api, f"INSERT INTO {table_name} VALUES (1)")
        (first,) = await events(ws, 1)
        assert first["subscription_id"] == sub
        answer = await request(ws, "authenticate", {"token": longer["key"]})
        assert answer["success"] and answer["data"]["subscriptions"] == [sub]
        assert answer["data"]["expires_at"] is not None
        await _until(short["expires_at"])
        await asyncio.sleep(1.5)  # the server looks at expiries once a second
        await _sql(api, f"INSERT INTO {table_name} VALUES (2)")
        (second,) = await events(ws, 1)  # an error message here would fail the test
        assert second["subscription_id"] == sub and second["data"]["row"] == {"id": 2}
        pong = await request(ws, "ping")
        assert pong["success"]


async def test_revoked_key_is_told_then_closed(
    node: NodeProcess, admin_key: str, api: httpx.AsyncClient, ws_url: str, table_name: str
) -> None:
    created = _create_key(node, admin_key)
    assert created["expires_at"] is None
    await _sql(api, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    async with connect(ws_url, created["key"]) as ws:
        await subscribe(ws, table_name)
        response = httpx.delete(
            f"{node.api}/keys/{created['id']}", headers={"Authorization": f"Bearer {admin_key}"}
        )
        assert response.status_code == 200, response.text
        message = await next_message(ws)
        assert message["type"] == "error", message
        assert message["error"]["code"] == "UNAUTHENTICATED"
        assert message["error"]["reason"] == "credential_revoked"
        assert await _closed_code(ws) == 4001


async def test_key_expiry_is_validated(node: NodeProcess, admin_key: str) -> None:
    for bad in (0, -5, "soon", 10**12):
        response = httpx.post(
            f"{node.api}/keys",
            json={"name": "bad-expiry", "expires_in_seconds": bad},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert response.status_code == 400, (bad, response.text)
