"""Transaction pooling (the node's second PostgreSQL port): many clients, few engine connections.

Protocol-level prepared statements (psycopg's _pg3_N, asyncpg's cache, pgbench -M prepared)
must keep working whichever engine connection serves the next transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from heliosdb.settings import PostgresSettings
from tests.integration.postgres.conftest import engine_tool, make_dsn
from tests.integration.postgres.rawclient import RawClient, message
from tests.nodeproc import NodeProcess

CLIENTS = 30  # more than postgres.pool_size (20): engine connections are shared


@pytest.fixture(scope="module")
def txn_port(node: NodeProcess) -> int:
    return node.ports["postgres_txn"]


@pytest.fixture(scope="module")
def txn_dsn(txn_port: int, rw_key: str) -> str:
    return make_dsn(txn_port, rw_key)


async def test_txn_asyncpg_statement_cache_across_connections(txn_dsn: str) -> None:
    async def client(i: int) -> None:
        conn = await asyncpg.connect(txn_dsn)
        try:
            for j in range(15):
                assert await conn.fetchval("SELECT $1::int * 1000 + $2::int", i, j) == i * 1000 + j
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(0.001)")
                    row = await conn.fetchrow("SELECT $1::text AS t, $2::int AS n", str(i), j)
                    assert row is not None and (row["t"], row["n"]) == (str(i), j)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))


async def test_txn_asyncpg_unnamed_statements(txn_dsn: str) -> None:
    async def client(i: int) -> None:
        conn = await asyncpg.connect(txn_dsn, statement_cache_size=0)
        try:
            for j in range(10):
                assert await conn.fetchval("SELECT $1::int + $2::int", i, j) == i + j
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))


async def test_txn_psycopg_prepared_and_pipeline(txn_dsn: str) -> None:
    async def client(i: int) -> None:
        async with await psycopg.AsyncConnection.connect(txn_dsn, autocommit=True) as conn:
            for j in range(12):  # past prepare_threshold: _pg3_N named statements
                cursor = await conn.execute("SELECT %s::int - %s::int", (i, j))
                assert await cursor.fetchone() == (i - j,)
            async with conn.pipeline():
                cursors = [await conn.execute("SELECT %s::int", (k,)) for k in range(5)]
            assert [await c.fetchone() for c in cursors] == [(k,) for k in range(5)]

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))


def test_txn_transactions_are_isolated_and_committed(txn_dsn: str) -> None:
    table = f"tx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(txn_dsn, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (id int)")
    with psycopg.connect(txn_dsn) as writer, psycopg.connect(txn_dsn) as reader:
        writer.execute(f"INSERT INTO {table} VALUES (1)")
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        reader.commit()
        writer.commit()
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


def test_txn_copy_both_ways(txn_dsn: str) -> None:
    table = f"tc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(txn_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, v text)")
        with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(3000):
                copy.write_row((i, f"v{i}"))
        with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
            assert sum(1 for _ in copy.rows()) == 3000


async def test_txn_timeout_cancels_and_connection_goes_on(txn_dsn: str) -> None:
    conn = await asyncpg.connect(txn_dsn)
    try:
        with pytest.raises(TimeoutError):
            await conn.fetch("SELECT pg_sleep(30)", timeout=0.5)
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


def test_txn_client_vanishing_mid_transaction_rolls_back(
    txn_port: int, txn_dsn: str, rw_key: str
) -> None:
    table = f"tv_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(txn_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
    client = RawClient(txn_port)
    client.login(rw_key)
    client.send(message(b"Q", f"BEGIN; INSERT INTO {table} VALUES (1)".encode() + b"\0"))
    while client.read()[0] != b"Z":
        pass
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    with psycopg.connect(txn_dsn, autocommit=True) as conn:
        for _ in range(5):  # whichever engine connection serves us, the row never appears
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_txn_pgbench_prepared_many_clients(txn_port: int, rw_key: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sql"
    script.write_text(
        "\\set n random(1, 1000)\nBEGIN;\nSELECT :n::int + 1;\nSELECT :n::text;\nEND;\n"
    )
    env = {**os.environ, "PGPASSWORD": rw_key}
    for mode in ("prepared", "extended", "simple"):
        result = subprocess.run(
            [engine_tool("pgbench"), "-h", "127.0.0.1", "-p", str(txn_port), "-U", "apikey",
             "-n", "-f", str(script), "-M", mode, "-c", "24", "-j", "24", "-t", "20",
             "heliosdb"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "number of transactions actually processed: 480/480" in result.stdout


async def test_txn_session_state_pins_the_client(txn_dsn: str) -> None:
    """SET, LISTEN and temp tables keep working: the client keeps its engine connection."""
    busy = [await asyncpg.connect(txn_dsn) for _ in range(CLIENTS)]
    conn = await asyncpg.connect(txn_dsn)
    other = await asyncpg.connect(txn_dsn)
    try:
        await conn.execute("SET TimeZone = 'Asia/Kathmandu'")
        await conn.execute("CREATE TEMP TABLE scratch (a int)")
        received: asyncio.Queue[str] = asyncio.Queue()
        channel = f"ch_{uuid.uuid4().hex[:8]}"
        await conn.add_listener(channel, lambda *args: received.put_nowait(args[3]))
        for i in range(10):
            # Other clients keep every pooled connection changing hands meanwhile.
            await asyncio.gather(*(b.fetchval("SELECT $1::int", i) for b in busy))
            assert await conn.fetchval("SHOW TimeZone") == "Asia/Kathmandu"
            await conn.execute("INSERT INTO scratch VALUES ($1)", i)
        assert await conn.fetchval("SELECT count(*) FROM scratch") == 10
        await other.execute(f"NOTIFY {channel}, 'pinned'")
        assert await asyncio.wait_for(received.get(), 10) == "pinned"
        # And the state never leaks to anyone else.
        for b in busy:
            assert await b.fetchval("SHOW TimeZone") != "Asia/Kathmandu"
    finally:
        for c in (*busy, conn, other):
            await c.close()


async def test_txn_deallocate_all_then_cached_statement_still_works(txn_dsn: str) -> None:
    conn = await asyncpg.connect(txn_dsn)
    try:
        for i in range(3):
            assert await conn.fetchval("SELECT $1::int + 100", i) == i + 100
        await conn.execute("DEALLOCATE ALL")  # asyncpg's cache still names the statement
        assert await conn.fetchval("SELECT $1::int + 100", 7) == 107
    finally:
        await conn.close()


def _parse(sql: str, name: str = "") -> bytes:
    return message(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def _bind_execute(statement: str = "") -> bytes:
    bind = message(b"B", b"\0" + statement.encode() + b"\0" + b"\0\0" + b"\0\0" + b"\0\0")
    return bind + message(b"E", b"\0\0\0\0\0")


SYNC = message(b"S", b"")


def _replies(client: RawClient, readies: int) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    while readies:
        kind, body = client.read()
        assert kind, out
        out.append((kind, body))
        readies -= kind == b"Z"
    return out


def test_txn_messages_after_the_last_sync_keep_the_connection(txn_port: int, rw_key: str) -> None:
    """A batch sent after a Sync, before that Sync is answered, is answered on the same engine
    connection: the ReadyForQuery of the first Sync does not give the connection back while
    the engine still owes replies (or holds the unnamed statement) the next Sync will end."""
    with RawClient(txn_port) as client, RawClient(txn_port) as other:
        client.login(rw_key)
        other.login(rw_key)
        for i in range(20):
            client.send(_parse(f"SELECT {i}") + _bind_execute() + SYNC
                        + _parse(f"SELECT {i} + 1000") + _bind_execute())  # fmt: skip
            first = _replies(client, 1)
            assert [k for k, _ in first] == [b"1", b"2", b"D", b"C", b"Z"], first
            # Another client's transaction meanwhile: it must get an engine connection
            # that owes it nothing, and must not take this client's.
            other.send(message(b"Q", b"BEGIN\0"))
            assert [k for k, _ in _replies(other, 1)] == [b"C", b"Z"]
            client.send(SYNC)
            second = _replies(client, 1)
            assert [k for k, _ in second] == [b"1", b"2", b"D", b"C", b"Z"], second
            assert second[2][1].endswith(str(i + 1000).encode())
            other.send(message(b"Q", b"COMMIT\0"))
            assert [k for k, _ in _replies(other, 1)] == [b"C", b"Z"]


POOL_SIZE = PostgresSettings().pool_size  # the test node's (default) pool size


def _pid(client: RawClient) -> bytes:
    client.send(message(b"Q", b"SELECT pg_backend_pid()\0"))
    reply = _replies(client, 1)
    assert [k for k, _ in reply] == [b"T", b"D", b"C", b"Z"], reply
    return reply[1][1][6:]


@contextlib.contextmanager
def _full_pool(port: int, key: str, app: str, busy: int) -> Iterator[list[RawClient]]:
    """``busy`` clients of the pool of ``app`` (a startup parameter: a pool of its own),
    each holding an engine connection in an open transaction."""
    with contextlib.ExitStack() as stack:
        holders = [stack.enter_context(RawClient(port)) for _ in range(busy)]
        for holder in holders:
            holder.login(key, application_name=app)
            holder.send(message(b"Q", b"BEGIN\0"))
            assert [k for k, _ in _replies(holder, 1)] == [b"C", b"Z"]
        yield holders


@contextlib.contextmanager
def _beside_full_pool(
    port: int, key: str, app: str, clients: int, busy: int = POOL_SIZE - 2
) -> Iterator[tuple[list[RawClient], list[RawClient]]]:
    """(holders, clients): ``clients`` logged-in clients of the pool of ``app``, whose
    other ``busy`` connections ``_full_pool``'s holders keep busy."""
    with contextlib.ExitStack() as stack:
        holders = stack.enter_context(_full_pool(port, key, app, busy))
        logged = [stack.enter_context(RawClient(port)) for _ in range(clients)]
        for client in logged:
            client.login(key, application_name=app)
        yield holders, logged


def test_txn_extended_protocol_copy_in_gives_the_connection_back(
    txn_port: int, txn_dsn: str, rw_key: str
) -> None:
    """COPY FROM STDIN through Parse/Bind/Execute/Sync, then CopyData, CopyDone, Sync (as
    libpq sends it): the engine answers one ReadyForQuery for the two Syncs, and the
    connection still goes back to the pool (with every other connection of the pool
    busy, the next client to need one takes it)."""
    table = f"tx_{uuid.uuid4().hex[:8]}"
    app = f"copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(txn_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
    with _beside_full_pool(txn_port, rw_key, app, 2, busy=POOL_SIZE - 1) as (_, (client, other)):
        for i in range(3):
            client.send(_parse("SELECT pg_backend_pid()") + _bind_execute()
                        + _parse(f"COPY {table} FROM STDIN") + _bind_execute() + SYNC)  # fmt: skip
            replies: list[tuple[bytes, bytes]] = []
            while not replies or replies[-1][0] != b"G":
                replies.append(client.read())
            assert [k for k, _ in replies] == [b"1", b"2", b"D", b"C", b"1", b"2", b"G"]
            pid = replies[2][1][6:]
            client.send(message(b"d", f"{i}\n".encode()) + message(b"c", b"") + SYNC)
            assert [k for k, _ in _replies(client, 1)] == [b"C", b"Z"]
            # Given back: the pool is full and every other connection is busy, so the
            # next client to need one gets this same engine connection (it would wait,
            # then fail, if the connection still counted as busy).
            assert _pid(other) == pid
    with psycopg.connect(txn_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (3,)


def test_txn_client_keeps_its_engine_connection_between_transactions(
    txn_port: int, rw_key: str
) -> None:
    """Affinity: with room in the pool, each client's transactions go to the engine
    connection it used last (no other client took it meanwhile)."""
    app = f"aff_{uuid.uuid4().hex[:8]}"
    with RawClient(txn_port) as first, RawClient(txn_port) as second:
        first.login(rw_key, application_name=app)
        second.login(rw_key, application_name=app)
        pids = {(_pid(first), _pid(second)) for _ in range(5)}
        assert len(pids) == 1
        ((a, b),) = pids
        assert a != b


def test_txn_parked_connection_is_taken_by_others_without_their_state(
    txn_port: int, rw_key: str
) -> None:
    """A full pool: a client that needs a connection takes another client's parked one;
    that client's next transaction takes one back and works; a pinned connection (session
    state) is never taken, and what a client SET is never seen by another."""
    app = f"steal_{uuid.uuid4().hex[:8]}"
    with _beside_full_pool(txn_port, rw_key, app, 3) as (holders, (pinned, owner, taker)):
        pinned.send(message(b"Q", b"SET application_name = 'pinned-state'\0"))
        assert [k for k, _ in _replies(pinned, 1)] == [b"C", b"S", b"Z"]
        pinned_pid = _pid(pinned)
        owned = _pid(owner)  # the pool is full now: every connection busy, pinned or parked
        for _ in range(3):
            assert _pid(taker) == owned  # owner's parked connection, not the pinned one
            assert _pid(owner) == owned  # taken back from taker, parked in its turn
        taker.send(message(b"Q", b"SHOW application_name\0"))
        shown = _replies(taker, 1)
        assert shown[1][1][6:] == app.encode()
        assert _pid(pinned) == pinned_pid
        # A client waiting for a connection gets the next one given back, at once.
        owner.send(message(b"Q", b"BEGIN\0"))
        assert [k for k, _ in _replies(owner, 1)] == [b"C", b"Z"]
        taker.send(message(b"Q", b"SELECT 1\0"))  # no free or parked connection: waits
        holders[0].send(message(b"Q", b"COMMIT\0"))
        assert [k for k, _ in _replies(holders[0], 1)] == [b"C", b"Z"]
        assert [k for k, _ in _replies(taker, 1)] == [b"T", b"D", b"C", b"Z"]


def test_txn_parked_connection_that_dies_costs_its_client_nothing(
    txn_port: int, rw_key: str
) -> None:
    """The engine connection a client left parked is terminated: the client stays
    connected and its next transaction runs on another engine connection."""
    app = f"dies_{uuid.uuid4().hex[:8]}"
    with RawClient(txn_port) as client, RawClient(txn_port) as killer:
        client.login(rw_key, application_name=app)
        killer.login(rw_key, application_name=app)
        parked = _pid(client)
        query = f"SELECT pg_terminate_backend({int(parked)}, 10000)".encode()
        killer.send(message(b"Q", query + b"\0"))
        reply = _replies(killer, 1)
        assert [k for k, _ in reply] == [b"T", b"D", b"C", b"Z"] and reply[1][1][6:] == b"t"
        for _ in range(3):
            assert _pid(client) not in (parked, b"")


def test_txn_queries_of_one_shape_pin_alike(txn_port: int, rw_key: str) -> None:
    """The Query fast path remembers a query's answer by its shape (digits made 0): a SET
    that differs from an earlier one only in its digits pins its client as the first
    did. With both pinned and the rest of the pool busy, a third client waits for a
    connection given back instead of taking theirs, and sees neither value."""
    app = f"shape_{uuid.uuid4().hex[:8]}"
    with _beside_full_pool(txn_port, rw_key, app, 3) as (holders, (first, second, third)):
        for client, value in ((first, b"1000"), (second, b"2000")):
            client.send(message(b"Q", b"SET statement_timeout = " + value + b"\0"))
            assert [k for k, _ in _replies(client, 1)] == [b"C", b"Z"]
        pids = (_pid(first), _pid(second))
        third.send(message(b"Q", b"SHOW statement_timeout\0"))  # no connection free: waits
        holders[0].send(message(b"Q", b"COMMIT\0"))
        assert [k for k, _ in _replies(holders[0], 1)] == [b"C", b"Z"]
        assert _replies(third, 1)[1][1][6:] == b"0"
        for client, shown in ((first, b"1s"), (second, b"2s")):
            client.send(message(b"Q", b"SHOW statement_timeout\0"))
            assert _replies(client, 1)[1][1][6:] == shown
        assert (_pid(first), _pid(second)) == pids
