"""MD5 logins (postgres.auth_method: md5) on a node of their own that shares the engine.

MD5 needs md5(password ‖ user), which exists only for users created with --md5: API
keys and SCRAM-only users get one clear FATAL 28000 before any password step.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.integration.postgres.conftest import create_user, engine_tool, libpq_conninfo, make_dsn
from tests.nodeproc import NodeProcess

PASSWORD = "md5-legacy-password"


@pytest.fixture(scope="module")
def md5_node(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("md5") / "data"
    process = node.beside(data_dir, {"HELIOSDB_POSTGRES__AUTH_METHOD": "md5"})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def md5_user(node: NodeProcess) -> str:
    return create_user(node, PASSWORD, md5=True)


def test_md5_psycopg_forced_to_md5(md5_node: NodeProcess, md5_user: str) -> None:
    dsn = make_dsn(md5_node.ports["postgres"], PASSWORD, user=md5_user) + "?require_auth=md5"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readwrite",)
        assert conn.info.parameter_status("session_authorization") == md5_user


def test_md5_transaction_port(md5_node: NodeProcess, md5_user: str) -> None:
    dsn = make_dsn(md5_node.ports["postgres_txn"], PASSWORD, user=md5_user)
    with psycopg.connect(dsn + "?require_auth=md5") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_md5_psql_forced_to_md5(md5_node: NodeProcess, md5_user: str) -> None:
    # require_auth needs libpq >= 16: the engine's own psql (Debian's is 15).
    conninfo = libpq_conninfo(md5_node.ports["postgres"], md5_user) + " require_auth=md5"
    result = subprocess.run(
        [engine_tool("psql"), "-X", "-A", "-t", "-d", conninfo, "-c", "SELECT current_user"],
        env={**os.environ, "PGPASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "helios_readwrite"


def test_md5_debian_psql(md5_node: NodeProcess, md5_user: str, psql: str) -> None:
    result = subprocess.run(
        [psql, "-X", "-A", "-t", "-d", libpq_conninfo(md5_node.ports["postgres"], md5_user),
         "-c", "SELECT 40 + 2"],
        env={**os.environ, "PGPASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


async def test_md5_asyncpg(md5_node: NodeProcess, md5_user: str) -> None:
    conn = await asyncpg.connect(make_dsn(md5_node.ports["postgres"], PASSWORD, user=md5_user))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_md5_wrong_password_28p01(md5_node: NodeProcess, md5_user: str) -> None:
    dsn = make_dsn(md5_node.ports["postgres"], "not-the-password", user=md5_user)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn + "?require_auth=md5")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn)


@pytest.mark.parametrize("who", ["api-key", "api-key-any-user", "scram-only-user", "unknown"])
async def test_md5_impossible_for_keys_and_scram_only_users(
    node: NodeProcess, md5_node: NodeProcess, rw_key: str, who: str
) -> None:
    user, password = {
        "api-key": ("apikey", rw_key),
        "api-key-any-user": ("someone", rw_key),
        "scram-only-user": (create_user(node, PASSWORD), PASSWORD),
        "unknown": ("nobody_at_all", "whatever-password"),
    }[who]
    dsn = make_dsn(md5_node.ports["postgres"], password, user=user)
    expected = f'MD5 authentication is not available for user "{user}"'
    with pytest.raises(psycopg.OperationalError, match=expected):
        psycopg.connect(dsn + "?require_auth=md5")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError) as info:
        await asyncpg.connect(dsn)
    assert info.value.sqlstate == "28000"
    assert "users create --md5" in (info.value.hint or "")


def test_md5_user_still_logs_in_with_scram_elsewhere(node: NodeProcess, md5_user: str) -> None:
    # The MD5 verifier is extra: the default (SCRAM) listener still takes the password.
    dsn = make_dsn(node.ports["postgres"], PASSWORD, user=md5_user) + "?require_auth=scram-sha-256"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
