"""Cancel across nodes behind a load balancer, and psql's \\watch.

A tiny TCP balancer in the test sends the session's connection to one node and the
client's later cancel connection to another node sharing the engine, as a real load
balancer may: the cancel must still reach the session (services/cancels.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.conftest import engine_tool, libpq_conninfo, make_dsn
from tests.integration.postgres.rawclient import RawClient
from tests.nodeproc import NodeProcess


@contextlib.contextmanager
def balancer(first: int, rest: int) -> Iterator[int]:
    """The port of a balancer sending the first connection to ``first``, others to ``rest``."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("balancer.py")), str(first), str(rest)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def _when_running(observer_dsn: str, text: str, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` once a statement containing ``text`` is active on the engine."""

    def wait_then_act() -> None:
        with psycopg.connect(observer_dsn, autocommit=True) as conn:
            for _ in range(600):
                row = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                    "AND pid <> pg_backend_pid()",
                    (f"%{text}%",),
                ).fetchone()
                if row:
                    break
                time.sleep(0.05)
        action()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("port_name", "method"),
    [("postgres", "cancel"), ("postgres", "cancel_safe"), ("postgres_txn", "cancel_safe")],
)
def test_cancel_landing_on_another_node(
    node: NodeProcess, second_node: NodeProcess, rw_key: str, port_name: str, method: str
) -> None:
    with (
        balancer(node.ports[port_name], second_node.ports[port_name]) as port,
        psycopg.connect(make_dsn(port, rw_key), autocommit=True) as conn,
    ):
        text = f"pg_sleep(60) /* cross-node {port_name} {method} */"
        thread = _when_running(
            make_dsn(node.ports["postgres"], rw_key), text, getattr(conn, method)
        )
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"SELECT {text}")
        thread.join()
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)


def test_psql_sigint_cancel_lands_on_another_node(
    node: NodeProcess, second_node: NodeProcess, rw_key: str, psql: str
) -> None:
    text = "pg_sleep(60) /* cross-node psql */"
    with balancer(node.ports["postgres"], second_node.ports["postgres"]) as port:
        _psql_interrupted(psql, port, node, rw_key, text)


def _psql_interrupted(psql: str, port: int, node: NodeProcess, rw_key: str, text: str) -> None:
    process = subprocess.Popen(
        [psql, libpq_conninfo(port), "-X", "-c", f"SELECT {text}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGPASSWORD": rw_key},
    )
    try:
        interrupt = lambda: process.send_signal(signal.SIGINT)  # noqa: E731
        _when_running(make_dsn(node.ports["postgres"], rw_key), text, interrupt).join()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "canceling statement due to user request" in stderr


def test_wrong_key_on_another_node_cancels_nothing(
    node: NodeProcess, second_node: NodeProcess, rw_key: str
) -> None:
    with psycopg.connect(make_dsn(node.ports["postgres"], rw_key)) as conn:
        pid = conn.info.backend_pid

        def wrong_cancels() -> None:
            time.sleep(0.3)
            for secret in (b"\0\0\0\0", b"\1\2\3\4"):
                with RawClient(second_node.ports["postgres"]) as client:
                    body = struct.pack("!ii", 80877102, pid) + secret
                    client.send(struct.pack("!i", len(body) + 4) + body)
                    assert client.file.read() == b""

        thread = threading.Thread(target=wrong_cancels)
        thread.start()
        assert conn.execute("SELECT pg_sleep(1.5), 'survived'").fetchone() == ("", "survived")
        thread.join()


# psql \watch


def test_psql_watch_with_a_count(pg_port: int, rw_key: str) -> None:
    # \watch c=N needs psql >= 16: the engine's own psql (Debian's is 15).
    result = subprocess.run(
        [engine_tool("psql"), libpq_conninfo(pg_port), "-X", "-A", "-t", "-f", "-"],
        input="SELECT 'tick' || 1 \\watch i=0.1 c=3\nSELECT 'after';\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": rw_key},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines.count("tick1") == 3
    assert lines[-1] == "after"


def test_psql_watch_until_sigint(pg_port: int, rw_key: str, psql: str) -> None:
    # Debian's psql 15: \watch 0.1 repeats until interrupted (Ctrl-C ends the script).
    process = subprocess.Popen(
        [psql, libpq_conninfo(pg_port), "-X", "-A", "-t", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGPASSWORD": rw_key},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write("SELECT 'tick' || 2 \\watch 0.1\n")
        process.stdin.flush()
        ticks = 0
        while ticks < 4:
            line = process.stdout.readline()
            assert line, "psql stopped watching by itself"
            ticks += line.strip() == "tick2"
        process.send_signal(signal.SIGINT)
        process.stdin.close()
        process.wait(timeout=60)
        stderr = process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert "ERROR" not in stderr and "FATAL" not in stderr, stderr
    # The session's engine connection is back to idle: the gateway is still fine.
    with psycopg.connect(make_dsn(pg_port, rw_key)) as conn:
        assert conn.execute("SELECT 'after watch'").fetchone() == ("after watch",)
