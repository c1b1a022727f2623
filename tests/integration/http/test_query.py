"""POST /query: statements, parameters, JSON forms and errors."""

from __future__ import annotations

import httpx


async def test_query_spec_example_returns_rows(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post(
        "/query",
        json={"sql": f"CREATE TABLE {table_name} (id serial PRIMARY KEY, name text, status text)"},
    )
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
    assert body["rows"] == [[1, "ann", "active"]]
    assert body["metrics"]["rows_returned"] == 1
