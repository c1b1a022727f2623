"""POST/GET/DELETE /query/async: lifecycle, errors, cancel on the engine, restart, ownership."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.engine_activity import until_engine_lets_go
from tests.nodeproc import NodeProcess

TERMINAL = ("succeeded", "failed", "cancelled")


async def _wait(api: httpx.AsyncClient, query_id: str, until: tuple[str, ...]) -> dict[str, Any]:
    for _ in range(600):
        response = await api.get(f"/query/async/{query_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in until:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"query {query_id} never reached {until}: {body}")


async def test_async_query_lifecycle(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/query/async", json={"sql": "SELECT g AS n, g * 1.5 AS half FROM generate_series(1, $1) g",
                              "params": [3]}
    )  # fmt: skip
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["status"] == "queued" and submitted["query_id"]
    done = await _wait(api, submitted["query_id"], TERMINAL)
    assert done["status"] == "succeeded", done
    assert done["result"]["rows"] == [[1, "1.5"], [2, "3.0"], [3, "4.5"]]
    assert [c["name"] for c in done["result"]["columns"]] == ["n", "half"]
    assert done["started_at"] and done["finished_at"] and done["timings"]["running_ms"] >= 0


async def test_async_query_failure_is_recorded(api: httpx.AsyncClient) -> None:
    response = await api.post("/query/async", json={"sql": "SELECT 1/0"})
    done = await _wait(api, response.json()["query_id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["error"]["code"] and "division by zero" in done["error"]["message"]


async def test_async_query_bad_requests(api: httpx.AsyncClient) -> None:
    for body in ({}, {"sql": 5}, {"sql": "SELECT 1", "params": {}}, {"sql": "  "}):
        response = await api.post("/query/async", json=body)
        assert response.status_code == 400, body
    assert (await api.get("/query/async/not-a-uuid")).status_code == 404


async def test_only_the_submitting_key_may_read_or_cancel(
    api: httpx.AsyncClient, node: NodeProcess, make_key: Any
) -> None:
    query_id = (await api.post("/query/async", json={"sql": "SELECT 1"})).json()["query_id"]
    await _wait(api, query_id, TERMINAL)
    headers = {"Authorization": f"Bearer {make_key('secret')}"}
    async with httpx.AsyncClient(base_url=node.api, headers=headers) as other:
        assert (await other.get(f"/query/async/{query_id}")).status_code == 404
        assert (await other.delete(f"/query/async/{query_id}")).status_code == 404
    async with httpx.AsyncClient(base_url=node.api) as anonymous:
        assert (await anonymous.get(f"/query/async/{query_id}")).status_code == 401


async def test_cancel_stops_the_statement_on_the_engine(
    api: httpx.AsyncClient, node: NodeProcess
) -> None:
    marker = "cancel_me_7f3a"
    sql = f"SELECT pg_sleep(60), '{marker}'"
    query_id = (await api.post("/query/async", json={"sql": sql})).json()["query_id"]
    await _wait(api, query_id, ("running",))
    response = await api.delete(f"/query/async/{query_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    await until_engine_lets_go(node, marker)
    final = (await api.get(f"/query/async/{query_id}")).json()
    assert final["status"] == "cancelled" and "result" not in final
    again = await api.delete(f"/query/async/{query_id}")
    assert again.json()["status"] == "cancelled"


async def test_finished_results_survive_a_restart_and_any_node_answers(
    api: httpx.AsyncClient, second_node: NodeProcess, rw_key: str
) -> None:
    headers = {"Authorization": f"Bearer {rw_key}"}
    async with httpx.AsyncClient(base_url=second_node.api, headers=headers, timeout=30) as other:
        response = await other.post("/query/async", json={"sql": "SELECT 'kept' AS v"})
        query_id = response.json()["query_id"]
        await _wait(other, query_id, TERMINAL)
    second_node.stop()
    second_node.start()
    async with httpx.AsyncClient(base_url=second_node.api, headers=headers, timeout=30) as other:
        after = (await other.get(f"/query/async/{query_id}")).json()
    assert after["status"] == "succeeded" and after["result"]["rows"] == [["kept"]]
    on_first = (await api.get(f"/query/async/{query_id}")).json()
    assert on_first == after
