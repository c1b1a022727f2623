"""The HTTP/2 connection's server-side timers and the refused connection, fed bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.interfaces.grpc.connection import Http2Connection, RefusedConnection, Stream
from tests.unit.recording import RecordingTransport


class _Transport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


def _call(stream_id: int) -> bytes:
    block = h2.encode_headers(
        [(b":method", b"POST"), (b":path", b"/heliosdb.v1.HeliosDB/ExecuteQuery")]
    )
    return h2.frame(h2.HEADERS, h2.END_HEADERS, stream_id, block)


def _frames(transport: _Transport) -> list[tuple[int, int, int, bytes]]:
    return list(h2.FrameReader().feed(b"".join(transport.writes)))


async def test_refused_connection_answers_its_first_call_then_goaway() -> None:
    transport = _Transport()
    conn = RefusedConnection(b"trailers block")
    conn.connection_made(transport)
    conn.data_received(h2.PREFACE + h2.settings_frame({}) + _call(1) + _call(3))
    kinds = [(kind, stream_id) for kind, _, stream_id, _ in _frames(transport)]
    assert (h2.HEADERS, 1) in kinds and kinds[-1] == (h2.GOAWAY, 0)
    assert (h2.HEADERS, 3) not in kinds  # after GOAWAY the client calls elsewhere
    headers = next(f for f in _frames(transport) if f[0] == h2.HEADERS)
    assert headers[3] == b"trailers block" and headers[1] & h2.END_STREAM
    goaway = _frames(transport)[-1][3]
    assert int.from_bytes(goaway[:4], "big") == 1
    assert transport.eof
    conn.connection_lost(None)
    assert conn.timer is not None and conn.timer.cancelled()


class _Server(Http2Connection):
    idle_timeout = 0.05

    def on_headers(self, stream: Stream, headers: Any, end_stream: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        pass


async def test_idle_connection_gets_goaway_a_busy_one_does_not() -> None:
    idle, idle_transport = _Server(), _Transport()
    busy, busy_transport = _Server(), _Transport()
    idle.connection_made(idle_transport)
    busy.connection_made(busy_transport)
    busy.data_received(h2.PREFACE + h2.settings_frame({}) + _call(1))  # never answered
    await asyncio.sleep(0.2)
    assert idle_transport.closed and _frames(idle_transport)[-1][0] == h2.GOAWAY
    assert not busy_transport.closed
    assert all(kind != h2.GOAWAY for kind, _, _, _ in _frames(busy_transport))
    busy.connection_lost(None)
