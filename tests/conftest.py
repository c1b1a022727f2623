"""Session fixtures: one real node (embedded engine in a temp dir, port 0) per session."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.nodeproc import NodeProcess

_OWN_BASETEMP = "_heliosdb_own_basetemp"


def pytest_configure(config: pytest.Config) -> None:
    """Keep test data out of /tmp/pytest-of-<user>.

    Every pytest session resets that directory to mode 0700, which takes away the search
    bit the engine's OS user needs (when tests run as root) from nodes of any session
    already running. A base directory of our own is left alone.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="heliosdb-pytest-")
        setattr(config, _OWN_BASETEMP, config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    own = getattr(config, _OWN_BASETEMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("node") / "data"
    process = NodeProcess(data_dir, extra_args=["--environment", "test"]).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def second_node(
    node: NodeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A second node sharing the first node's engine, as nodes behind a load balancer do.

    When it leads change capture it polls the slot (changes.stream false), so the tests
    that hand the lead between the nodes cover both ways of reading it."""
    data_dir: Path = tmp_path_factory.mktemp("second") / "data"
    process = node.beside(data_dir, {"HELIOSDB_CHANGES__STREAM": "false"})
    yield process
    process.stop()


@pytest.fixture(scope="session")
def admin_key(node: NodeProcess) -> str:
    assert node.admin_key is not None
    return node.admin_key


def _create_key(node: NodeProcess, admin_key: str, kind: str, **extra: object) -> str:
    response = httpx.post(
        f"{node.api}/keys",
        json={"name": f"test-{kind}-{uuid.uuid4().hex[:6]}", "kind": kind, **extra},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


@pytest.fixture(scope="session")
def rw_key(node: NodeProcess, admin_key: str) -> str:
    """A read-write (hdb_sk_) key that is not an admin."""
    return _create_key(node, admin_key, "secret")


@pytest.fixture(scope="session")
def ro_key(node: NodeProcess, admin_key: str) -> str:
    """A read-only (hdb_pk_) key."""
    return _create_key(node, admin_key, "public")


@pytest.fixture(scope="session")
def make_key(node: NodeProcess, admin_key: str) -> Callable[..., str]:
    def make(kind: str = "secret", **extra: object) -> str:
        return _create_key(node, admin_key, kind, **extra)

    return make


def _client(node: NodeProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=node.api, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


@pytest.fixture
async def api(node: NodeProcess, rw_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on /api/v1 authenticated with the read-write key."""
    async with _client(node, rw_key) as client:
        yield client


@pytest.fixture
async def admin_api(node: NodeProcess, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(node, admin_key) as client:
        yield client


@pytest.fixture
async def ro_api(node: NodeProcess, ro_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(node, ro_key) as client:
        yield client


@pytest.fixture
def table_name() -> str:
    """A fresh table name per test, so tests never see each other's rows."""
    return f"t_{uuid.uuid4().hex[:10]}"
