"""Worker processes: ``--workers 3`` serves the REST and WebSocket APIs from three processes.

The node and its two workers share the two ports (SO_REUSEPORT) and the engine; any of
them may answer a request or hold a subscription, and what a client sees must not
depend on which did.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.redis.conftest import connect as connect_redis
from tests.integration.websocket.wsclient import connect, events, subscribe
from tests.nodeproc import NodeProcess, serving_pids

WORKERS = 3
CONNECTIONS = 24  # fresh connections: with three processes, all landing on one is ~1e-11


@pytest.fixture(scope="module")
def workers_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("workers") / "data"
    node = NodeProcess(
        data_dir, extra_args=["--environment", "test", "--workers", str(WORKERS)]
    ).start()
    yield node
    if node.process is not None and node.process.poll() is None:
        node.stop()


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def fresh_requests(
    node: NodeProcess, key: str, count: int = CONNECTIONS, sql: str = "SELECT 1"
) -> list[int]:
    """``count`` queries, each on a new connection (so each may reach another process)."""
    statuses = []
    for _ in range(count):
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
            response = client.post(f"{node.api}/query", json={"sql": sql})
            statuses.append(response.status_code)
    return statuses


def test_the_node_starts_its_workers(workers_node: NodeProcess) -> None:
    assert len(workers_node.worker_pids()) == WORKERS - 1
    announced = f"heliosdb: http, websocket and redis served by {WORKERS} processes\n"
    assert announced in workers_node.output


def test_connections_are_spread_over_the_processes(workers_node: NodeProcess) -> None:
    assert workers_node.admin_key is not None and workers_node.process is not None
    clients = [
        httpx.Client(headers={"Authorization": f"Bearer {workers_node.admin_key}"})
        for _ in range(CONNECTIONS)
    ]
    try:
        for client in clients:  # each client holds its connection open
            assert client.get(f"{workers_node.api}/health").status_code == 200
        serving = set(serving_pids(workers_node.ports["http"]))
    finally:
        for client in clients:
            client.close()
    assert serving <= workers_node.worker_pids() | {workers_node.process.pid}
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


async def test_websocket_subscribers_on_every_process_get_the_events(
    workers_node: NodeProcess,
) -> None:
    assert workers_node.admin_key is not None and workers_node.process is not None
    key, table = workers_node.admin_key, f"workers_{uuid.uuid4().hex[:8]}"
    url = f"ws://127.0.0.1:{workers_node.ports['websocket']}/ws"
    create = f"CREATE TABLE {table} (id int PRIMARY KEY)"
    assert fresh_requests(workers_node, key, 1, create) == [200]
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(url, key)) for _ in range(12)]
        for ws in sockets:
            await subscribe(ws, table)
        assert len(set(serving_pids(workers_node.ports["websocket"]))) >= 2
        insert = f"INSERT INTO {table} VALUES (1), (2)"
        assert fresh_requests(workers_node, key, 1, insert) == [200]
        for ws in sockets:
            got = await events(ws, 2)
            assert [m["data"]["row"]["id"] for m in got] == [1, 2]


def test_redis_clients_on_every_process_share_keys_messages_and_wakeups(
    workers_node: NodeProcess,
) -> None:
    port, prefix = workers_node.ports["redis"], f"workers:{uuid.uuid4().hex[:8]}"
    clients = [connect_redis(port, workers_node.admin_key) for _ in range(12)]
    try:
        for client in clients:  # each holds its own connection
            assert client.ping()
        assert len(set(serving_pids(port))) >= 2
        clients[0].set(f"{prefix}:k", "v")
        assert {client.get(f"{prefix}:k") for client in clients} == {b"v"}

        subscribers = [client.pubsub() for client in clients[:6]]
        for subscriber in subscribers:
            subscriber.subscribe(f"{prefix}:ch")
            assert subscriber.get_message(timeout=10)["type"] == "subscribe"  # type: ignore[index]
        assert clients[-1].publish(f"{prefix}:ch", "hello") == len(subscribers)
        for subscriber in subscribers:
            message = subscriber.get_message(timeout=10)
            assert message is not None and message["data"] == b"hello"
            subscriber.close()

        with ThreadPoolExecutor(len(clients) // 2) as pool:
            popped = [pool.submit(client.blpop, [f"{prefix}:list"], 20) for client in clients[:5]]
            time.sleep(0.5)  # the poppers block first
            clients[-1].rpush(f"{prefix}:list", *range(5))
            assert sorted(int(p.result()[1]) for p in popped) == list(range(5))  # type: ignore[index]
    finally:
        for client in clients:
            client.close()


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
    before = workers_node.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers_node.worker_pids() - {victim}) == WORKERS - 1)
    assert fresh_requests(workers_node, workers_node.admin_key) == [200] * CONNECTIONS


def test_workers_do_not_outlive_a_killed_node(workers_node: NodeProcess) -> None:
    assert workers_node.process is not None
    workers = workers_node.worker_pids()
    assert workers
    capture = workers_node.capture_pids()  # the change-capture process leaves with it too
    assert len(capture) == 1
    workers |= capture
    workers_node.kill()

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    wait_for(gone)
    # The engine outlives a kill -9 of its node; a restart adopts it and stops it.
    NodeProcess(workers_node.data_dir, extra_args=["--environment", "test"]).start().stop()
