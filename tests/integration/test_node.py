"""The node's life: first start, restart, kill -9, one data directory per node, timeouts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def prod_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node in the production environment with a short query timeout."""
    data_dir = tmp_path_factory.mktemp("prod") / "data"
    process = NodeProcess(data_dir, extra_args=["--query-timeout", "1"]).start()
    yield process
    process.stop()


def query(node: NodeProcess, key: str, sql: str, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{node.api}/query",
        json={"sql": sql, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_node_first_start_prints_admin_key_and_writes_it_0600(prod_node: NodeProcess) -> None:
    assert prod_node.admin_key is not None
    key_file = prod_node.data_dir / "admin.key"
    assert key_file.read_text().strip() == prod_node.admin_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (prod_node.data_dir / "engine.password").stat().st_mode & 0o777 == 0o600
    printed = "".join(prod_node.output)
    assert printed.count("admin key") == 1
    assert "engine.password" not in printed


def test_node_engine_listens_on_unix_socket_only(prod_node: NodeProcess) -> None:
    assert (prod_node.data_dir / "run" / ".s.PGSQL.5432").exists()
    assert prod_node.admin_key is not None
    shown = query(prod_node, prod_node.admin_key, "SELECT current_setting('listen_addresses')")
    assert shown.status_code in (200, 403)
    if shown.status_code == 200:
        assert shown.json()["rows"] == [[""]]


def test_node_refuses_test_keys_in_production(prod_node: NodeProcess) -> None:
    assert prod_node.admin_key is not None
    created = httpx.post(
        f"{prod_node.api}/keys",
        json={"name": "t", "kind": "test"},
        headers={"Authorization": f"Bearer {prod_node.admin_key}"},
    ).json()
    response = query(prod_node, created["key"], "SELECT 1")
    assert response.status_code == 401
    assert "test keys" in response.json()["error"]["message"]


def test_node_query_timeout_cancels_on_the_engine(prod_node: NodeProcess) -> None:
    assert prod_node.admin_key is not None
    started = time.monotonic()
    response = query(prod_node, prod_node.admin_key, "SELECT pg_sleep(20)")
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "QUERY_TIMEOUT"
    assert response.json()["error"]["sqlstate"] == "57014"
    assert time.monotonic() - started < 15
    assert query(prod_node, prod_node.admin_key, "SELECT 1").status_code == 200


def test_node_second_node_on_same_data_dir_fails_clearly(prod_node: NodeProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heliosdb", "serve", "--data-dir", str(prod_node.data_dir),
         "--http-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "in use by another HeliosDB node" in result.stderr
    assert query(prod_node, prod_node.admin_key or "", "SELECT 1").status_code == 200


def test_node_keys_cli_while_node_runs(prod_node: NodeProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "heliosdb", "keys", *args,
             "--data-dir", str(prod_node.data_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    created = cli("create", "--name", "from-cli", "--kind", "public")
    assert created.returncode == 0, created.stderr
    key = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("key:"))
    key_id = next(
        line.split()[-1] for line in created.stdout.splitlines() if line.startswith("id:")
    )
    assert key.startswith("hdb_pk_")
    assert query(prod_node, key, "SELECT 1").status_code == 200
    listed = cli("list")
    assert listed.returncode == 0 and "from-cli" in listed.stdout and key not in listed.stdout
    assert cli("revoke", key_id).returncode == 0
    # The node learns of the CLI's revoke through the engine (NOTIFY), not its cache TTL.
    deadline = time.monotonic() + 2
    while query(prod_node, key, "SELECT 1").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert query(prod_node, key, "SELECT 1").status_code == 401
    assert cli("revoke", key_id).returncode == 1
    assert query(prod_node, prod_node.admin_key or "", "SELECT 1").status_code == 200


def test_node_restart_and_kill_keep_committed_data(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data").start()
    key = node.admin_key
    assert key is not None
    assert query(node, key, "CREATE TABLE kept (id int PRIMARY KEY, v text)").status_code == 200
    assert query(node, key, "INSERT INTO kept VALUES (1, 'before restart')").status_code == 200
    assert node.stop() == 0

    node.admin_key = None
    node.start()
    assert node.admin_key == key  # read back from admin.key; not announced again
    assert "admin key" not in "".join(node.output)
    assert query(node, key, "SELECT v FROM kept").json()["rows"] == [["before restart"]]
    assert query(node, key, "INSERT INTO kept VALUES (2, 'before kill')").status_code == 200
    node.kill()

    node.start()
    rows = query(node, key, "SELECT id FROM kept ORDER BY id").json()["rows"]
    assert rows == [[1], [2]]
    node.stop()


def test_node_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data").start()
    key = node.admin_key or ""
    results: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: results.append(query(node, key, "SELECT pg_sleep(1.5), 'done'"))
    )
    slow.start()
    time.sleep(0.5)
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)
    slow.join(30)
    assert results and results[0].status_code == 200
    assert results[0].json()["rows"][0][1] == "done"
    assert node.stop() == 0


def test_node_external_engine_url_shares_data_between_nodes(
    prod_node: NodeProcess, tmp_path: Path
) -> None:
    password = (prod_node.data_dir / "engine.password").read_text().strip()
    second = NodeProcess(tmp_path / "second", extra_args=["--engine-url", prod_node.engine_url])
    second.start()
    try:
        key = prod_node.admin_key or ""
        assert query(prod_node, key, "CREATE TABLE shared_t (v text)").status_code == 200
        assert (
            query(prod_node, key, "INSERT INTO shared_t VALUES ('from first')").status_code == 200
        )
        # An admin key already exists in the shared engine, so the second node mints none.
        assert second.admin_key is None
        assert query(second, key, "SELECT v FROM shared_t").json()["rows"] == [["from first"]]
        assert not (tmp_path / "second" / "engine").exists()
        assert password not in "".join(second.output)
    finally:
        assert second.stop() == 0
    assert query(prod_node, prod_node.admin_key or "", "SELECT 1").status_code == 200
