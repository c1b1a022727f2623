"""A statement's rows counted as they arrive, for a result cap that keeps parallel plans.

An Execute message with a row limit would bound a result by itself, but the engine then
plans no parallel workers for the statement (a portal it may suspend cannot run a
parallel plan), so a big aggregate or scan through REST, gRPC or WebSocket ran on one
core. Capped statements therefore run without a row limit, and the node counts the
DataRow messages on their way in: past the cap it keeps none of the rest and stops the
statement (the pool path asks the engine to cancel it, a pipeline drops its connection),
so memory stays bounded by the cap and time by the engine's reaction.

:class:`RowCap` is the sans-IO part (bytes in, the bytes to pass on out);
:class:`CappedReader` puts it between a connection's transport and asyncpg's protocol
for one statement.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

_LENGTH = struct.Struct("!i")
_DATA_ROW = 68  # "D"


class TooManyRows(Exception):
    """The statement's result passed its row cap; its rows were not kept.

    ``aborted``: the engine cancelled the statement inside a transaction block, which is
    then aborted, as after any failed statement, until it is rolled back. (Outside one,
    a cancelled statement's implicit transaction is simply rolled back.)"""

    def __init__(self, aborted: bool = False) -> None:
        super().__init__("the result passed its row cap")
        self.aborted = aborted


class RowCap:
    """Counts the DataRow messages of a backend's byte stream and passes on every message
    except the DataRows past the first ``keep``; ``over`` once one is held back.

    Whole chunks pass as they are until the cap is reached (the receiver buffers partial
    messages itself); only the cut and what follows it are sliced. A DataRow takes at
    least 7 bytes, so the first ``7 * keep`` bytes cannot hold more than ``keep``: they
    are only kept (references to the chunks, no copy) and walked if more come, so a
    result under that size costs no walk at all (a walk costs about 90 ns per row).
    """

    __slots__ = ("_dropping", "_head", "_held", "_next", "_unwalked", "keep", "over", "rows")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.rows = 0  # DataRows passed on (as far as walked)
        self.over = False
        self._held: list[bytes] | None = []  # chunks not walked yet (None: walking)
        self._unwalked = 7 * keep  # bytes that may still come before a walk
        self._next = 0  # where the next message starts, from the next chunk's start
        self._head = b""  # a message header split across chunks
        self._dropping = False  # the message running into the next chunk is held back

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` to pass on."""
        held = self._held
        if held is not None:
            self._unwalked -= len(data)
            if self._unwalked >= 0:
                held.append(data)
                return data
            self._held = None
            for chunk in held:  # at most ``keep`` rows in these: nothing to cut
                self._walk(chunk)
        return self._walk(data)

    def _walk(self, data: bytes) -> bytes:
        head = self._head
        if head:
            buf, base, pos = head + data, len(head), 0
        else:
            buf, base, pos = data, 0, self._next
        size = len(buf)
        if self.over:
            return self._filter(buf, base, pos, tail=not head)
        rows, keep, unpack = self.rows, self.keep, _LENGTH.unpack_from
        while pos + 5 <= size:
            if buf[pos] == _DATA_ROW:
                if rows == keep:
                    self.rows = rows
                    self.over = True
                    return buf[base:pos] + self._filter(buf, base, pos, tail=False)
                rows += 1
            pos += 1 + unpack(buf, pos + 1)[0]
        self.rows = rows
        if pos < size:  # a header split across chunks
            if buf[pos] == _DATA_ROW and rows == keep:
                self.over = True  # held back from its first byte
                return buf[base:pos] + self._filter(buf, base, pos, tail=False)
            self._head, self._next = buf[pos:], 0
        else:
            self._head, self._next = b"", pos - size
        return data

    def _filter(self, buf: bytes, base: int, pos: int, *, tail: bool) -> bytes:
        """Past the cap: the messages from ``pos`` on that are not DataRows (``tail``:
        and what comes before ``pos``, the end of a message begun in an earlier chunk,
        unless that one is a DataRow)."""
        size = len(buf)
        kept: list[bytes] = []
        if tail and pos:
            if not self._dropping:
                kept.append(buf[: min(pos, size)])
            if pos >= size:
                self._next = pos - size
                return b"".join(kept)
        unpack = _LENGTH.unpack_from
        while pos + 5 <= size:
            end = pos + 1 + unpack(buf, pos + 1)[0]
            self._dropping = buf[pos] == _DATA_ROW
            if not self._dropping:
                kept.append(buf[max(pos, base) : min(end, size)])
            pos = end
        if pos < size:  # a header split across chunks: pass on its bytes unless a DataRow's
            if buf[pos] != _DATA_ROW:
                kept.append(buf[max(pos, base) :])
            self._head, self._next = buf[pos:], 0
        else:
            self._head, self._next = b"", pos - size
        return b"".join(kept)


class CappedReader(asyncio.Protocol):
    """Stands between a transport and its protocol (asyncpg's) while one capped statement
    runs: the protocol gets at most ``keep`` of its DataRows, and ``stop()`` is called
    once when the result passes that."""

    def __init__(self, protocol: Any, keep: int, stop: Callable[[], None]) -> None:
        self.protocol = protocol
        self.cap = RowCap(keep)
        self.stop: Callable[[], None] | None = stop

    def data_received(self, data: bytes) -> None:
        cap = self.cap
        out = cap.feed(data)
        if cap.over and self.stop is not None:
            stop, self.stop = self.stop, None
            stop()
        if out:
            self.protocol.data_received(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def eof_received(self) -> bool | None:
        eof: bool | None = self.protocol.eof_received()
        return eof

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()
