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
        return cls(position, schema, table, event_type, orjson.dumps(data), transaction_id, data)
