"""Server-side cursors, shared by every connection of the node (drivers may send
getMore on any pooled connection). A cursor holds the rest of a result; it belongs
to the principal that opened it and expires after ten idle minutes."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from heliosdb.services.documents import bsonform

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


class CursorStore:
    def __init__(self) -> None:
        self._cursors: dict[int, Cursor] = {}

    def __len__(self) -> int:
        return len(self._cursors)

    def open(
        self,
        namespace: str,
        owner: str,
        items: list[Any],
        first_batch: int,
        single_batch: bool = False,
    ) -> tuple[list[Any], Int64]:
        """``first_batch`` 0 means an empty first batch (find's batchSize: 0)."""
        batch, position = take(items, 0, first_batch) if first_batch > 0 else ([], 0)
        if single_batch and first_batch <= 0:
            batch, position = take(items, 0, 0)
        if position >= len(items) or single_batch:
            return batch, Int64(0)
        self._expire()
        cursor_id = secrets.randbelow(2**62) + 1
        self._cursors[cursor_id] = Cursor(cursor_id, namespace, owner, items, position)
        return batch, Int64(cursor_id)

    def more(self, cursor_id: int, owner: str, count: int) -> tuple[Cursor, list[Any]] | None:
        cursor = self._cursors.get(cursor_id)
        if cursor is None or cursor.owner != owner:
            return None
        batch, cursor.position = take(cursor.items, cursor.position, count)
        cursor.used_at = time.monotonic()
        if cursor.position >= len(cursor.items):
            self._cursors.pop(cursor_id, None)
            cursor.id = 0
        return cursor, batch

    def kill(self, cursor_id: int, owner: str) -> bool:
        cursor = self._cursors.get(cursor_id)
        if cursor is None or cursor.owner != owner:
            return False
        del self._cursors[cursor_id]
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        if len(self._cursors) >= MAX_OPEN_CURSORS:
            oldest = min(self._cursors.values(), key=lambda c: c.used_at)
            self._cursors.pop(oldest.id, None)
        for cursor_id in [c.id for c in self._cursors.values() if now - c.used_at > IDLE_SECONDS]:
            self._cursors.pop(cursor_id, None)
