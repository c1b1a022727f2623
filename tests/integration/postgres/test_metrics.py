"""Relayed traffic in the metrics: spliced sessions and transaction-mode clients (counted by
the kernel) included."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.integration.postgres.conftest import make_dsn
from tests.nodeproc import NodeProcess


def _metric(node: NodeProcess, pattern: str) -> float:
    return node.metric(pattern) or 0.0


def _traffic(node: NodeProcess) -> tuple[float, float, float]:
    return (
        _metric(node, r'heliosdb_pg_bytes_total\{direction="in"\}'),
        _metric(node, r'heliosdb_pg_bytes_total\{direction="out"\}'),
        _metric(node, "heliosdb_pg_round_trips_total"),
    )


@pytest.mark.parametrize("port", ["postgres", "postgres_txn"])
def test_session_traffic_reaches_the_metrics_live_and_after(
    node: NodeProcess, rw_key: str, port: str
) -> None:
    """Session port: a spliced session; transaction port: a client whose relay counts
    nothing itself either (no idle timeout): both counted by the kernel."""
    before_in, before_out, before_trips = _traffic(node)
    query = "SELECT repeat('x', 200000) /* " + "q" * 5000 + " */"
    with psycopg.connect(make_dsn(node.ports[port], rw_key), autocommit=True) as conn:
        for _ in range(3):
            assert conn.execute(query).fetchone() == ("x" * 200000,)
        for _ in range(40):  # the session is still open (the client's last ACK may trail)
            bytes_in, bytes_out, trips = _traffic(node)
            if bytes_out >= before_out + 3 * 200000:
                break
            time.sleep(0.05)
        assert bytes_in >= before_in + 3 * len(query)
        assert bytes_out >= before_out + 3 * 200000
        assert trips >= before_trips + 3
    ended = _metric(node, "heliosdb_pg_sessions_total")
    for _ in range(100):  # the session is counted out just after its socket closed
        if _metric(node, "heliosdb_pg_sessions_total") > ended:
            break
        time.sleep(0.05)
    after_in, after_out, after_trips = _traffic(node)
    assert after_in >= bytes_in and after_out >= bytes_out and after_trips >= trips
