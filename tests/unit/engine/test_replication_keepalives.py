"""The replication stream's reader (engine/replication.py): keepalives are handled as
they arrive and wake nobody; plugin messages wake the waiting reader, in order."""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, cast

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


def test_messages_after_keepalives_are_read_in_order() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.extend(
        [_keepalive(100), _xlog(150, b"B..."), _xlog(160, b"U..."), _keepalive(170)]
    )
    stream._on_readable()
    assert stream._arrived and stream.received == 150
    pgconn.incoming.append(_xlog(180, b"C..."))
    assert [stream.read_nowait() for _ in range(4)] == [b"B...", b"U...", b"C...", None]
    assert stream.received == 180 and not pgconn.sent


def test_a_message_held_while_more_arrive_keeps_its_place() -> None:
    stream, pgconn = _stream()
    pgconn.incoming.append(_xlog(10, b"first"))
    stream._on_readable()
    pgconn.incoming.append(_xlog(20, b"second"))
    stream._on_readable()  # the reader has not taken the first one yet
    assert stream.read_nowait() == b"first"
    assert stream.read_nowait() == b"second"
    assert stream.read_nowait() is None
