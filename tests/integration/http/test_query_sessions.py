"""POST /query runs each request in a clean engine session, whoever sent the last one.

The rw pool has several connections; each check repeats enough requests to meet them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from tests.nodeproc import NodeProcess

ROUNDS = 12


async def _show(api: httpx.AsyncClient, setting: str) -> set[str]:
    seen = set()
    for _ in range(ROUNDS):
        response = await api.post("/query", json={"sql": f"SHOW {setting}"})
        assert response.status_code == 200, response.text
        seen.add(response.json()["rows"][0][0])
    return seen


async def test_query_set_does_not_outlive_its_request(api: httpx.AsyncClient) -> None:
    before = await _show(api, "statement_timeout")
    for _ in range(ROUNDS):
        response = await api.post("/query", json={"sql": "SET statement_timeout = '1234ms'"})
        assert response.status_code == 200
    assert await _show(api, "statement_timeout") == before


async def test_query_set_config_does_not_outlive_its_request(api: httpx.AsyncClient) -> None:
    before = await _show(api, "search_path")
    for _ in range(ROUNDS):
        response = await api.post(
            "/query", json={"sql": "SELECT set_config('search_path', 'nowhere', false)"}
        )
        assert response.status_code == 200
    assert await _show(api, "search_path") == before


async def test_query_open_transaction_is_rolled_back(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int)"})
    response = await api.post(
        "/query",
        json={"script": True, "sql": f"BEGIN; INSERT INTO {table_name} VALUES (1)"},
    )
    assert response.status_code == 200
    count = await api.post("/query", json={"sql": f"SELECT count(*) FROM {table_name}"})
    assert count.json()["rows"] == [[0]]


async def test_query_temp_table_is_not_seen_by_another_key(
    node: NodeProcess,
    api: httpx.AsyncClient,
    make_key: Callable[..., str],
) -> None:
    for _ in range(ROUNDS):
        created = await api.post(
            "/query", json={"sql": "CREATE TEMP TABLE IF NOT EXISTS secret_tmp AS SELECT 42 AS v"}
        )
        assert created.status_code == 200, created.text
    async with httpx.AsyncClient(
        base_url=node.api, headers={"Authorization": f"Bearer {make_key('secret')}"}, timeout=30
    ) as other:
        for _ in range(ROUNDS):
            response = await other.post("/query", json={"sql": "SELECT v FROM pg_temp.secret_tmp"})
            assert response.status_code == 404, response.text
            assert response.json()["error"]["sqlstate"] == "42P01"


async def test_query_is_counted_in_metrics(node: NodeProcess, api: httpx.AsyncClient) -> None:
    assert (await api.post("/query", json={"sql": "SELECT 1"})).status_code == 200
    assert (await api.post("/query", json={"sql": "SELECT nope"})).status_code == 400
    metrics = httpx.get(f"{node.api}/metrics").text
    assert 'heliosdb_requests_total{interface="http",route="/query",status="200"}' in metrics
    assert 'heliosdb_requests_total{interface="http",route="/query",status="400"}' in metrics


async def test_query_x_api_key_beside_another_authorization_scheme(
    node: NodeProcess, rw_key: str
) -> None:
    response = httpx.post(
        f"{node.api}/query",
        json={"sql": "SELECT 1"},
        headers={"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": rw_key},
    )
    assert response.status_code == 200, response.text


async def test_query_wrong_method_keeps_the_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/query")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_query_body_in_many_chunks(api: httpx.AsyncClient) -> None:
    body = b'{"sql": "SELECT $1::text", "params": ["' + b"y" * 100_000 + b'"]}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7_000):
            yield body[start : start + 7_000]

    response = await api.post("/query", content=chunks())
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [["y" * 100_000]]
