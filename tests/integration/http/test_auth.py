"""Credentials on the REST API and what each kind of key may do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.nodeproc import NodeProcess


async def test_auth_missing_credentials_is_401(node: NodeProcess) -> None:
    async with httpx.AsyncClient(base_url=node.api) as client:
        response = await client.post("/query", json={"sql": "SELECT 1"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Bearer hdb_sk_thisisnotakeythisisnotakeythisisnotakey12"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "hdb_pk_" + "x" * 40},
        {"X-API-Key": "hdb_sk_" + "a" * 5000},
        {"X-API-Key": "' OR 1=1 --"},
    ],
)
async def test_auth_wrong_key_is_401(node: NodeProcess, header: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=node.api, headers=header) as client:
        response = await client.post("/query", json={"sql": "SELECT 1"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_auth_x_api_key_header_works(node: NodeProcess, rw_key: str) -> None:
    async with httpx.AsyncClient(base_url=node.api, headers={"X-API-Key": rw_key}) as client:
        response = await client.post("/query", json={"sql": "SELECT 41 + 1 AS answer"})
    assert response.status_code == 200
    assert response.json()["rows"] == [[42]]


async def test_auth_revoked_key_is_refused_at_once(
    node: NodeProcess, admin_api: httpx.AsyncClient
) -> None:
    created = (await admin_api.post("/keys", json={"name": "short-lived"})).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    async with httpx.AsyncClient(base_url=node.api, headers=headers) as client:
        assert (await client.post("/query", json={"sql": "SELECT 1"})).status_code == 200
        revoked = await admin_api.delete(f"/keys/{created['id']}")
        assert revoked.status_code == 200
        response = await client.post("/query", json={"sql": "SELECT 1"})
    assert response.status_code == 401


async def test_auth_test_key_works_in_test_environment(
    make_key: Callable[..., str], node: NodeProcess
) -> None:
    key = make_key("test")
    assert key.startswith("hdb_test_")
    async with httpx.AsyncClient(base_url=node.api, headers={"X-API-Key": key}) as client:
        response = await client.post("/query", json={"sql": "SELECT 1"})
    assert response.status_code == 200, response.text


async def test_keys_endpoints_need_an_admin_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/keys")).status_code == 403
    assert (await api.post("/keys", json={"name": "x"})).status_code == 403
    assert (await api.delete("/keys/00000000-0000-0000-0000-000000000000")).status_code == 403


async def test_keys_list_never_shows_keys_or_hashes(
    admin_api: httpx.AsyncClient, rw_key: str
) -> None:
    response = await admin_api.get("/keys")
    assert response.status_code == 200
    text = response.text
    assert rw_key not in text
    assert rw_key[7:] not in text
    assert "key_hash" not in text
    displays = [k["display"] for k in response.json()["keys"]]
    assert any(d.startswith("hdb_sk_") and "..." in d for d in displays)


async def test_keys_revoke_unknown_id_is_404(admin_api: httpx.AsyncClient) -> None:
    response = await admin_api.delete("/keys/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert (await admin_api.delete("/keys/'; DROP TABLE helios.api_keys; --")).status_code == 404


async def test_keys_create_rejects_bad_input(admin_api: httpx.AsyncClient) -> None:
    for body in ({"name": ""}, {"name": "x", "kind": "root"}, {"name": "x", "tier": "gold"}, {}):
        response = await admin_api.post("/keys", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_admin_key_statements_do_not_run_as_superuser(admin_api: httpx.AsyncClient) -> None:
    response = await admin_api.post(
        "/query",
        json={"sql": "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"},
    )
    assert response.json()["rows"] == [["helios_readwrite", False]]
    hidden = await admin_api.post("/query", json={"sql": "SELECT count(*) FROM helios.api_keys"})
    assert hidden.status_code == 403


async def test_auth_revoke_reaches_every_node_sharing_the_engine(
    second_node: NodeProcess, admin_api: httpx.AsyncClient
) -> None:
    created = (await admin_api.post("/keys", json={"name": "two-nodes"})).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    async with httpx.AsyncClient(base_url=second_node.api, headers=headers) as other:
        assert (await other.post("/query", json={"sql": "SELECT 1"})).status_code == 200
        assert (await admin_api.delete(f"/keys/{created['id']}")).status_code == 200
        deadline = time.monotonic() + 2  # well inside the 5 s cache TTL
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = (await other.post("/query", json={"sql": "SELECT 1"})).status_code
            await asyncio.sleep(0.05)
    assert status == 401
