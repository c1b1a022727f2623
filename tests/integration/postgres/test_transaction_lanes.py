"""Transaction-mode lanes (``postgres.lanes``): quick SELECTs of several clients share engine
connections, each client gets its own replies in order, a slow query holds no one up for
long, and a lane's trouble reaches only the clients whose queries were on it. Nodes here
run two lanes per pool."""

from __future__ import annotations

import select
import socket
import struct
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.rawclient import RawClient, error_fields, message
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def laned(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data: Path = tmp_path_factory.mktemp("pg-lanes") / "data"
    yield from node.running_beside(data, {"HELIOSDB_POSTGRES__LANES": "2"})


@pytest.fixture
def port(laned: NodeProcess) -> int:
    return laned.ports["postgres_txn"]


def _query(text: str) -> bytes:
    return message(b"Q", text.encode() + b"\0")


def _answer(client: RawClient) -> list[tuple[bytes, bytes]]:
    """One Query's reply, up to its ReadyForQuery."""
    out = []
    while True:
        kind, body = client.read()
        out.append((kind, body))
        if kind in (b"Z", b""):
            return out


def _values(reply: list[tuple[bytes, bytes]]) -> list[str]:
    """The first column of each row."""
    values = []
    for kind, body in reply:
        if kind == b"D":
            (length,) = struct.unpack("!i", body[2:6])
            values.append(body[6 : 6 + length].decode())
    return values


def _login(port: int, key: str, app: str) -> RawClient:
    client = RawClient(port)
    client.login(key, application_name=app)
    return client


def _lane_queries(node: NodeProcess) -> float:
    return node.metric(r'heliosdb_pg_lane_queries_total\{role="[a-z_]+"\}') or 0.0


def _quick_reads(client: RawClient, count: int) -> None:
    """``count`` quick reads, each answered with its own value."""
    for i in range(count):
        client.send(_query(f"SELECT {i}"))
        assert _values(_answer(client)) == [str(i)]


def _warm(node: NodeProcess, client: RawClient) -> None:
    """Quick reads until one goes down a lane: this client's pool has its lanes open."""
    for _ in range(100):
        before = _lane_queries(node)
        _quick_reads(client, 1)
        if _lane_queries(node) > before:
            return
        select.select([], [], [], 0.02)
    raise AssertionError("no query went down a lane")


def _down_a_lane(node: NodeProcess, client: RawClient, text: str) -> None:
    """Send ``text`` (a shape never seen) once the lanes are open, and see it take one."""
    _warm(node, client)
    before = _lane_queries(node)
    client.send(_query(text))
    select.select([], [], [], 0.1)  # it runs on its lane
    assert _lane_queries(node) == before + 1


def _waiting(client: RawClient) -> bool:
    """Nothing has come for this client yet."""
    return not select.select([client.sock], [], [], 0)[0]


def test_many_clients_share_two_engine_connections_and_get_their_own_replies(
    port: int, rw_key: str
) -> None:
    app = f"lanes_{uuid.uuid4().hex[:8]}"
    wrong: list[str] = []
    late_backends: set[str] = set()  # once the lanes are open

    def run(n: int) -> None:
        with _login(port, rw_key, app) as client:
            for i in range(300):
                client.send(_query(f"SELECT '{n}:{i}:' || pg_backend_pid()"))
                reply = _answer(client)
                mine, _, backend = (_values(reply) or [""])[0].rpartition(":")
                if mine != f"{n}:{i}" or reply[-1] != (b"Z", b"I"):
                    wrong.append(f"{n}:{i} got {reply}")
                if i >= 200:
                    late_backends.add(backend)

    with ThreadPoolExecutor(8) as clients:
        list(clients.map(run, range(8)))
    assert wrong == []
    assert 1 <= len(late_backends) <= 2  # the two lanes (each client its own without them)


def test_what_follows_a_lane_query_waits_for_its_reply(
    laned: NodeProcess, port: int, rw_key: str
) -> None:
    """A client's later messages come after its lane query: a BEGIN sent while it runs
    waits for its reply, then takes the pool's way, and its transaction stays on one
    connection; a quick SELECT follows it down the lane."""
    with _login(port, rw_key, f"lanes_{uuid.uuid4().hex[:8]}") as client:
        _warm(laned, client)
        before = _lane_queries(laned)
        client.send(_query(f"SELECT 'a', pg_sleep(0.3), '{uuid.uuid4().hex}'"))
        select.select([], [], [], 0.1)  # it runs on its lane
        client.send(_query("SELECT 'b'"))
        select.select([], [], [], 0.1)  # 'b' arrives alone: it follows 'a' down the lane
        client.send(
            _query("BEGIN")
            + _query("SELECT 'c'")
            + _query("SELECT pg_backend_pid()::text")
            + _query("SELECT pg_backend_pid()::text")
            + _query("COMMIT")
            + _query("SELECT 'd'")
        )
        replies = [_answer(client) for _ in range(8)]
        assert _lane_queries(laned) >= before + 2  # 'a' and 'b'
    assert [_values(r) for r in replies[:2]] == [["a"], ["b"]]
    assert replies[2][-1] == (b"Z", b"T")
    assert _values(replies[3]) == ["c"]
    assert _values(replies[4]) == _values(replies[5])  # one connection inside the transaction
    assert replies[6][-1] == (b"Z", b"I")
    assert _values(replies[7]) == ["d"]


def test_a_slow_query_holds_no_other_client_up(laned: NodeProcess, port: int, rw_key: str) -> None:
    app = f"lanes_{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    with _login(port, rw_key, app) as sleeper, _login(port, rw_key, app) as other:
        # A shape never seen: it takes a lane, which then takes no more queries.
        _down_a_lane(laned, sleeper, f"SELECT pg_sleep(3), '{tag}'")
        _quick_reads(other, 30)
        assert _waiting(sleeper)
        assert _values(_answer(sleeper)) == [""]
        # Now known slow: the same shape takes the pool's way, not a lane.
        sleeper.send(_query(f"SELECT pg_sleep(2), '{tag}'"))
        _quick_reads(other, 30)
        assert _waiting(sleeper)
        assert _answer(sleeper)[-1] == (b"Z", b"I")


def test_a_client_gone_mid_query_costs_the_others_nothing(
    laned: NodeProcess, port: int, rw_key: str
) -> None:
    app = f"lanes_{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        leaver = _login(port, rw_key, app)
        _warm(laned, leaver)
        leaver.send(_query(f"SELECT pg_sleep(0.3), '{uuid.uuid4().hex}'"))
        leaver.close()
    with _login(port, rw_key, app) as client:
        _quick_reads(client, 50)


def test_a_client_not_reading_holds_only_its_lane(
    laned: NodeProcess, port: int, rw_key: str
) -> None:
    """A big reply the client does not read pauses the lane it came down (what the node
    holds stays bounded); the other clients go on, and so does the lane once it leaves."""
    app = f"lanes_{uuid.uuid4().hex[:8]}"
    with _login(port, rw_key, app) as other:
        hog = _login(port, rw_key, app)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _down_a_lane(laned, hog, f"SELECT repeat('x', 50000000), '{uuid.uuid4().hex}'")
        _quick_reads(other, 100)
        hog.close()
        _quick_reads(other, 100)


def test_a_cancel_stops_a_query_that_runs_long_on_a_lane(
    laned: NodeProcess, port: int, rw_key: str
) -> None:
    client = RawClient(port)
    with client:
        login = client.login(rw_key, application_name=f"lanes_{uuid.uuid4().hex[:8]}")
        key = next(body for kind, body in login if kind == b"K")
        _down_a_lane(laned, client, f"SELECT pg_sleep(30), '{uuid.uuid4().hex}'")
        with socket.create_connection(("127.0.0.1", port)) as canceller:
            select.select([], [], [], 0.5)  # the query has run long
            canceller.sendall(struct.pack("!ii", 16, 80877102) + key)
        reply = _answer(client)
    errors = [error_fields(body) for kind, body in reply if kind == b"E"]
    assert [e["C"] for e in errors] == ["57014"]


def test_a_lane_the_engine_closes_fails_only_its_queries(
    laned: NodeProcess, port: int, rw_key: str
) -> None:
    app = f"lanes_{uuid.uuid4().hex[:8]}"
    with _login(port, rw_key, app) as victim:
        _down_a_lane(laned, victim, f"SELECT pg_sleep(30), '{uuid.uuid4().hex}'")
        with psycopg.connect(laned.engine_url, autocommit=True) as admin:
            for _ in range(100):
                pids = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                    " AND query LIKE 'SELECT pg_sleep(30)%%' AND state = 'active'",
                    (app,),
                ).fetchall()
                if pids:
                    break
                select.select([], [], [], 0.05)
            assert len(pids) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", pids[0])
        kinds = [kind for kind, _ in victim.read_until_closed()]
        assert b"E" in kinds and b"D" not in kinds
    with _login(port, rw_key, app) as client:
        _quick_reads(client, 20)
