"""Server-side cursors, shared by every connection of the node (drivers may send
getMore on any pooled connection). A cursor holds the rest of a result: a list, or for
a find with more than its first batch a stream that reads it from the engine a batch at
a time (services/documents/streaming.py), so a cursor holds about one batch in memory.
It belongs to the principal that opened it and expires after ten idle minutes
(mongodb.cursor_timeout_seconds). A stream's engine connection is also given back when
its logical session ends (endSessions, killSessions: the cursor closes) and when the
client connection that last read from it closes (the cursor stays)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from heliosdb.services.documents import bsonform
from heliosdb.services.documents.streaming import CHUNK_ROWS, Stream

log = logging.getLogger("heliosdb.interfaces.mongodb")

IDLE_SECONDS = 600.0
DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024 - 16 * 1024
MAX_OPEN_CURSORS = 10_000


@dataclass(slots=True)
class Cursor:
    id: int
    namespace: str
    owner: str
    items: list[Any]
    position: int = 0
    used_at: float = field(default_factory=time.monotonic)
    stream: Stream | None = None
    lsid: bytes | None = None  # the logical session that opened it
    connection: int = 0  # the client connection that opened or last read it


def as_bson(item: Any) -> Any:
    return RawBSONDocument(bytes(item)) if isinstance(item, (bytes, bytearray)) else item


def _size(item: Any) -> int:
    if isinstance(item, (bytes, bytearray)):
        return len(item)
    return len(bson.encode(item, codec_options=bsonform.CODEC_OPTIONS))


def take(items: list[Any], start: int, count: int) -> tuple[list[Any], int]:
    """Up to ``count`` items from ``start`` (0 = no count limit) that fit in one reply."""
    batch: list[Any] = []
    total = 0
    position = start
    while position < len(items) and (count <= 0 or len(batch) < count):
        size = _size(items[position])
        if batch and total + size > MAX_BATCH_BYTES:
            break
        batch.append(as_bson(items[position]))
        total += size
        position += 1
    return batch, position


async def take_stream(stream: Stream, count: int) -> list[Any]:
    """Up to ``count`` documents of ``stream`` (0 = no count limit) that fit in one
    reply; the first that does not fit is kept for the next."""
    batch: list[Any] = []
    total = 0
    while count <= 0 or len(batch) < count:
        items = await stream.fetch(count - len(batch) if count > 0 else CHUNK_ROWS)
        if not items:
            break
        for index, item in enumerate(items):
            size = _size(item)
            if batch and total + size > MAX_BATCH_BYTES:
                stream.unread(items[index:])
                return batch
            batch.append(as_bson(item))
            total += size
    return batch


class CursorStore:
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self._cursors: dict[int, Cursor] = {}
        self.idle_seconds = idle_seconds
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._cursors)

    def open(
        self,
        namespace: str,
        owner: str,
        items: list[Any],
        first_batch: int,
        single_batch: bool = False,
        *,
        lsid: bytes | None = None,
        connection: int = 0,
    ) -> tuple[list[Any], Int64]:
        """``first_batch`` 0 means an empty first batch (find's batchSize: 0). ``items``
        may be a ``streaming.Streamed`` list: the cursor then reads on from its stream."""
        batch, position = take(items, 0, first_batch) if first_batch > 0 else ([], 0)
        if single_batch and first_batch <= 0:
            batch, position = take(items, 0, 0)
        stream: Stream | None = getattr(items, "stream", None)
        if stream is not None:
            # The rest of the first read stays while it is no more than a batch (a large
            # rest is read again at the first getMore: an idle cursor holds no more).
            rest = items[position:]
            stream.unread(rest, keep=sum(map(_size, rest)) <= MAX_BATCH_BYTES)
            if single_batch or stream.done:
                self._close(stream)
                return batch, Int64(0)
            items, position = [], 0
        elif position >= len(items) or single_batch:
            return batch, Int64(0)
        self._expire()
        cursor_id = secrets.randbelow(2**62) + 1
        self._cursors[cursor_id] = Cursor(
            cursor_id, namespace, owner, items, position, stream=stream, lsid=lsid
        )
        if stream is not None:
            self._cursors[cursor_id].connection = connection
            self._reap_soon()
        return batch, Int64(cursor_id)

    def namespace_of(self, cursor_id: int, owner: str) -> str | None:
        """The namespace of ``owner``'s open cursor ``cursor_id`` (None: no such cursor)."""
        cursor = self._cursors.get(cursor_id)
        return cursor.namespace if cursor is not None and cursor.owner == owner else None

    async def more(
        self,
        cursor_id: int,
        owner: str,
        count: int,
        *,
        lsid: bytes | None = None,
        connection: int = 0,
    ) -> tuple[Cursor, list[Any]] | None:
        cursor = self._cursors.get(cursor_id)
        if cursor is None or cursor.owner != owner:
            return None
        stream = cursor.stream
        if stream is None:
            batch, cursor.position = take(cursor.items, cursor.position, count)
            done = cursor.position >= len(cursor.items)
        else:
            if stream.stale():
                self._cursors.pop(cursor_id, None)
                return None  # opened in a transaction that has ended
            # the session that opened it (a hot path find did not say: its first getMore)
            cursor.lsid = cursor.lsid or lsid
            cursor.connection = connection or cursor.connection
            cursor.used_at = time.monotonic()
            try:
                batch = await take_stream(stream, count)
            except BaseException:
                if stream.done:
                    self._cursors.pop(cursor_id, None)
                raise
            done = stream.done
        cursor.used_at = time.monotonic()
        if done:
            self._cursors.pop(cursor_id, None)
            cursor.id = 0
        return cursor, batch

    async def kill(self, cursor_id: int, owner: str) -> bool:
        cursor = self._cursors.get(cursor_id)
        if cursor is None or cursor.owner != owner:
            return False
        del self._cursors[cursor_id]
        if cursor.stream is not None:
            await cursor.stream.close()
        return True

    def end_sessions(self, owner: str | None, lsids: set[bytes] | None = None) -> None:
        """Close the cursors of these logical sessions of ``owner`` (all of ``owner``'s
        without ``lsids``; every cursor without an owner): as MongoDB's killSessions."""
        for cursor in list(self._cursors.values()):
            if (owner is None or cursor.owner == owner) and (lsids is None or cursor.lsid in lsids):
                self._drop(cursor)

    def disconnected(self, connection: int) -> None:
        """A client connection closed: the streams it opened or last read from give
        their engine connections back (a client gone without killCursors). The cursors
        stay, as MongoDB's do (a driver may read on over another connection): a later
        getMore opens a new engine cursor where the last one stopped."""
        for cursor in list(self._cursors.values()):
            stream = cursor.stream
            if stream is not None and cursor.connection == connection and stream.holds:
                self._spawn(stream.detach())

    async def close_all(self) -> None:
        """The listener stops: every stream gives its engine connection back."""
        self.end_sessions(None)
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    def _drop(self, cursor: Cursor) -> None:
        self._cursors.pop(cursor.id, None)
        if cursor.stream is not None:
            self._close(cursor.stream)

    def _close(self, stream: Stream) -> None:
        if not stream.holds:
            stream.exhausted = True
            stream.pending = []
            return
        self._spawn(stream.close())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _reap_soon(self) -> None:
        """Expire idle streams without waiting for the next find: they may hold an
        engine connection."""
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        pause = min(max(self.idle_seconds / 4, 0.05), 30.0)
        while any(c.stream is not None for c in self._cursors.values()):
            await asyncio.sleep(pause)
            try:
                self._expire()
            except Exception:
                log.exception("expiring mongodb cursors failed")

    def _expire(self) -> None:
        now = time.monotonic()
        if len(self._cursors) >= MAX_OPEN_CURSORS:
            self._drop(min(self._cursors.values(), key=lambda c: c.used_at))
        for cursor in list(self._cursors.values()):
            if now - cursor.used_at > self.idle_seconds:
                self._drop(cursor)
