"""The ``changes`` service: committed row changes, captured once, delivered on every node.

    capture.py   the leader: WAL (logical slot, pgoutput) -> helios.change_events; it runs
                 in the node's capture process (heliosdb/capture_process.py), or with
                 changes.capture_process false in every process of the node
    hub.py       every process: helios.change_events -> subscriptions, live or from a
                 position (it LISTENs only while it has subscriptions)
    filters.py   subscription filters evaluated on each event's row
    pgoutput.py  the logical decoding protocol, sans-IO
    values.py    column text -> JSON forms
    events.py    ChangeEvent

docs/realtime.md explains the design and why logical decoding was chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.roles import ROLE_FOR_ACCESS
from heliosdb.errors import ErrorCode, HeliosError, denied, invalid, not_found
from heliosdb.security.principals import Principal
from heliosdb.services.changes.capture import (
    CaptureLeader,
    capture_lock,
    ensure_capture,
    ensure_table_captured,
    prune,
    slot_name,
)
from heliosdb.services.changes.events import EVENT_TYPES, ChangeEvent
from heliosdb.services.changes.filters import RowFilter
from heliosdb.services.changes.hub import LAST_POSITION, EventSink, Hub, Subscription
from heliosdb.settings import ChangesSettings

__all__ = ["ChangeEvent", "ChangeService", "EventSink", "Subscription"]

log = logging.getLogger("heliosdb.changes")

DEFAULT_EVENTS = ("INSERT", "UPDATE", "DELETE")
# For /health: the log's end, whether a leader (of any node) holds the capture lock, and
# the WAL the slot has not confirmed yet (what capture still has to take, or to confirm).
_HEALTH = (
    "WITH k AS (SELECT hashtext($2)::bigint AS key) "
    "SELECT c.last_position, EXISTS (SELECT 1 FROM pg_locks l, k WHERE "
    "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid = ((k.key >> 32) & 4294967295)::oid "
    "AND l.objid = (k.key & 4294967295)::oid) AS led, "
    "(SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint "
    "FROM pg_replication_slots s WHERE s.slot_name = $1) AS lag "
    "FROM helios.change_capture c WHERE c.slot_name = $1"
)


class ChangeService:
    def __init__(self, engine: Engine, settings: ChangesSettings, database: str) -> None:
        self.engine = engine
        self.settings = settings
        self.slot = slot_name(database)
        self.hub = Hub(engine, self.slot)
        self.leader = CaptureLeader(engine, settings, self.slot)
        self.leader.on_written = self.hub.dispatch_written
        self.leader.on_writing = self.hub.expect_written
        self.leader.on_stopped = self.hub.leader_stopped
        self.leader.on_leading = self.hub.leader_started
        self.available = False
        self._tasks: list[asyncio.Task[None]] = []
        # Subscriptions with the same filter on the same table share one compiled filter,
        # which the hub evaluates once per event for all of them.
        self._filters: weakref.WeakValueDictionary[tuple[str, str, str, tuple[str, ...]], RowFilter]
        self._filters = weakref.WeakValueDictionary()

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        self.available = await ensure_capture(self.engine, self.slot)
        if not self.available:
            return
        start = await self.last_position()
        self._tasks = [asyncio.create_task(self.hub.run(start), name="change hub")]
        if not self.settings.capture_process:
            # Otherwise the node's capture process leads (capture_process.py).
            self._tasks.append(asyncio.create_task(self.leader.run(), name="change capture"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def health(self) -> dict[str, Any]:
        """What /health says of change capture; never raises."""
        status: dict[str, Any] = {"available": self.available}
        if not self.available:
            return status
        status["capture"] = "process" if self.settings.capture_process else "in_process"
        try:
            async with self.engine.connection(Access.SYSTEM) as conn:
                row = await conn.fetchrow(_HEALTH, self.slot, capture_lock(self.slot), timeout=2)
        except (asyncpg.PostgresError, OSError, TimeoutError, HeliosError):
            return status
        if row is not None:
            status["leader"] = bool(row["led"])
            status["last_position"] = int(row["last_position"])
            status["lag_bytes"] = max(0, int(row["lag"] or 0))
        return status

    async def last_position(self) -> int:
        async with self.engine.connection(Access.SYSTEM) as conn:
            value = await conn.fetchval(LAST_POSITION, self.slot)
        return int(value or 0)

    async def subscribe(
        self,
        principal: Principal,
        sink: EventSink,
        *,
        subscription_id: str,
        table: str,
        events: Sequence[str] | None = None,
        filter_text: str | None = None,
        from_position: int | None = None,
    ) -> Subscription:
        if not self.available:
            raise HeliosError(
                ErrorCode.UNAVAILABLE, "change capture is not available on this engine"
            )
        schema, name = _split_table(table)
        wanted = _event_types(events)
        columns = await self._authorize(principal, schema, name)
        row_filter = (
            self._filter(schema, name, filter_text, columns) if filter_text is not None else None
        )
        if from_position is not None:
            await self._check_resumable(from_position)
        await ensure_table_captured(self.engine, schema, name)
        await self.hub.ready()  # it reads the change log, and knows where it ends
        sub = Subscription(
            subscription_id, principal, schema, name, wanted, row_filter, sink, cursor=0
        )
        self.hub.add(sub, from_position)
        return sub

    async def prune(self, retention_seconds: float | None = None) -> int:
        """Run the retention sweep now (``heliosdb changes prune``); the new pruned_through."""
        seconds = (
            self.settings.retention_seconds if retention_seconds is None else retention_seconds
        )
        if seconds < 0:
            raise invalid("the retention must be zero or more seconds")
        async with self.engine.connection(Access.SYSTEM) as conn:
            return await prune(conn, self.slot, seconds)

    def _filter(self, schema: str, table: str, text: str, columns: list[str]) -> RowFilter:
        key = (schema, table, text, tuple(columns))
        row_filter = self._filters.get(key)
        if row_filter is None:
            row_filter = RowFilter(text, columns)
            self._filters[key] = row_filter
        return row_filter

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.remove(sub)

    async def still_allowed(self, principal: Principal, sub: Subscription) -> bool:
        try:
            await self._authorize(principal, sub.schema, sub.table)
        except HeliosError:
            return False
        return True

    async def _authorize(self, principal: Principal, schema: str, table: str) -> list[str]:
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT has_table_privilege($3, c.oid, 'SELECT') AS readable, "
                "array(SELECT attname::text FROM pg_attribute WHERE attrelid = c.oid "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum) AS columns "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                schema,
                table,
                ROLE_FOR_ACCESS[principal.access],
            )
        if row is None or (schema == "helios" and not row["readable"]):
            raise not_found(f"table {schema}.{table} does not exist")
        if not row["readable"]:
            raise denied(f"this key may not read {schema}.{table}")
        return list(row["columns"])

    async def _check_resumable(self, from_position: int) -> None:
        async with self.engine.connection(Access.SYSTEM) as conn:
            row = await conn.fetchrow(
                "SELECT last_position, pruned_through FROM helios.change_capture "
                "WHERE slot_name = $1",
                self.slot,
            )
        last, pruned = (int(row["last_position"]), int(row["pruned_through"])) if row else (0, 0)
        if from_position < pruned:
            raise invalid(
                f"from_position {from_position} is older than the retention window "
                f"(events up to {pruned} were removed); read the table again to resync, "
                "then subscribe without from_position",
                reason="resync_required",
                oldest_position=pruned + 1,
            )
        if from_position > last:
            raise invalid(
                f"from_position {from_position} is ahead of the newest event ({last})",
                last_position=last,
            )


def _split_table(table: str) -> tuple[str, str]:
    if not isinstance(table, str) or not table.strip():
        raise invalid("table must be a non-empty string")
    if "." in table:
        schema, name = table.split(".", 1)
        return schema, name
    return "public", table


def _event_types(events: Sequence[str] | None) -> frozenset[str]:
    if events is None:
        return frozenset(DEFAULT_EVENTS)
    if not isinstance(events, list | tuple) or not events:
        raise invalid("events must be a non-empty list such as ['INSERT', 'UPDATE']")
    wanted = set()
    for event in events:
        if not isinstance(event, str) or event.upper() not in EVENT_TYPES:
            raise invalid(f"unknown event type {event!r}; use {', '.join(EVENT_TYPES)}")
        wanted.add(event.upper())
    return frozenset(wanted)
