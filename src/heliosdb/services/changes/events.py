"""One captured change, as every consumer (WebSocket, GraphQL, ...) receives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

EVENT_TYPES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


@dataclass(slots=True)
class ChangeEvent:
    """``payload`` is the event's JSON ``data`` object, encoded once for every subscriber.

    Its keys: event_type, schema, table, row, old_row, timestamp (commit time, ISO 8601),
    transaction_id, position.
    """

    position: int
    schema: str
    table: str
    event_type: str
    payload: bytes
    transaction_id: int = 0
    _data: dict[str, Any] | None = field(default=None, repr=False)
    # Consumers' encodings of this event, by their own key (the WebSocket interface keys
    # its frames by subscription id and filter match), built once for every subscriber
    # with the same key.
    encoded: dict[Any, bytes] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """The payload decoded (lazily: only filters need it)."""
        if self._data is None:
            self._data = orjson.loads(self.payload)
        return self._data

    @classmethod
    def build(
        cls,
        *,
        position: int,
        schema: str,
        table: str,
        event_type: str,
        row: dict[str, Any] | None,
        old_row: dict[str, Any] | None,
        timestamp: str,
        transaction_id: int,
    ) -> ChangeEvent:
        data = {
            "event_type": event_type,
            "schema": schema,
            "table": table,
            "row": row,
            "old_row": old_row,
            "timestamp": timestamp,
            "transaction_id": transaction_id,
            "position": position,
        }
        # Not kept as ``data``: its values may be orjson fragments (values.py), which
        # only the payload reads as JSON.
        return cls(position, schema, table, event_type, orjson.dumps(data), transaction_id)


# A NOTIFY payload must stay under 8000 bytes; smaller batches travel in it whole.
NOTICE_BYTES = 7900


def encode_notice(newest: int, events: list[ChangeEvent] | None) -> str:
    """The capture NOTIFY's payload: the newest position written and, when they fit,
    the events themselves, so other processes and nodes dispatch them without reading
    the table. Lines: the position, then per event a JSON header ``[schema, table,
    event_type, position]`` and its payload (orjson writes no raw newline)."""
    head = str(newest)
    if not events:
        return head
    parts = [head.encode()]
    size = len(parts[0])
    for event in events:
        header = orjson.dumps([event.schema, event.table, event.event_type, event.position])
        size += len(header) + len(event.payload) + 2
        if size > NOTICE_BYTES:
            return head
        parts += (header, event.payload)
    try:
        return b"\n".join(parts).decode()
    except UnicodeDecodeError:  # payloads are orjson's UTF-8: not expected
        return head


def parse_notice(text: str) -> tuple[int, list[ChangeEvent] | None]:
    """``encode_notice``'s inverse: (newest position or -1, the events or None)."""
    lines = text.split("\n")
    try:
        newest = int(lines[0])
    except ValueError:
        return -1, None
    if len(lines) < 3:
        return newest, None
    events = []
    for i in range(1, len(lines) - 1, 2):
        schema, table, event_type, position = orjson.loads(lines[i])
        events.append(ChangeEvent(position, schema, table, event_type, lines[i + 1].encode()))
    return newest, events
