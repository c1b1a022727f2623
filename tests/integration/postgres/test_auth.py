"""Logins: SCRAM-SHA-256 with API keys and users, and every way to get it wrong."""

from __future__ import annotations

import re
import socket
import struct

import asyncpg
import httpx
import psycopg
import pytest

from heliosdb.security.scram import ClientExchange
from tests.integration.postgres.conftest import create_user, make_dsn
from tests.nodeproc import NodeProcess


def _auth_failures(node: NodeProcess) -> float:
    text = httpx.get(f"{node.api}/metrics").text
    match = re.search(r'^heliosdb_auth_failures_total\{interface="postgres"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_login_api_key_as_apikey_user(rw_dsn: str) -> None:
    with psycopg.connect(rw_dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readwrite",)
        assert conn.info.parameter_status("session_authorization") == "apikey"


def test_login_api_key_with_any_user_name(pg_port: int, rw_key: str) -> None:
    with psycopg.connect(make_dsn(pg_port, rw_key, user="someone")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_login_read_only_key_runs_as_read_only_role(ro_dsn: str) -> None:
    with psycopg.connect(ro_dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readonly",)


async def test_login_user_password_asyncpg_and_psycopg(node: NodeProcess, pg_port: int) -> None:
    name = create_user(node, "correct horse battery")
    conn = await asyncpg.connect(make_dsn(pg_port, "correct horse battery", user=name))
    try:
        assert await conn.fetchval("SELECT current_user") == "helios_readwrite"
    finally:
        await conn.close()
    with psycopg.connect(make_dsn(pg_port, "correct horse battery", user=name)) as sync_conn:
        assert sync_conn.execute("SELECT 1").fetchone() == (1,)


async def test_login_read_only_user(node: NodeProcess, pg_port: int) -> None:
    name = create_user(node, "only-reading-here", read_only=True)
    conn = await asyncpg.connect(make_dsn(pg_port, "only-reading-here", user=name))
    try:
        assert await conn.fetchval("SELECT current_user") == "helios_readonly"
    finally:
        await conn.close()


async def test_login_non_ascii_password_is_saslprepped(node: NodeProcess, pg_port: int) -> None:
    # U+00A0 maps to a space under SASLprep; both ends must agree.
    name = create_user(node, "pass\u00a0wörd-long")
    conn = await asyncpg.connect(make_dsn(pg_port, "pass\u00a0wörd-long", user=name))
    await conn.close()


@pytest.mark.parametrize("case", ["unknown-user", "wrong-user-password", "not-a-key", "bad-key"])
async def test_login_wrong_credentials_fatal_28p01(
    node: NodeProcess, pg_port: int, rw_key: str, case: str
) -> None:
    user, password = {
        "unknown-user": ("nobody_here", "whatever-password"),
        "wrong-user-password": (create_user(node, "right-password"), "wrong-password"),
        "not-a-key": ("apikey", "hello"),
        "bad-key": ("apikey", rw_key[:-1] + ("x" if rw_key[-1] != "x" else "y")),
    }[case]
    before = _auth_failures(node)
    with pytest.raises(asyncpg.InvalidPasswordError) as info:
        await asyncpg.connect(make_dsn(pg_port, password, user=user))
    assert info.value.sqlstate == "28P01"
    assert str(info.value) == f'password authentication failed for user "{user}"'
    assert _auth_failures(node) == before + 1


def test_login_revoked_key_fails(node: NodeProcess, admin_key: str, pg_port: int) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    created = httpx.post(
        f"{node.api}/keys", json={"name": "pg-revoke", "kind": "secret"}, headers=headers
    ).json()
    with psycopg.connect(make_dsn(pg_port, created["key"])) as conn:
        conn.execute("SELECT 1")
    httpx.delete(f"{node.api}/keys/{created['id']}", headers=headers).raise_for_status()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_dsn(pg_port, created["key"]))


def test_login_new_key_works_at_once(make_key, pg_port: int) -> None:  # type: ignore[no-untyped-def]
    key = make_key("public")
    with psycopg.connect(make_dsn(pg_port, key)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readonly",)


async def test_login_unknown_database_3d000(pg_port: int, rw_key: str) -> None:
    dsn = make_dsn(pg_port, rw_key).rsplit("/", 1)[0] + "/otherdb"
    with pytest.raises(asyncpg.InvalidCatalogNameError, match='database "otherdb" does not exist'):
        await asyncpg.connect(dsn)


async def test_login_bad_startup_parameter_relays_engine_error(pg_port: int, rw_key: str) -> None:
    with pytest.raises(asyncpg.PostgresError, match="work_mem"):
        await asyncpg.connect(make_dsn(pg_port, rw_key), server_settings={"work_mem": "lots"})


async def test_login_startup_parameters_reach_the_engine(pg_port: int, rw_key: str) -> None:
    conn = await asyncpg.connect(
        make_dsn(pg_port, rw_key),
        server_settings={"jit": "off", "application_name": "gw-test", "TimeZone": "Asia/Tokyo"},
    )
    try:
        assert await conn.fetchval("SHOW jit") == "off"
        assert await conn.fetchval("SHOW application_name") == "gw-test"
        assert conn.get_settings().TimeZone == "Asia/Tokyo"
    finally:
        await conn.close()


def _scram_login(port: int, password: str, source: str) -> bytes:
    """A raw SCRAM login from ``source``; the first byte of the final answer ('R' or 'E')."""
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as sock:
        file = sock.makefile("rb")
        body = struct.pack("!i", 196608) + b"user\0apikey\0database\0heliosdb\0\0"
        sock.sendall(struct.pack("!i", len(body) + 4) + body)

        def read() -> tuple[bytes, bytes]:
            kind = file.read(1)
            (length,) = struct.unpack("!i", file.read(4))
            return kind, file.read(length - 4)

        kind, body = read()
        if kind == b"E":
            return body
        assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10
        exchange = ClientExchange(password)
        first = exchange.first()
        payload = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
        sock.sendall(b"p" + struct.pack("!i", len(payload) + 4) + payload)
        kind, body = read()
        final = exchange.final(body[4:])
        sock.sendall(b"p" + struct.pack("!i", len(final) + 4) + final)
        kind, body = read()
        return body


def test_login_failures_rate_limited_per_address(pg_port: int, rw_key: str) -> None:
    source = "127.0.0.77"  # its own address, so other tests are not limited
    for _ in range(30):
        assert b"password authentication failed" in _scram_login(pg_port, "wrong", source)
    refused = _scram_login(pg_port, rw_key, source)
    assert b"too many failed authentication attempts" in refused
    # Another address is not affected.
    assert b"password authentication failed" not in _scram_login(pg_port, rw_key, "127.0.0.78")
