"""Transaction-mode clients on a node with ``postgres.idle_timeout`` set: the relay counts
their traffic itself (the idle sweep reads its counters), so a client whose statement
runs longer than the timeout keeps its connection, an idle one is told why and closed,
and the bytes and round trips reach the metrics. Nodes here allow 1 second idle."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.conftest import make_dsn
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def hasty(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data: Path = tmp_path_factory.mktemp("pg-hasty") / "data"
    yield from node.running_beside(data, {"HELIOSDB_POSTGRES__IDLE_TIMEOUT": "1"})


def test_a_statement_longer_than_the_idle_timeout_runs_to_its_end(
    hasty: NodeProcess, rw_key: str
) -> None:
    dsn = make_dsn(hasty.ports["postgres_txn"], rw_key)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_sleep(3), 1").fetchone() == ("", 1)
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_an_idle_client_is_told_and_closed(hasty: NodeProcess, rw_key: str) -> None:
    dsn = make_dsn(hasty.ports["postgres_txn"], rw_key)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(3)
        with pytest.raises(psycopg.OperationalError, match="idle-session timeout"):
            conn.execute("SELECT 1")


def test_counted_traffic_reaches_the_metrics(hasty: NodeProcess, rw_key: str) -> None:
    def sample(name: str) -> float:
        return hasty.metric(name) or 0.0

    before_in = sample(r'heliosdb_pg_bytes_total\{direction="in"\}')
    before_out = sample(r'heliosdb_pg_bytes_total\{direction="out"\}')
    before_trips = sample("heliosdb_pg_round_trips_total")
    query = "SELECT repeat('x', 20000) /* " + "q" * 500 + " */"
    with psycopg.connect(make_dsn(hasty.ports["postgres_txn"], rw_key), autocommit=True) as conn:
        for _ in range(3):
            assert conn.execute(query).fetchone() == ("x" * 20000,)
        assert sample(r'heliosdb_pg_bytes_total\{direction="in"\}') >= before_in + 3 * len(query)
        assert sample(r'heliosdb_pg_bytes_total\{direction="out"\}') >= before_out + 3 * 20000
        assert sample("heliosdb_pg_round_trips_total") >= before_trips + 3


def test_a_big_bound_value_passes_on_and_is_counted(hasty: NodeProcess, rw_key: str) -> None:
    """A Bind longer than what the port holds before passing it on (a 3 MB bytea value,
    sent in parts): the engine gets it whole, the relay counts its bytes, and the
    session goes on."""
    before_in = hasty.metric(r'heliosdb_pg_bytes_total\{direction="in"\}') or 0.0
    value = bytes(range(256)) * 12288
    with psycopg.connect(make_dsn(hasty.ports["postgres_txn"], rw_key), autocommit=True) as conn:
        row = conn.execute("SELECT octet_length(%b), md5(%b)", (value, value)).fetchone()
        assert row == (len(value), hashlib.md5(value).hexdigest())
        assert conn.execute("SELECT 2").fetchone() == (2,)
        after_in = hasty.metric(r'heliosdb_pg_bytes_total\{direction="in"\}') or 0.0
        assert after_in >= before_in + 2 * len(value)
