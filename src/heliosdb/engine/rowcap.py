"""A statement's rows counted as they arrive, for a result cap that keeps parallel plans.

An Execute message with a row limit would bound a result by itself, but the engine then
plans no parallel workers for the statement (a portal it may suspend cannot run a
parallel plan), so a big aggregate or scan through REST, gRPC or WebSocket ran on one
core. Capped statements therefore run without a row limit, and the node counts the
DataRow messages on their way in, and their bytes: past either cap it keeps none of the
rest and stops the statement (the pool path asks the engine to cancel it, a pipeline
drops its connection), so memory stays bounded by the caps and time by the engine's
reaction.

A DataRow's bytes are counted at its header, which declares its length: a row that would
take the result past its byte cap is held back whole, however large, without waiting for
its bytes.

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
UNLIMITED = 1 << 62  # a cap that no result reaches


class TooManyRows(Exception):
    """The statement's result passed its row cap; its rows were not kept.

    ``aborted``: the engine cancelled the statement inside a transaction block, which is
    then aborted, as after any failed statement, until it is rolled back. (Outside one,
    a cancelled statement's implicit transaction is simply rolled back.) ``lost``: the
    engine connection was closed instead (see :attr:`RowCap.torn`); a transaction on it
    is rolled back."""

    def __init__(self, aborted: bool = False, *, lost: bool = False) -> None:
        super().__init__("the result passed its cap")
        self.aborted = aborted
        self.lost = lost


class TooManyBytes(TooManyRows):
    """The statement's result passed its byte cap (its DataRows' bytes)."""


class RowCap:
    """Counts the DataRow messages of a backend's byte stream and their bytes, and passes
    on every message except the DataRows past the first ``keep`` or past ``max_bytes``
    bytes of DataRows in all; ``over`` once one is held back (``by_bytes``: for its bytes).

    Whole chunks pass as they are until a cap is reached (the receiver buffers partial
    messages itself, except a header split across chunks, held back until it is whole);
    only the cut and what follows it are sliced. A DataRow takes at least 7 bytes, so
    the first ``7 * keep`` bytes cannot hold more than ``keep``, and DataRows cannot take
    more bytes than the stream: the first ``min(7 * keep, max_bytes // 2)`` bytes are
    only kept (references to the chunks, no copy) and walked if more come, so a result
    under that size costs no walk at all (a walk costs about 90 ns per row).

    Those bytes have been passed on unwalked, so a DataRow that begins in them and would
    pass ``max_bytes`` (a single row of more than half of it) cannot be cut at its
    header: ``torn`` then, and the caller drops the connection (nothing more is passed
    on).
    """

    __slots__ = (
        "_dropping",
        "_head",
        "_head_passed",
        "_held",
        "_next",
        "_room",
        "_unwalked",
        "by_bytes",
        "keep",
        "max_bytes",
        "over",
        "rows",
        "torn",
    )

    def __init__(self, keep: int, max_bytes: int = UNLIMITED) -> None:
        # Only what a result too small to walk needs (one per statement); the walk's
        # state is set when one starts.
        self.keep = keep
        self.max_bytes = max_bytes
        self.rows = 0  # DataRows passed on (as far as walked)
        self.over = self.by_bytes = self.torn = False
        self._held: list[bytes] | None = []  # chunks not walked yet (None: walking)
        unwalked, half = 7 * keep, max_bytes >> 1  # (min() is a call)
        self._unwalked = unwalked if unwalked < half else half  # bytes before a walk

    def _start_walk(self) -> None:
        self._room = self.max_bytes  # DataRow bytes that may still pass
        self._next = 0  # where the next message starts, from the next chunk's start
        self._head = b""  # a message header split across chunks
        self._head_passed = 0  # its bytes passed on already (they came unwalked)
        self._dropping = False  # the message running into the next chunk is held back

    @property
    def size(self) -> int:
        """DataRow bytes passed on (as far as walked)."""
        return 0 if self._held is not None else self.max_bytes - self._room

    def refusal(self, aborted: bool = False, *, lost: bool = False) -> TooManyRows:
        """The error for a result held back (TooManyBytes when its bytes were)."""
        return (TooManyBytes if self.by_bytes else TooManyRows)(aborted, lost=lost)

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` to pass on."""
        held = self._held
        if held is not None:
            self._unwalked -= len(data)
            if self._unwalked >= 0:
                held.append(data)
                return data
            self._held = None
            self._start_walk()
            for chunk in held:  # passed on already: a cut in them tears the stream
                self._walk(chunk)
            self._head_passed = len(self._head)
            if self.over:
                self.torn = True
        if self.torn:
            return b""
        return self._walk(data)

    def _walk(self, data: bytes) -> bytes:
        head = self._head
        if head:
            buf, pos = head + data, 0
            base = len(head) if self.over else self._head_passed  # passed on before
        else:
            buf, base, pos = data, 0, self._next
        size = len(buf)
        if self.over:
            return self._filter(buf, base, pos, tail=not head)
        rows, keep, room, unpack = self.rows, self.keep, self._room, _LENGTH.unpack_from
        while pos + 5 <= size:
            end = pos + 1 + unpack(buf, pos + 1)[0]
            if buf[pos] == _DATA_ROW:
                if rows == keep or end - pos > room:
                    self.rows, self._room = rows, room
                    self.over = True
                    self.by_bytes = rows < keep
                    if pos < base:  # its header was passed on
                        self.torn = True
                        return b""
                    return buf[base:pos] + self._filter(buf, base, pos, tail=False)
                rows += 1
                room -= end - pos
            pos = end
        self.rows, self._room = rows, room
        if pos < size:  # a header split across chunks: held back until it is whole
            self._head, self._next = buf[pos:], 0
            self._head_passed = max(base - pos, 0)
            return buf[base:pos]
        self._head, self._next = b"", pos - size
        return data if base == len(head) else buf[base:]

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
    runs: the protocol gets at most ``keep`` of its DataRows and ``max_bytes`` of their
    bytes, and ``stop()`` is called once when the result passes that. A torn stream
    (:attr:`RowCap.torn`) also closes ``transport``: the protocol sees the connection
    lost, and gets nothing more."""

    def __init__(
        self,
        protocol: Any,
        keep: int,
        stop: Callable[[], None],
        max_bytes: int = UNLIMITED,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.protocol = protocol
        self.cap = RowCap(keep, max_bytes)
        self.stop: Callable[[], None] | None = stop
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        cap = self.cap
        out = cap.feed(data)
        if cap.over and self.stop is not None:
            stop, self.stop = self.stop, None
            stop()
            if cap.torn and self.transport is not None:
                self.transport.abort()
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
