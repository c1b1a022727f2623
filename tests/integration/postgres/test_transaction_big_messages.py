"""Transaction pooling: messages too big to hold.

A Bind, CopyData or FunctionCall that arrives in parts passes on to the engine connection
as it arrives (the port needs only a Bind's names, to rewrite the statement's), with the
sockets' backpressure: the node's memory does not grow with it. Any other message (a
Query, a Parse ...) is held whole to be read, up to ``postgres.max_message_bytes``: a
longer one gets FATAL 54000 and the connection closes.
"""

from __future__ import annotations

import struct
import uuid

import psycopg
import pytest

from heliosdb.settings import PostgresSettings
from tests.integration.postgres.conftest import make_dsn
from tests.integration.postgres.rawclient import RawClient, message
from tests.integration.postgres.test_transaction_function_call import _oid
from tests.integration.postgres.test_transaction_pooling import (
    POOL_SIZE,
    SYNC,
    _beside_full_pool,
    _pid,
    _replies,
)
from tests.nodeproc import MemoryGrowth, NodeProcess, serving_pids

BIG = 300 * 1024 * 1024
PIECE = 1 << 20
BYTEA = 17


@pytest.fixture(scope="module")
def txn_port(node: NodeProcess) -> int:
    return node.ports["postgres_txn"]


def _serving(port: int) -> int:
    """The process serving the test's one connection to ``port``."""
    (pid,) = set(serving_pids(port))
    return pid


def _send_in_pieces(client: RawClient, head: bytes, size: int, tail: bytes = b"") -> None:
    """``head``, then ``size`` bytes of body, a piece at a time, then ``tail``."""
    client.send(head)
    piece = b"\xa5" * PIECE
    for sent in range(0, size, PIECE):
        client.send(piece[: min(PIECE, size - sent)])
    client.send(tail)


def test_txn_a_300_mb_bind_passes_on_with_bounded_memory(txn_port: int, rw_key: str) -> None:
    """A Bind of a 300 MB bytea parameter (binary) to a statement that returns its length:
    the engine gets it whole and answers, and the node's memory grows by far less than
    the message."""
    with RawClient(txn_port, timeout=120) as client:
        client.login(rw_key)
        parse = message(b"P", b"big\0SELECT octet_length($1)\0" + struct.pack("!hi", 1, BYTEA))
        client.send(parse + SYNC)
        assert [k for k, _ in _replies(client, 1)] == [b"1", b"Z"]
        # Portal, statement, one binary parameter format, one parameter, then its bytes;
        # after them no result formats, Execute, Sync.
        head = b"\0big\0" + struct.pack("!hhhi", 1, 1, 1, BIG)
        bind_length = 4 + len(head) + BIG + 2
        execute = message(b"E", b"\0\0\0\0\0")
        with MemoryGrowth(_serving(txn_port)) as memory:
            _send_in_pieces(client, b"B" + struct.pack("!i", bind_length) + head, BIG,
                            b"\0\0" + execute + SYNC)  # fmt: skip
            reply = _replies(client, 1)
        assert [k for k, _ in reply] == [b"2", b"D", b"C", b"Z"], reply
        assert reply[1][1][6:] == str(BIG).encode()
        assert _pid(client)  # the session goes on
    assert memory.growth < 100 * 1024 * 1024


def test_txn_a_query_longer_than_the_limit_is_refused(txn_port: int, rw_key: str) -> None:
    """A 300 MB Query, past ``postgres.max_message_bytes``: FATAL 54000 as soon as its
    length has come; the rest of the message is read and dropped, then the connection
    closes; the node goes on."""
    with RawClient(txn_port) as client:
        client.login(rw_key)
        with MemoryGrowth(_serving(txn_port)) as memory:
            client.send(b"Q" + struct.pack("!i", BIG + 4) + b"SELECT '")
            kind, body = client.read()
            assert kind == b"E" and b"C54000\0" in body, body
            limit = PostgresSettings().max_message_bytes
            assert f"longer than the {limit} bytes".encode() in body
            _send_in_pieces(client, b"", BIG - len(b"SELECT '"))
            assert client.read() == (b"", b"")  # closed
    assert memory.growth < 100 * 1024 * 1024
    with RawClient(txn_port) as other:
        other.login(rw_key)
        assert _pid(other)


def test_txn_big_copy_data_and_function_calls_pass_on(node: NodeProcess, rw_key: str) -> None:
    """CopyData and FunctionCall messages longer than what the port passes on as they
    arrive (256 KiB), sent in pieces: the engine gets them whole, the client its answers,
    and the engine connection goes back to the pool after each (every other connection
    of the pool busy, the next client to need one takes it). CopyData outside a COPY,
    behind a Query not yet answered, is ignored by the engine, as it is directly."""
    port = node.ports["postgres_txn"]
    table = f"big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(make_dsn(port, rw_key), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (v text)")
    rows = b"".join(b"%07d\n" % i for i in range(200_000))  # 1.6 MB
    app = f"big_{uuid.uuid4().hex[:8]}"
    with _beside_full_pool(port, rw_key, app, 2, busy=POOL_SIZE - 1) as (_, (client, other)):
        oid = _oid(client, "octet_length(bytea)")
        for _ in range(2):
            pid = _pid(client)
            client.send(message(b"Q", f"COPY {table} FROM STDIN\0".encode()))
            assert client.read()[0] == b"G"
            client.send(b"d" + struct.pack("!i", len(rows) + 4))
            for at in range(0, len(rows), 100_000):
                client.send(rows[at : at + 100_000])
            client.send(message(b"c", b""))
            assert [k for k, _ in _replies(client, 1)] == [b"C", b"Z"]
            assert _pid(other) == pid  # given back after the COPY
            pid = _pid(client)
            # FunctionCall: one binary argument of 2 MB, a text result.
            head = struct.pack("!ihhhi", oid, 1, 1, 1, 2 * PIECE)
            _send_in_pieces(client, b"F" + struct.pack("!i", 4 + len(head) + 2 * PIECE + 2)
                            + head, 2 * PIECE, b"\0\0")  # fmt: skip
            assert _replies(client, 1) == [(b"V", struct.pack("!i", 7) + b"2097152"), (b"Z", b"I")]
            assert _pid(other) == pid  # given back after the call
            # CopyData with no COPY, right behind a Query: ignored by the engine.
            client.send(message(b"Q", b"SELECT 1\0") + b"d" + struct.pack("!i", len(rows) + 4))
            client.send(rows)
            client.send(message(b"Q", b"SELECT 2\0"))
            reply = _replies(client, 2)
            assert [k for k, _ in reply] == [b"T", b"D", b"C", b"Z"] * 2, reply
            assert (reply[1][1][6:], reply[5][1][6:]) == (b"1", b"2")
    with psycopg.connect(make_dsn(port, rw_key), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (400_000,)
        conn.execute(f"DROP TABLE {table}")
