"""POST /query on a pipelined engine connection answers exactly as the pool path does.

A plain SELECT runs through the pool first (QueryService learns its types); later runs
of the same text go through the principal's pipeline (engine/pipeline.py) once it is
open. ``/health``'s ``engine.pipelines.statements`` counts the pipelined answers, so each
test can tell which path answered. The pool path's answer to compare with comes from the
same statement in a spelling the pipeline has not learned (a trailing comment).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.nodeproc import NodeProcess


async def _pipelined(admin_api: httpx.AsyncClient) -> int:
    response = await admin_api.get("/health")
    count: int = response.json()["engine"]["pipelines"]["statements"]
    return count


def _comparable(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    body.get("metrics", {}).pop("execution_time_ms", None)
    return response.status_code, body


async def _through_pipeline(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient, body: dict[str, Any]
) -> httpx.Response:
    """``body``'s answer once a pipeline answers it (its connections open in the
    background after the first request)."""
    for _ in range(200):
        before = await _pipelined(admin_api)
        response = await api.post("/query", json=body)
        if await _pipelined(admin_api) > before:
            return response
        await asyncio.sleep(0.02)
    raise AssertionError("the pipeline never answered")


async def _pool(api: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """The pool path's answer: the same statement under a text never learned."""
    unlearned = {**body, "sql": body["sql"] + f" -- {asyncio.get_running_loop().time()}"}
    return await api.post("/query", json=unlearned)


async def _same_both_ways(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient, body: dict[str, Any]
) -> httpx.Response:
    pipelined = await _through_pipeline(api, admin_api, body)
    assert _comparable(pipelined) == _comparable(await _pool(api, body))
    return pipelined


async def test_every_pipelined_type_decodes_as_the_pool_does(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient, table_name: str
) -> None:
    create = (
        f"CREATE TABLE {table_name} (id int PRIMARY KEY, b bool, s smallint, i int, "
        "l bigint, t text, v varchar(20), r real, d double precision, ts timestamptz)"
    )
    assert (await api.post("/query", json={"sql": create})).status_code == 200
    rows = [
        "(1, true, 32767, -2147483648, 9223372036854775807, 'héllo ☃', 'v', 1.5, 0.1, "
        "'2026-11-27 08:00:00.123456+00')",
        "(2, false, -32768, 2147483647, -9223372036854775808, '', '', 'NaN', 'Infinity', "
        "'infinity')",
        "(3, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', '-Infinity', '-infinity')",
        "(4, true, 0, 0, 0, 'x', 'y', 3.4e38, 1e-300, '1999-12-31 23:59:59.999999+00')",
        "(5, NULL, 1, 1, 1, 'a\"b\\\\c', 'z', -0.0, 'NaN', '0001-01-01 00:00:00+00')",
    ]
    insert = f"INSERT INTO {table_name} VALUES {', '.join(rows)}"
    assert (await api.post("/query", json={"sql": insert})).status_code == 200
    for row_format in ("array", "object"):
        body = {
            "sql": f"SELECT * FROM {table_name} WHERE id <= $1 ORDER BY id",
            "params": [10],
            "row_format": row_format,
        }
        response = await _same_both_ways(api, admin_api, body)
        assert len(response.json()["rows"]) == 5
    # every parameter type the pipeline encodes, NULL included
    body = {
        "sql": (
            "SELECT $1::bool AS b, $2::smallint AS s, $3::int AS i, $4::bigint AS l, "
            "$5::text AS t, $6::varchar AS v, $7::float8 AS d, $8::int AS n"
        ),
        "params": [True, -5, 7, 2**62, "ünï", "x", 2.5, None],
    }
    response = await _same_both_ways(api, admin_api, body)
    assert response.json()["rows"] == [[True, -5, 7, 2**62, "ünï", "x", 2.5, None]]


async def test_errors_and_refused_values_match_the_pool_path(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient
) -> None:
    sql = "SELECT 10 / $1::int AS q, $2::text AS t"
    await _through_pipeline(api, admin_api, {"sql": sql, "params": [2, "a"]})
    cases: list[list[Any]] = [
        [0, "a"],  # division by zero, from the engine
        ["abc", "a"],  # not an integer (codecs.to_param)
        [2**40, "a"],  # out of int4 range: the pool path's codec says so
        [2, "fine"],
        [2, None],  # NULL
        [2],  # too few parameters
        [2, {"no": "object"}],  # not a string
    ]
    for params in cases:
        body = {"sql": sql, "params": params}
        pipelined = await api.post("/query", json=body)
        assert _comparable(pipelined) == _comparable(await _pool(api, body)), params
    assert (await api.post("/query", json={"sql": sql, "params": [0, "a"]})).status_code == 400


async def test_a_changed_table_is_learned_again(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int, a text)"})
    await api.post("/query", json={"sql": f"INSERT INTO {table_name} VALUES (1, 'x')"})
    body = {"sql": f"SELECT * FROM {table_name} WHERE id = $1", "params": [1]}
    await _through_pipeline(api, admin_api, body)
    await api.post("/query", json={"sql": f"ALTER TABLE {table_name} ADD COLUMN c bigint"})
    for _ in range(3):
        response = await api.post("/query", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [[1, "x", None]]
        assert [c["name"] for c in response.json()["columns"]] == ["id", "a", "c"]
    await api.post("/query", json={"sql": f"ALTER TABLE {table_name} DROP COLUMN a"})
    response = await api.post("/query", json=body)
    assert response.json()["rows"] == [[1, None]]
    # and the pipeline takes it again once the pool path has seen the new shape
    response = await _same_both_ways(api, admin_api, body)
    assert response.json()["rows"] == [[1, None]]


async def test_pipelines_run_as_the_principals_role_and_keep_sessions_apart(
    node: NodeProcess,
    api: httpx.AsyncClient,
    ro_api: httpx.AsyncClient,
    admin_api: httpx.AsyncClient,
    make_key: Callable[..., str],
) -> None:
    body = {"sql": "SELECT current_user::text AS u, $1::int AS n", "params": [1]}
    assert (await _same_both_ways(api, admin_api, body)).json()["rows"] == [["helios_readwrite", 1]]
    assert (await _same_both_ways(ro_api, admin_api, body)).json()["rows"] == [
        ["helios_readonly", 1]
    ]
    # A function that changes a setting behind another name: its session is the
    # principal's own, and another principal never sees the change.
    function = (
        "CREATE OR REPLACE FUNCTION pipeline_leak(v text) RETURNS int LANGUAGE sql AS "
        "$$ SELECT 1 FROM (SELECT set_config('application_name', v, false)) s $$"
    )
    assert (await api.post("/query", json={"sql": function})).status_code == 200
    leak = {"sql": "SELECT pipeline_leak($1) AS x", "params": ["leaked"]}
    await _through_pipeline(api, admin_api, leak)
    show = {"sql": "SELECT current_setting('application_name')::text AS a, $1::int", "params": [0]}
    other = httpx.AsyncClient(
        base_url=node.api, headers={"Authorization": f"Bearer {make_key('secret')}"}, timeout=30
    )
    async with other:
        for _ in range(12):
            response = await other.post("/query", json=show)
            assert response.json()["rows"][0][0] != "leaked"
        await _through_pipeline(other, admin_api, show)
        for _ in range(12):
            response = await other.post("/query", json=show)
            assert response.json()["rows"][0][0] != "leaked"


async def test_concurrent_requests_each_get_their_own_answer(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient
) -> None:
    body = {"sql": "SELECT $1::bigint * 2 AS twice", "params": [1]}
    await _through_pipeline(api, admin_api, body)
    before = await _pipelined(admin_api)
    responses = await asyncio.gather(
        *(api.post("/query", json={**body, "params": [n]}) for n in range(200))
    )
    assert [r.json()["rows"] for r in responses] == [[[2 * n]] for n in range(200)]
    assert await _pipelined(admin_api) > before
    # an error among them stays its own
    mixed = [{**body, "params": [n if n % 7 else "x"]} for n in range(50)]
    responses = await asyncio.gather(*(api.post("/query", json=b) for b in mixed))
    for n, response in enumerate(responses):
        if n % 7:
            assert response.json()["rows"] == [[2 * n]]
        else:
            assert response.status_code == 400


async def test_a_lost_pipeline_is_replaced(
    api: httpx.AsyncClient, admin_api: httpx.AsyncClient
) -> None:
    body = {"sql": "SELECT $1::int + 1 AS n", "params": [1]}
    await _through_pipeline(api, admin_api, body)
    kill = (
        "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity "
        "WHERE application_name = 'heliosdb-pipeline' AND usename = current_user"
    )
    response = await api.post("/query", json={"sql": kill})
    assert response.json()["rows"][0][0] >= 1
    answered = 0
    for _ in range(100):
        response = await api.post("/query", json=body)
        if response.status_code == 200:
            assert response.json()["rows"] == [[2]]
            answered += 1
            if answered == 5:
                break
        await asyncio.sleep(0.02)
    assert answered == 5
    assert (await _through_pipeline(api, admin_api, body)).json()["rows"] == [[2]]
