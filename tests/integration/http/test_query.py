"""POST /query: statements, parameters, JSON forms and errors."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.nodeproc import NodeProcess


async def test_query_spec_example_returns_rows(api: httpx.AsyncClient, table_name: str) -> None:
    create = f"CREATE TABLE {table_name} (id serial PRIMARY KEY, name text, status text)"
    assert (await api.post("/query", json={"sql": create})).status_code == 200
    inserted = await api.post(
        "/query",
        json={
            "sql": f"INSERT INTO {table_name} (name, status) VALUES ($1, $2), ($3, $4)",
            "params": ["ann", "active", "bob", "inactive"],
        },
    )
    assert inserted.status_code == 200, inserted.text
    assert inserted.json()["affected_rows"] == 2
    response = await api.post(
        "/query",
        json={
            "sql": f"SELECT * FROM {table_name} WHERE status = $1 LIMIT 10",
            "params": ["active"],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["name"] for c in body["columns"]] == ["id", "name", "status"]
    assert [c["type"] for c in body["columns"]] == ["int4", "text", "text"]
    assert body["rows"] == [[1, "ann", "active"]]
    assert body["affected_rows"] == 0
    assert body["metrics"]["rows_returned"] == 1
    assert body["metrics"]["execution_time_ms"] >= 0


async def test_query_row_format_object(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/query", json={"sql": "SELECT 1 AS a, 'x' AS b", "row_format": "object"}
    )
    assert response.json()["rows"] == [{"a": 1, "b": "x"}]


async def test_query_json_forms_of_common_types(api: httpx.AsyncClient) -> None:
    sql = """SELECT 9007199254740993::bigint AS big, 12345678901234567890.123456789::numeric AS num,
        1.5::float8 AS f, 'NaN'::float8 AS nan, '-Infinity'::float4 AS ninf, true AS b,
        '2026-01-04 12:00:00+00'::timestamptz AS ts, '2026-01-04 12:00:00'::timestamp AS tsn,
        '2026-01-04'::date AS d, '12:30:00'::time AS t,
        '1 year 2 mons 3 days 04:05:06'::interval AS i,
        '\\x00ff10'::bytea AS bin, '{"a": [1, 2, {"b": null}]}'::jsonb AS jb, '[1, "x"]'::json AS j,
        ARRAY[1, 2, NULL]::int[] AS arr, ARRAY['a', 'b']::text[] AS tarr,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '192.168.0.1/24'::inet AS ip,
        '[1.5, 2, 3]'::vector AS vec, NULL::text AS nothing"""
    response = await api.post("/query", json={"sql": sql, "row_format": "object"})
    assert response.status_code == 200, response.text
    row = response.json()["rows"][0]
    assert row["big"] == 9007199254740993
    assert row["num"] == "12345678901234567890.123456789"
    assert row["f"] == 1.5 and row["nan"] == "NaN" and row["ninf"] == "-Infinity"
    assert row["b"] is True
    assert row["ts"] == "2026-01-04T12:00:00+00:00"
    assert row["tsn"] == "2026-01-04T12:00:00"
    assert row["d"] == "2026-01-04" and row["t"] == "12:30:00"
    assert row["i"] == "P1Y2M3DT4H5M6S"
    assert base64.b64decode(row["bin"]) == b"\x00\xff\x10"
    assert row["jb"] == {"a": [1, 2, {"b": None}]} and row["j"] == [1, "x"]
    assert row["arr"] == [1, 2, None] and row["tarr"] == ["a", "b"]
    assert row["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["ip"] == "192.168.0.1/24"
    assert row["vec"] == [1.5, 2.0, 3.0]
    assert row["nothing"] is None
    types = {c["name"]: c["type"] for c in response.json()["columns"]}
    assert types["arr"] == "int4[]" and types["vec"] == "vector" and types["jb"] == "jsonb"


async def test_query_params_take_their_json_forms(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post(
        "/query",
        json={
            "sql": f"CREATE TABLE {table_name} (id bigint PRIMARY KEY, n numeric, ts timestamptz, "
            "bin bytea, doc jsonb, tags text[], u uuid, ok boolean, v vector(2))"
        },
    )
    params = [
        9007199254740993, "1.10", "2026-01-04T12:00:00Z", base64.b64encode(b"\x01\x02").decode(),
        {"nested": [1, "two"]}, ["a", "b"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", True, [0.5, 1],
    ]  # fmt: skip
    inserted = await api.post(
        "/query",
        json={
            "sql": f"INSERT INTO {table_name} VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING *",
            "params": params,
            "row_format": "object",
        },
    )
    assert inserted.status_code == 200, inserted.text
    row = inserted.json()["rows"][0]
    assert row["id"] == 9007199254740993 and row["n"] == "1.10"
    assert row["ts"] == "2026-01-04T12:00:00+00:00"
    assert row["bin"] == "AQI=" and row["doc"] == {"nested": [1, "two"]}
    assert row["tags"] == ["a", "b"] and row["ok"] is True and row["v"] == [0.5, 1.0]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [(["not a number"], "$1"), ([1.5], "$1"), ([True], "$1"), ([], "takes 1 parameter"),
     ([1, 2], "takes 1 parameter")],
)  # fmt: skip
async def test_query_bad_params_are_400(
    api: httpx.AsyncClient, params: list[object], fragment: str
) -> None:
    response = await api.post("/query", json={"sql": "SELECT $1::int", "params": params})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert fragment in response.json()["error"]["message"]


async def test_query_script_runs_several_statements(
    api: httpx.AsyncClient, table_name: str
) -> None:
    script = (
        f"CREATE TABLE {table_name} (id int); INSERT INTO {table_name} VALUES (1), (2); "
        f"UPDATE {table_name} SET id = id + 10"
    )
    response = await api.post("/query", json={"sql": script, "script": True})
    assert response.status_code == 200, response.text
    assert response.json()["affected_rows"] == 2
    rows = await api.post("/query", json={"sql": f"SELECT id FROM {table_name} ORDER BY id"})
    assert rows.json()["rows"] == [[11], [12]]
    with_params = await api.post("/query", json={"sql": "SELECT $1", "params": [1], "script": True})
    assert with_params.status_code == 400


async def test_query_two_statements_without_script_are_refused(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int)"})
    response = await api.post(
        "/query", json={"sql": f"SELECT 1; DROP TABLE {table_name}", "params": []}
    )
    assert response.status_code == 400
    assert response.json()["error"]["sqlstate"] == "42601"
    still = await api.post("/query", json={"sql": f"SELECT count(*) FROM {table_name}"})
    assert still.status_code == 200


async def test_query_sees_schema_changes_between_calls(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (a int)"})
    await api.post("/query", json={"sql": f"INSERT INTO {table_name} VALUES (1)"})
    for _ in range(3):  # warm the statement cache on several pool connections
        assert (
            await api.post("/query", json={"sql": f"SELECT * FROM {table_name}"})
        ).status_code == 200
    await api.post(
        "/query", json={"sql": f"ALTER TABLE {table_name} ADD COLUMN b text DEFAULT 'x'"}
    )
    for _ in range(3):
        response = await api.post("/query", json={"sql": f"SELECT * FROM {table_name}"})
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [[1, "x"]]


@pytest.mark.parametrize(
    ("body", "status", "code", "sqlstate"),
    [
        ({"sql": "SELEC 1"}, 400, "INVALID_ARGUMENT", "42601"),
        ({"sql": "SELECT * FROM no_such_table_here"}, 404, "NOT_FOUND", "42P01"),
        ({"sql": "SELECT no_such_column FROM pg_class"}, 400, "INVALID_ARGUMENT", "42703"),
        ({"sql": "SELECT 1/0"}, 400, "INVALID_ARGUMENT", "22012"),
        ({"sql": ""}, 400, "INVALID_ARGUMENT", None),
        ({"sql": 42}, 400, "INVALID_ARGUMENT", None),
        ({"sql": "SELECT 1", "params": "x"}, 400, "INVALID_ARGUMENT", None),
        ({"sql": "SELECT 1", "script": "yes"}, 400, "INVALID_ARGUMENT", None),
        ({"sql": "SELECT 1", "row_format": "xml"}, 400, "INVALID_ARGUMENT", None),
        ({"params": []}, 400, "INVALID_ARGUMENT", None),
    ],
)
async def test_query_errors_have_the_spec_shape(
    api: httpx.AsyncClient, body: dict[str, object], status: int, code: str, sqlstate: str | None
) -> None:
    response = await api.post("/query", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error.get("sqlstate") == sqlstate
    assert "Traceback" not in response.text


async def test_query_unique_violation_is_409(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post("/query", json={"sql": f"CREATE TABLE {table_name} (id int PRIMARY KEY)"})
    await api.post("/query", json={"sql": f"INSERT INTO {table_name} VALUES (1)"})
    response = await api.post("/query", json={"sql": f"INSERT INTO {table_name} VALUES (1)"})
    assert response.status_code == 409
    assert response.json()["error"]["sqlstate"] == "23505"


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b"[1, 2]", b"", b"\xff\xfe", b'{"sql": "SELECT 1"'], ids=repr
)
async def test_query_malformed_json_is_400(api: httpx.AsyncClient, raw: bytes) -> None:
    response = await api.post("/query", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_query_oversized_body_is_413_and_node_goes_on(api: httpx.AsyncClient) -> None:
    huge = "SELECT '" + "x" * (11 * 1024 * 1024) + "'"
    response = await api.post("/query", json={"sql": huge})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    streamed = await api.post("/query", content=chunks())
    assert streamed.status_code == 413
    assert (await api.post("/query", json={"sql": "SELECT 1"})).status_code == 200


async def test_unknown_route_is_404_in_the_spec_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_health_info_metrics_and_docs(node: NodeProcess, api: httpx.AsyncClient) -> None:
    health = await api.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["engine"]["reachable"] is True
    assert body["listeners"]["http"]["state"] == "serving"
    info = (await api.get("/info")).json()
    assert info["version"] == "7.0.0" and info["api_version"] == "v1"
    assert info["supported_versions"] == ["v1"] and info["deprecated_features"] == []
    await api.post("/query", json={"sql": "SELECT 1"})
    metrics = (await api.get("/metrics")).text
    assert re.search(
        r'heliosdb_requests_total\{interface="http",route="[^"]*/query",status="200"\}', metrics
    )
    assert "heliosdb_request_duration_seconds_bucket" in metrics
    assert 'heliosdb_engine_pool_connections{pool="read_write",state="idle"}' in metrics
    assert "heliosdb_open_connections" in metrics
    spec = (await api.get("/openapi.json")).json()
    assert "/api/v1/query" in spec["paths"]
    async with httpx.AsyncClient(base_url=node.http_url) as client:
        assert (await client.get("/docs")).status_code == 200
