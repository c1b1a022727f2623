"""The replication stream's reader (engine/replication.py): keepalives are handled as
they arrive and wake nobody; a transaction wakes the waiting reader once, at its Commit
(or once a good many of its messages wait), and its messages are read in order."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any, cast

import pytest

from heliosdb.engine.replication import ReplicationStream


def _keepalive(end: int, reply: bool = False) -> bytes:
    return b"k" + struct.pack("!QqB", end, 0, reply)


def _xlog(end: int, payload: bytes) -> bytes:
    return b"w" + struct.pack("!QQq", end - len(payload), end, 0) + payload


class _PGconn:
    """What ReplicationStream uses of psycopg's pq.PGconn, with messages queued by hand."""

    socket = -1

    def __init__(self) -> None:
        self.incoming: deque[bytes] = deque()
        self.sent: list[bytes] = []

    def consume_input(self) -> None:
        pass

    def get_copy_data(self, _async: int) -> tuple[int, bytes]:
        if not self.incoming:
            return 0, b""
        data = self.incoming.popleft()
        return len(data), data

    def put_copy_data(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return 1

    def flush(self) -> int:
        return 0


def _stream() -> tuple[ReplicationStream, _PGconn]:
    pgconn = _PGconn()
    return ReplicationStream(cast(Any, pgconn)), pgconn


def test_keepalives_alone_wake_nobody_and_are_answered_when_asked() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.extend([_keepalive(100), _keepalive(200, reply=True)])
    stream._on_readable()
    assert not stream._arrived and stream.received == 200
    assert len(pgconn.sent) == 1 and pgconn.sent[0][:1] == b"r"  # the status asked for
    assert stream.read_nowait() is None


def test_a_transaction_wakes_the_reader_at_its_commit_and_reads_in_order() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.extend([_keepalive(100), _xlog(150, b"B..."), _xlog(160, b"U...")])
    stream._on_readable()  # its Commit has not arrived yet
    assert not stream._arrived and stream.received == 160
    pgconn.incoming.extend([_keepalive(165), _xlog(170, b"C...")])
    stream._on_readable()
    assert stream._arrived and stream.received == 170
    pgconn.incoming.append(_xlog(180, b"B2"))  # the next one, read straight from libpq
    assert [stream.read_nowait() for _ in range(5)] == [b"B...", b"U...", b"C...", b"B2", None]
    assert not pgconn.sent


def test_a_big_transaction_wakes_the_reader_before_its_commit() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.append(_xlog(1, b"B"))
    pgconn.incoming.extend(_xlog(2 + n, b"I%d" % n) for n in range(300))
    stream._on_readable()
    assert stream._arrived and len(stream._held) == 128  # the rest stays in libpq's buffer
    read = [stream.read_nowait() for _ in range(302)]
    assert read == [b"B"] + [b"I%d" % n for n in range(300)] + [None]


def test_messages_taken_while_the_reader_is_busy_keep_their_order() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.extend([_xlog(10, b"B1"), _xlog(11, b"C1")])
    stream._on_readable()
    pgconn.incoming.extend([_xlog(20, b"B2"), _xlog(21, b"C2")])
    stream._on_readable()  # the reader has not taken the first one yet
    assert [stream.read_nowait() for _ in range(5)] == [b"B1", b"C1", b"B2", b"C2", None]


async def test_settle_takes_what_arrived_while_it_slept_in_order() -> None:
    # The leader gathering a batch sleeps once (settle) instead of being woken at each
    # transaction's end (wait): it must read the same messages, in the same order.
    stream, pgconn = _stream()
    pgconn.incoming.extend([_keepalive(100), _xlog(150, b"B1"), _xlog(160, b"C1")])
    pgconn.incoming.extend([_xlog(170, b"B2"), _xlog(180, b"U2")])  # still arriving
    assert await stream.settle(0.001) == 4  # the messages it holds for read_nowait
    assert stream.received == 180 and not stream._arrived
    assert [stream.read_nowait() for _ in range(5)] == [b"B1", b"C1", b"B2", b"U2", None]
    pgconn.incoming.append(_keepalive(190))
    assert await stream.settle(0.001) == 0  # a keepalive alone is no message
    assert stream.received == 190 and stream.read_nowait() is None


async def test_settle_sleeps_only_while_no_transaction_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Gathering a batch is worth a sleep; with a whole transaction waiting already (the
    # leader is behind the engine) it would only put the leader further behind.
    stream, pgconn = _stream()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        pgconn.incoming.append(_xlog(130, b"C1"))  # arrives meanwhile

    monkeypatch.setattr(asyncio, "sleep", sleep)
    pgconn.incoming.extend([_xlog(110, b"B1"), _xlog(120, b"U1")])  # still arriving
    assert await stream.settle(0.005) == 3 and slept == [0.005]
    assert [stream.read_nowait() for _ in range(4)] == [b"B1", b"U1", b"C1", None]
    pgconn.incoming.extend([_xlog(140, b"B2"), _xlog(150, b"C2")])  # arrived whole
    assert await stream.settle(0.005) == 2 and slept == [0.005]
    assert [stream.read_nowait() for _ in range(3)] == [b"B2", b"C2", None]
