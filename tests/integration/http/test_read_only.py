"""A read-only (hdb_pk_) key cannot write, whatever path it tries."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
async def guarded_table(api: httpx.AsyncClient, table_name: str) -> str:
    for sql in (
        f"CREATE TABLE {table_name} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {table_name} VALUES (1, 'one')",
        f"CREATE SEQUENCE {table_name}_seq",
        f"CREATE FUNCTION {table_name}_writer() RETURNS int LANGUAGE sql "
        f"AS 'INSERT INTO {table_name} VALUES (99, ''x'') RETURNING id'",
        f"CREATE FUNCTION {table_name}_definer() RETURNS int LANGUAGE sql SECURITY DEFINER "
        f"AS 'INSERT INTO {table_name} VALUES (98, ''y'') RETURNING id'",
    ):
        response = await api.post("/query", json={"sql": sql})
        assert response.status_code == 200, response.text
    return table_name


def write_attempts(t: str) -> list[dict[str, object]]:
    return [
        {"sql": f"INSERT INTO {t} VALUES (2, 'two')"},
        {"sql": f"UPDATE {t} SET v = 'changed'"},
        {"sql": f"DELETE FROM {t}"},
        {"sql": f"WITH w AS (INSERT INTO {t} VALUES (3, 'c') RETURNING *) SELECT * FROM w"},
        {"sql": f"SELECT {t}_writer()"},
        {"sql": f"SELECT {t}_definer()"},
        {"sql": f"SELECT nextval('{t}_seq')"},
        {"sql": f"TRUNCATE {t}"},
        {"sql": f"DROP TABLE {t}"},
        {"sql": f"ALTER TABLE {t} ADD COLUMN w int"},
        {"sql": "CREATE TABLE ro_should_not_exist (x int)"},
        {"sql": "CREATE TEMP TABLE ro_temp (x int)"},
        {"sql": "CREATE SCHEMA ro_schema"},
        {"sql": "SELECT lo_create(0)"},
        {"sql": "SELECT lo_from_bytea(0, '\\x00'::bytea)"},
        {"sql": f"COPY {t} TO '/tmp/heliosdb-ro-copy'"},
        {"sql": "COPY (SELECT 1) TO PROGRAM 'id'"},
        {"sql": "SET ROLE helios_readwrite"},
        {"sql": "SET SESSION AUTHORIZATION heliosdb"},
        {
            "sql": f"SET default_transaction_read_only = off; INSERT INTO {t} VALUES (4, 'd')",
            "script": True,
        },
        {"sql": f"BEGIN READ WRITE; INSERT INTO {t} VALUES (5, 'e'); COMMIT", "script": True},
        {
            "sql": "SELECT set_config('default_transaction_read_only', 'off', false); "
            f"INSERT INTO {t} VALUES (6, 'f')",
            "script": True,
        },
        {"sql": f"RESET SESSION AUTHORIZATION; INSERT INTO {t} VALUES (7, 'g')", "script": True},
        {"sql": f"DO $$ BEGIN INSERT INTO {t} VALUES (8, 'h'); END $$"},
    ]


async def test_read_only_key_refused_on_every_write_path(
    ro_api: httpx.AsyncClient, api: httpx.AsyncClient, guarded_table: str
) -> None:
    for attempt in write_attempts(guarded_table):
        response = await ro_api.post("/query", json=attempt)
        assert response.status_code in (400, 403), (attempt, response.text)
        assert response.json()["error"]["code"] in ("PERMISSION_DENIED", "INVALID_ARGUMENT")
    rows = await api.post("/query", json={"sql": f"SELECT id, v FROM {guarded_table} ORDER BY id"})
    assert rows.json()["rows"] == [[1, "one"]]
    exists = await api.post(
        "/query", json={"sql": "SELECT count(*) FROM pg_class WHERE relname LIKE 'ro\\_%'"}
    )
    assert exists.json()["rows"] == [[0]]


async def test_read_only_key_can_read(ro_api: httpx.AsyncClient, guarded_table: str) -> None:
    response = await ro_api.post("/query", json={"sql": f"SELECT v FROM {guarded_table}"})
    assert response.status_code == 200
    assert response.json()["rows"] == [["one"]]
    who = await ro_api.post("/query", json={"sql": "SELECT current_user"})
    assert who.json()["rows"] == [["helios_readonly"]]


async def test_read_only_write_is_403_permission_denied(
    ro_api: httpx.AsyncClient, guarded_table: str
) -> None:
    response = await ro_api.post(
        "/query", json={"sql": f"INSERT INTO {guarded_table} VALUES (9, 'i')"}
    )
    assert response.status_code == 403
    body = response.json()["error"]
    assert body["code"] == "PERMISSION_DENIED"
    assert body["sqlstate"] in ("42501", "25006")
