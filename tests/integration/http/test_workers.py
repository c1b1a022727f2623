"""REST worker processes: ``--http-workers 3`` serves the REST API from three processes.

The node and its two workers share the HTTP port (SO_REUSEPORT) and the engine; any of
them may answer a request, and the answer must not depend on which did.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.nodeproc import NodeProcess

WORKERS = 3
CONNECTIONS = 24  # fresh connections: with three processes, all landing on one is ~1e-11


@pytest.fixture(scope="module")
def workers_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("workers") / "data"
    node = NodeProcess(
        data_dir, extra_args=["--environment", "test", "--http-workers", str(WORKERS)]
    ).start()
    yield node
    if node.process is not None and node.process.poll() is None:
        node.stop()


def worker_pids(node: NodeProcess) -> set[int]:
    assert node.process is not None
    parent = node.process.pid
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"http-worker" in cmdline:
            pids.add(int(entry.name))
    return pids


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def fresh_requests(node: NodeProcess, key: str, count: int = CONNECTIONS) -> list[int]:
    """``count`` queries, each on a new connection (so each may reach another process)."""
    statuses = []
    for _ in range(count):
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
            response = client.post(f"{node.api}/query", json={"sql": "SELECT 1"})
            statuses.append(response.status_code)
    return statuses


def test_the_node_starts_its_workers(workers_node: NodeProcess) -> None:
    assert len(worker_pids(workers_node)) == WORKERS - 1
    assert f"heliosdb: http served by {WORKERS} processes\n" in workers_node.output


def test_connections_are_spread_over_the_processes(workers_node: NodeProcess) -> None:
    assert workers_node.admin_key is not None and workers_node.process is not None
    clients = [
        httpx.Client(headers={"Authorization": f"Bearer {workers_node.admin_key}"})
        for _ in range(CONNECTIONS)
    ]
    try:
        for client in clients:  # each client holds its connection open
            assert client.get(f"{workers_node.api}/health").status_code == 200
        sockets = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{workers_node.ports['http']} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        for client in clients:
            client.close()
    serving = {int(pid) for pid in re.findall(r"pid=(\d+)", sockets)}
    assert serving <= worker_pids(workers_node) | {workers_node.process.pid}
    assert len(serving) >= 2


def test_metrics_add_up_every_process(workers_node: NodeProcess) -> None:
    assert workers_node.admin_key is not None
    pattern = re.compile(
        r'^heliosdb_requests_total\{interface="http",route="/query",status="200"\} (\S+)$', re.M
    )

    def served() -> float:
        with httpx.Client() as client:  # a new connection: any process may answer
            text = client.get(
                f"{workers_node.api}/metrics",
                headers={"Authorization": f"Bearer {workers_node.admin_key}"},
            ).text
        match = pattern.search(text)
        return float(match.group(1)) if match else 0.0

    before = served()
    assert fresh_requests(workers_node, workers_node.admin_key) == [200] * CONNECTIONS
    # Whichever process answers the scrape, it counts every process's requests.
    assert {served() for _ in range(6)} == {before + CONNECTIONS}


def test_a_revoked_key_is_refused_by_every_process(workers_node: NodeProcess) -> None:
    admin = {"Authorization": f"Bearer {workers_node.admin_key}"}
    created = httpx.post(
        f"{workers_node.api}/keys", json={"name": "revoked-everywhere"}, headers=admin
    ).json()
    assert fresh_requests(workers_node, created["key"]) == [200] * CONNECTIONS  # cached
    response = httpx.delete(f"{workers_node.api}/keys/{created['id']}", headers=admin)
    assert response.status_code in (200, 204)
    wait_for(lambda: set(fresh_requests(workers_node, created["key"])) == {401}, seconds=10)


def test_a_worker_that_dies_is_started_again(workers_node: NodeProcess) -> None:
    assert workers_node.admin_key is not None
    before = worker_pids(workers_node)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(workers_node) - {victim}) == WORKERS - 1)
    assert fresh_requests(workers_node, workers_node.admin_key) == [200] * CONNECTIONS


def test_workers_do_not_outlive_a_killed_node(workers_node: NodeProcess) -> None:
    assert workers_node.process is not None
    workers = worker_pids(workers_node)
    assert workers
    workers_node.kill()

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    wait_for(gone)
    # The engine outlives a kill -9 of its node; a restart adopts it and stops it.
    NodeProcess(workers_node.data_dir, extra_args=["--environment", "test"]).start().stop()
