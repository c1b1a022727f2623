"""The wire gateway in a node's worker processes (``--workers 2``): both ports are served by
every process (SO_REUSEPORT), client limits hold across them (counted in the engine), and
a CancelRequest reaches the session whichever process it lands on."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.conftest import make_dsn
from tests.nodeproc import NodeProcess, serving_pids

PER_PRINCIPAL = 8  # with 8 connections, all landing on one of two processes is 1 in 128


@pytest.fixture(scope="module")
def workers_node(
    node: NodeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("pg-workers") / "data"
    process = node.beside(
        data_dir,
        {"HELIOSDB_POSTGRES__MAX_CONNECTIONS_PER_PRINCIPAL": str(PER_PRINCIPAL)},
        ("--workers", "2"),
    )
    yield process
    if process.process is not None and process.process.poll() is None:
        process.stop()


def new_key(make_key: Callable[..., str]) -> str:
    """A key made just now, used at once: whichever process a login lands on has not seen
    it yet, and must reload its key list rather than refuse it (services/keys.py
    ``scram_candidates``)."""
    return make_key()


def refused(dsn: str) -> str:
    """The FATAL message of a refused login (libpq gives no SQLSTATE for those)."""
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(dsn).close()
    return str(caught.value)


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def open_sessions(stack: ExitStack, dsn: str, count: int) -> None:
    """``count`` more sessions, each retried while sessions just closed are still being
    counted out (that happens in the background, after the socket closed)."""
    for _ in range(count):
        deadline = time.monotonic() + 20
        while True:
            try:
                stack.enter_context(psycopg.connect(dsn))
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "a session was never counted out"
                time.sleep(0.2)


@pytest.mark.parametrize("port_name", ["postgres", "postgres_txn"])
def test_the_per_principal_limit_holds_across_processes(
    workers_node: NodeProcess, make_key: Callable[..., str], port_name: str
) -> None:
    port = workers_node.ports[port_name]
    first, second = make_dsn(port, make_key()), make_dsn(port, new_key(make_key))
    with ExitStack() as stack:
        for dsn in (first, second):
            for _ in range(PER_PRINCIPAL):
                conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
                assert conn.execute("SELECT 1").fetchone() == (1,)
        # 16 connections of two principals: both processes hold some (all on one: 2**-15).
        assert len(set(serving_pids(port))) == 2
        for dsn in (first, second):
            assert "too many connections for" in refused(dsn)
        stack.pop_all().close()
    # Every ended session was counted out, on whichever process held it.
    with ExitStack() as stack:
        open_sessions(stack, first, PER_PRINCIPAL)
        assert "too many connections for" in refused(first)


def test_a_cancel_reaches_the_session_on_either_process(
    workers_node: NodeProcess, make_key: Callable[..., str]
) -> None:
    """Four cancels, each on a new connection that may land on the other process."""
    dsn = make_dsn(workers_node.ports["postgres"], new_key(make_key))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for attempt in range(4):
            text = f"pg_sleep(60) /* workers cancel {attempt} */"

            def cancel_when_running(text: str = text) -> None:
                with psycopg.connect(dsn, autocommit=True) as observer:
                    for _ in range(200):
                        running = observer.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s",
                            (f"%{text}%",),
                        ).fetchone()
                        if running and running[0]:
                            break
                        time.sleep(0.05)
                conn.cancel()

            thread = threading.Thread(target=cancel_when_running)
            thread.start()
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(f"SELECT {text}")
            thread.join()
            assert time.monotonic() - started < 30
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)


def test_a_dead_workers_clients_stop_counting(
    workers_node: NodeProcess, make_key: Callable[..., str]
) -> None:
    """kill -9 a worker holding sessions: once it is gone they count for nothing."""
    port = workers_node.ports["postgres"]
    dsn = make_dsn(port, new_key(make_key))
    worker = min(workers_node.worker_pids())
    with ExitStack() as stack:
        for _ in range(5):  # until the worker holds some of them (each try: 255 in 256)
            open_sessions(stack, dsn, PER_PRINCIPAL)
            if worker in serving_pids(port):
                break
            stack.close()
        assert worker in serving_pids(port)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: worker not in serving_pids(port))
        survivors = len(serving_pids(port))
        assert survivors < PER_PRINCIPAL
        # The worker's sessions died with it: as many new ones as it held are admitted.
        open_sessions(stack, dsn, PER_PRINCIPAL - survivors)
        assert "too many connections for" in refused(dsn)
