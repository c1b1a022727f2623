"""The fan-out's direct write (interfaces/websocket/connection.py ``Flusher``): a batch's
frames go straight to an idle connection's transport, in order, one write; otherwise the
writer task sends them (it holds earlier frames, a control message waits, or the
transport's buffer is over its limit)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from websockets.protocol import State

from heliosdb.interfaces.websocket import codec
from heliosdb.interfaces.websocket.connection import Connection, Flusher
from heliosdb.services.changes import ChangeEvent
from heliosdb.settings import WebSocketSettings


class _Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def _connection(flusher: Flusher, buffered: int = 0) -> tuple[Connection, _Transport]:
    transport = _Transport(buffered)
    ws: Any = SimpleNamespace(protocol=SimpleNamespace(state=State.OPEN), transport=transport)
    services: Any = SimpleNamespace(keys=SimpleNamespace(revocations=0))
    return Connection(ws, services, WebSocketSettings(), flusher), transport


def _event(position: int) -> ChangeEvent:
    return ChangeEvent(position, "public", "t", "INSERT", b'{"position":%d}' % position)


def _frame(position: int) -> bytes:
    return codec.text_frame(codec.encode_event("s", _event(position).payload, None))


async def _offer(conns: list[Connection], positions: range) -> None:
    sub: Any = SimpleNamespace(id="s")
    for position in positions:
        event = _event(position)
        for conn in conns:
            assert conn.offer(sub, event, None)
    await asyncio.sleep(0)  # the flusher's callback runs


async def test_a_batch_is_one_write_per_idle_connection_in_order() -> None:
    flusher = Flusher()
    (a, ta), (b, tb) = _connection(flusher), _connection(flusher)
    await _offer([a, b], range(1, 4))
    expected = b"".join(_frame(p) for p in range(1, 4))
    assert ta.writes == [expected] and tb.writes == [expected]
    assert not a._events and not a._ready.is_set()
    await _offer([a], range(4, 5))
    assert ta.writes[-1] == _frame(4)


async def test_a_busy_writer_keeps_the_frames_in_its_queue() -> None:
    conn, transport = _connection(Flusher())
    conn._busy = True  # the writer holds earlier frames (waiting for a drain)
    await _offer([conn], range(1, 3))
    assert transport.writes == [] and len(conn._events) == 2 and conn._ready.is_set()


async def test_a_waiting_control_message_goes_first() -> None:
    conn, transport = _connection(Flusher())
    conn.send_control('{"type": "response"}')
    await _offer([conn], range(1, 2))
    assert transport.writes == [] and len(conn._events) == 1


async def test_a_full_transport_buffer_leaves_flow_control_to_the_writer() -> None:
    conn, transport = _connection(Flusher(), buffered=1 << 20)
    await _offer([conn], range(1, 3))
    assert transport.writes == [] and len(conn._events) == 2 and conn._ready.is_set()


async def test_the_queue_limit_still_refuses_offers() -> None:
    conn, _ = _connection(Flusher(), buffered=1 << 20)
    sub: Any = SimpleNamespace(id="s")
    limit = WebSocketSettings().queue_messages
    assert all(conn.offer(sub, _event(p), None) for p in range(1, limit + 1))
    assert not conn.offer(sub, _event(limit + 1), None)
