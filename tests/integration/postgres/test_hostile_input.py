"""Huge declared lengths and clients that never read, on both PostgreSQL ports.

A declared length is not an allocation, and a client that does not read its replies
stops being read: the node goes on answering others either way.
"""

from __future__ import annotations

import socket
import struct

import psycopg
import pytest

from tests.integration.postgres.conftest import make_dsn
from tests.integration.postgres.rawclient import RawClient, error_fields, message
from tests.nodeproc import NodeProcess

MODES = ["postgres", "postgres_txn"]


def _answers(node: NodeProcess, mode: str, key: str) -> None:
    with psycopg.connect(make_dsn(node.ports[mode], key)) as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", MODES)
def test_a_message_length_past_a_gibibyte_closes_the_connection(
    node: NodeProcess, rw_key: str, mode: str
) -> None:
    with RawClient(node.ports[mode]) as client:
        assert client.login(rw_key)[-1][0] == b"Z"
        client.send(b"Q" + struct.pack("!i", 2**31 - 1) + b"SELECT 1")
        replies = client.read_until_closed()
    if mode == "postgres_txn":  # the gateway judges it
        [(kind, body)] = replies
        assert kind == b"E"
        assert error_fields(body)["C"] == "08P01"
        assert error_fields(body)["M"] == "invalid message length"
    else:  # the engine does, and says nothing, as PostgreSQL does
        assert replies == []
    _answers(node, mode, rw_key)


@pytest.mark.parametrize("mode", MODES)
def test_queries_sent_without_reading_stop_being_read(
    node: NodeProcess, rw_key: str, mode: str
) -> None:
    with RawClient(node.ports[mode]) as client:
        client.login(rw_key)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sock.setblocking(False)
        queries = message(b"Q", b"SELECT repeat('x', 1000) FROM generate_series(1, 100)\0") * 1000
        sent = 0
        try:  # until the node stops reading: 20 MB of queries would be 30 GB of replies
            while sent < 20_000_000:
                sent += client.sock.send(queries)
        except BlockingIOError:
            pass
        assert sent < 20_000_000
        _answers(node, mode, rw_key)
