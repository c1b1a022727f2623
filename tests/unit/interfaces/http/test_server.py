"""The HTTP listener's transport sends what one loop step wrote as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from heliosdb.interfaces.http.server import _CoalescingTransport


class _Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_step_leave_together() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"{}"))
    assert inner.writes == []
    assert transport.get_write_buffer_size() >= 2
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[-1] == b"next"


async def test_close_sends_pending_bytes_first() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"]
    assert inner.closed and transport.is_closing()
    await asyncio.sleep(0)
    assert inner.writes == [b"last words"]


async def test_nothing_is_written_after_the_peer_went_away() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"lost")
    inner.closed = True
    await asyncio.sleep(0)
    assert inner.writes == []
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
