"""GET/POST /tables, GET/DELETE /tables/{name}: catalog, DDL from JSON, errors, privileges."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.nodeproc import NodeProcess


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "columns": [
            {"name": "id", "type": "bigserial", "primary_key": True},
            {"name": "name", "type": "varchar(40)", "nullable": False},
            {"name": "status", "type": "text", "default": "'active'"},
            {"name": "score", "type": "numeric(10,2)", "default": 0},
            {"name": "data", "type": "jsonb", "default": "'{}'::jsonb"},
            {"name": "created", "type": "timestamptz", "default": "now()"},
            {"name": "uid", "type": "uuid", "default": "gen_random_uuid()", "unique": True},
            {"name": "tags", "type": "text[]"},
            {"name": "embedding", "type": "vector(3)"},
        ],
        "indexes": [{"columns": ["name", "status"], "unique": False, "name": f"{name}_ns"}],
        **extra,
    }


async def test_create_table_returns_description(api: httpx.AsyncClient, table_name: str) -> None:
    response = await api.post("/tables", json=spec(table_name))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == table_name and body["schema"] == "public"
    assert body["primary_key"] == ["id"]
    columns = {c["name"]: c for c in body["columns"]}
    assert columns["name"]["type"] == "character varying(40)"
    assert columns["name"]["nullable"] is False
    assert columns["score"]["type"] == "numeric(10,2)"
    assert columns["status"]["default"] == "'active'::text"
    assert columns["created"]["default"] == "now()"
    assert columns["tags"]["type"] == "text[]"
    assert columns["embedding"]["type"] == "vector(3)"
    assert columns["id"]["primary_key"] is True
    indexes = {i["name"]: i for i in body["indexes"]}
    assert indexes[f"{table_name}_ns"]["columns"] == ["name", "status"]
    assert any(i["primary"] and i["columns"] == ["id"] for i in body["indexes"])
    assert any(i["unique"] and i["columns"] == ["uid"] for i in body["indexes"])


async def test_get_table_describes_columns_keys_indexes(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/tables", json=spec(table_name))
    for path in (f"/tables/{table_name}", f"/tables/public.{table_name}"):
        response = await api.get(path)
        assert response.status_code == 200, response.text
        assert response.json()["primary_key"] == ["id"]
    response = await api.get(f"/tables/{table_name}", params={"schema": "public"})
    assert response.status_code == 200


async def test_list_tables_includes_created_and_skips_system(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/tables", json=spec(table_name))
    response = await api.get("/tables")
    assert response.status_code == 200
    tables = response.json()["tables"]
    names = {(t["schema"], t["name"]) for t in tables}
    assert ("public", table_name) in names
    assert all(t["schema"] not in ("helios", "information_schema") for t in tables)
    assert all(not t["schema"].startswith("pg_") for t in tables)
    assert all(isinstance(t["estimated_rows"], int) for t in tables)
    only_public = (await api.get("/tables", params={"schema": "public"})).json()["tables"]
    assert {t["schema"] for t in only_public} == {"public"}


async def test_create_table_composite_key_and_index_options(
    api: httpx.AsyncClient, table_name: str
) -> None:
    body = {
        "name": table_name,
        "columns": [
            {"name": "a", "type": "int"},
            {"name": "b", "type": "text"},
            {"name": "doc", "type": "jsonb"},
        ],
        "primary_key": ["a", "b"],
        "indexes": [{"columns": ["doc"], "method": "gin"}, {"columns": ["b"], "unique": True}],
    }
    response = await api.post("/tables", json=body)
    assert response.status_code == 201, response.text
    described = response.json()
    assert described["primary_key"] == ["a", "b"]
    assert {i["method"] for i in described["indexes"]} >= {"gin", "btree"}


async def test_create_existing_table_conflicts(api: httpx.AsyncClient, table_name: str) -> None:
    assert (await api.post("/tables", json=spec(table_name))).status_code == 201
    response = await api.post("/tables", json=spec(table_name))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"columns": [{"name": "x", "type": "regclass"}]}, "unsupported column type"),
        ({"columns": [{"name": "x", "type": "int; DROP TABLE y"}]}, "unsupported column type"),
        ({"columns": [{"name": "x", "type": "varchar(0)"}]}, "size modifiers"),
        ({"columns": [{"name": "x", "type": "serial[]"}]}, "arrays of serial"),
        ({"columns": [{"name": "x", "type": "text", "default": "pg_sleep(1)"}]}, "default"),
        ({"columns": [{"name": "x", "type": "text", "default": "active"}]}, "default"),
        ({"columns": [{"name": "x", "type": "text", "default": "(SELECT 1)"}]}, "default"),
        ({"columns": [{"name": "x", "type": "text", "default": "'a'; DROP TABLE t"}]}, "default"),
        ({"columns": [{"name": "x", "type": "int", "default": "'1'::regclass"}]}, "default"),
        ({"columns": []}, "columns"),
        ({"columns": "x"}, "columns"),
        ({"columns": [{"name": "x", "type": "int"}, {"name": "x", "type": "int"}]}, "twice"),
        ({"columns": [{"name": "x", "type": "int", "extra": 1}]}, "unknown column field"),
        ({"columns": [{"name": "x", "type": "int"}], "primary_key": ["y"]}, "unknown column"),
        ({"columns": [{"name": "x", "type": "int"}], "indexes": [{"columns": []}]}, "index"),
        (
            {
                "columns": [{"name": "x", "type": "int"}],
                "indexes": [{"columns": ["x"], "method": "x"}],
            },
            "method",
        ),
        ({"columns": [{"name": "x", "type": "int"}], "schema": "helios"}, "system schema"),
        ({"columns": [{"name": "x", "type": "int"}], "schema": "pg_catalog"}, "system schema"),
        ({"columns": [{"name": "x" * 80, "type": "int"}]}, "longer than"),
        ({"columns": [{"name": "x", "type": "int", "nullable": "no"}]}, "nullable"),
        ({"owner": "postgres", "columns": [{"name": "x", "type": "int"}]}, "unknown table field"),
    ],
)
async def test_create_table_rejects_bad_descriptions(
    api: httpx.AsyncClient, table_name: str, change: dict[str, Any], fragment: str
) -> None:
    response = await api.post("/tables", json={"name": table_name, **change})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]
    assert (await api.get(f"/tables/{table_name}")).status_code == 404


async def test_create_table_rejects_malformed_bodies(api: httpx.AsyncClient) -> None:
    assert (await api.post("/tables", content=b"{not json")).status_code == 400
    assert (await api.post("/tables", json=[1, 2])).status_code == 400
    assert (await api.post("/tables")).status_code == 400
    assert (
        await api.post("/tables", json={"columns": [{"name": "x", "type": "int"}]})
    ).status_code == 400


async def test_create_table_in_unknown_schema_is_not_found(
    api: httpx.AsyncClient, table_name: str
) -> None:
    body = {
        "name": table_name,
        "schema": "no_such_schema",
        "columns": [{"name": "x", "type": "int"}],
    }
    response = await api.post("/tables", json=body)
    assert response.status_code == 404, response.text


async def test_create_table_odd_names_are_quoted(api: httpx.AsyncClient) -> None:
    name = f'Odd "name"; DROP TABLE x; -- {uuid.uuid4().hex[:6]}'
    body = {
        "name": name,
        "columns": [{"name": "Select", "type": "int"}, {"name": "a b", "type": "text"}],
    }
    response = await api.post("/tables", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    described = await api.get(f"/tables/{name}")
    assert described.status_code == 200
    assert [c["name"] for c in described.json()["columns"]] == ["Select", "a b"]
    assert (await api.delete(f"/tables/{name}")).status_code == 200


async def test_default_literals_are_quoted_not_executed(
    api: httpx.AsyncClient, table_name: str
) -> None:
    sneaky = "x'); DROP TABLE users; --"
    literal = "'" + sneaky.replace("'", "''") + "'"
    body = {"name": table_name, "columns": [{"name": "v", "type": "text", "default": literal}]}
    assert (await api.post("/tables", json=body)).status_code == 201
    inserted = await api.post(f"/tables/{table_name}/rows", json={})
    assert inserted.status_code == 201, inserted.text
    assert inserted.json()["rows"] == [{"v": sneaky}]


async def test_drop_table(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post("/tables", json=spec(table_name))
    response = await api.delete(f"/tables/{table_name}")
    assert response.status_code == 200, response.text
    assert response.json()["dropped"] is True
    assert (await api.get(f"/tables/{table_name}")).status_code == 404
    assert (await api.delete(f"/tables/{table_name}")).status_code == 404


async def test_drop_table_with_dependents_needs_cascade(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/tables", json=spec(table_name))
    view = await api.post(
        "/query", json={"sql": f"CREATE VIEW {table_name}_v AS SELECT id FROM {table_name}"}
    )
    assert view.status_code == 200, view.text
    refused = await api.delete(f"/tables/{table_name}")
    assert refused.status_code == 400
    assert refused.json()["error"]["sqlstate"] == "2BP01"
    dropped = await api.delete(f"/tables/{table_name}", params={"cascade": "true"})
    assert dropped.status_code == 200
    assert (await api.get(f"/tables/{table_name}_v")).status_code == 404


async def test_unknown_table_is_not_found(api: httpx.AsyncClient) -> None:
    for path in ("/tables/no_such_table", "/tables/nope.no_such_table"):
        response = await api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("path", ["/tables/helios.api_keys", "/tables/pg_catalog.pg_authid"])
async def test_system_tables_are_invisible(api: httpx.AsyncClient, path: str) -> None:
    assert (await api.get(path)).status_code == 404
    assert (await api.delete(path)).status_code == 404
    assert (await api.get(f"{path}/rows")).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "x'; DROP TABLE users; --",
        'x"; DROP TABLE users; --',
        "pg_catalog.pg_authid",
        "helios.engine_roles",
        "information_schema.tables",
        "../../etc/passwd",
        "x" * 300,
    ],
)
async def test_table_names_with_injection_fail_safely(
    api: httpx.AsyncClient, table_name: str, name: str
) -> None:
    await api.post("/tables", json=spec(table_name))
    for response in (
        await api.get(f"/tables/{name}"),
        await api.delete(f"/tables/{name}"),
        await api.get(f"/tables/{name}", params={"schema": name}),
        await api.delete(f"/tables/{table_name}", params={"schema": name}),
        await api.delete(f"/tables/{table_name}", params={"cascade": name}),
        await api.get("/tables", params={"schema": name}),
    ):
        assert response.status_code in (200, 400, 404), response.text
        if response.status_code == 200:
            assert response.json()["tables"] == []
    assert (await api.get(f"/tables/{table_name}")).status_code == 200


async def test_read_only_key_can_read_but_not_change_tables(
    api: httpx.AsyncClient, ro_api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/tables", json=spec(table_name))
    assert (await ro_api.get("/tables")).status_code == 200
    assert (await ro_api.get(f"/tables/{table_name}")).status_code == 200
    created = await ro_api.post("/tables", json=spec(f"{table_name}_ro"))
    assert created.status_code == 403, created.text
    assert created.json()["error"]["code"] == "PERMISSION_DENIED"
    dropped = await ro_api.delete(f"/tables/{table_name}")
    assert dropped.status_code == 403, dropped.text
    assert (await api.get(f"/tables/{table_name}")).status_code == 200
    assert (await api.get(f"/tables/{table_name}_ro")).status_code == 404


async def test_tables_need_credentials(node: NodeProcess) -> None:
    async with httpx.AsyncClient(base_url=node.api) as anonymous:
        assert (await anonymous.get("/tables")).status_code == 401
        assert (await anonymous.post("/tables", json={})).status_code == 401
        assert (await anonymous.delete("/tables/x")).status_code == 401
        assert (await anonymous.get("/tables/x/rows")).status_code == 401


async def test_openapi_documents_tables_and_rows(node: NodeProcess) -> None:
    async with httpx.AsyncClient(base_url=node.api) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/tables"])
    assert {"get", "delete"} <= set(paths["/api/v1/tables/{name}"])
    assert {"get", "post", "put", "delete"} <= set(paths["/api/v1/tables/{name}/rows"])
    assert "#/$defs/" not in response.text


async def test_tables_hides_heliosdb_internal_schemas(api: httpx.AsyncClient) -> None:
    listed = await api.get("/tables")
    assert listed.status_code == 200
    assert not [t for t in listed.text.split('"') if t.startswith("helios_")]
    for name in ("helios_kv.keys", "helios.api_keys"):
        assert (await api.get(f"/tables/{name}")).status_code == 404
        assert (await api.get(f"/tables/{name}/rows")).status_code == 404
