"""A read-only key stays read-only whatever it sends: the engine role enforces it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors


@pytest.fixture(scope="module")
def table(rw_dsn: str) -> Iterator[str]:
    name = f"ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {name} VALUES (1, 'one')")
    yield name
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


DENIED = (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)

WRITES = {
    "insert": "INSERT INTO {t} VALUES (2, 'two')",
    "update": "UPDATE {t} SET v = 'x'",
    "delete": "DELETE FROM {t}",
    "cte": "WITH w AS (INSERT INTO {t} VALUES (3, 'three') RETURNING *) SELECT * FROM w",
    "create": "CREATE TABLE {t}_new (a int)",
    "temp": "CREATE TEMP TABLE scratch (a int)",
    "truncate": "TRUNCATE {t}",
    "drop": "DROP TABLE {t}",
    "function": "SELECT lo_create(0)",
    "do-block": "DO $$ BEGIN INSERT INTO {t} VALUES (4, 'four'); END $$",
}


def test_read_only_key_can_read(ro_dsn: str, table: str) -> None:
    with psycopg.connect(ro_dsn) as conn:
        assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("one",)]


@pytest.mark.parametrize("statement", list(WRITES), ids=list(WRITES))
def test_read_only_key_cannot_write(ro_dsn: str, table: str, statement: str) -> None:
    with psycopg.connect(ro_dsn, autocommit=True) as conn, pytest.raises(DENIED):
        conn.execute(WRITES[statement].format(t=table))


@pytest.mark.parametrize(
    "escape",
    [
        "SET default_transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "RESET SESSION AUTHORIZATION",
        "RESET ROLE",
    ],
)
def test_read_only_key_cannot_write_after_escape_attempt(
    ro_dsn: str, table: str, escape: str
) -> None:
    with psycopg.connect(ro_dsn, autocommit=True) as conn:
        conn.execute(escape)
        with pytest.raises(DENIED):
            conn.execute(f"INSERT INTO {table} VALUES (5, 'five')")
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readonly",)


def test_read_only_key_cannot_set_role(ro_dsn: str) -> None:
    with psycopg.connect(ro_dsn, autocommit=True) as conn:
        for role in ("helios_readwrite", "heliosdb"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SET ROLE {role}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SET SESSION AUTHORIZATION heliosdb")


def test_read_only_key_cannot_copy_from(ro_dsn: str, table: str) -> None:
    with psycopg.connect(ro_dsn, autocommit=True) as conn:
        with pytest.raises(DENIED), conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            copy.write_row((9, "nine"))
        # The session is still usable after the failed COPY.
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


def test_read_only_key_cannot_read_system_schema(ro_dsn: str) -> None:
    with psycopg.connect(ro_dsn) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM helios.api_keys")
