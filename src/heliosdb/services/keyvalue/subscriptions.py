"""Who listens where: every node's pub/sub subscriber counts, shared through the engine.

Messages cross nodes by NOTIFY (service.py); the counts PUBLISH returns and PUBSUB reports
need to know the other nodes' subscribers too. Each node writes its own counts to
``helios_kv.subscriptions`` (channel or pattern -> receivers on that node) and beats in
``helios_kv.pubsub_nodes`` every HEARTBEAT_SECONDS; rows of a node silent for STALE_SECONDS
are ignored and then deleted (a node killed without stopping).

SUBSCRIBE and PSUBSCRIBE wait for their row (:meth:`SubscriptionBook.flush`), so once a
client has its confirmation a PUBLISH on any node counts it. Unsubscribes and disconnects
are written in the background: until then other nodes may count a receiver that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from heliosdb.engine import Access, Engine

log = logging.getLogger("heliosdb.services.keyvalue")

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0

_WRITE = (
    "WITH node AS (INSERT INTO helios_kv.pubsub_nodes (node_id) VALUES ($1) "
    "ON CONFLICT (node_id) DO UPDATE SET seen_at = now() RETURNING node_id), "
    "gone AS (DELETE FROM helios_kv.subscriptions s "
    "USING unnest($2::bool[], $3::bytea[], $4::int[]) AS d(pattern, name, receivers) "
    "WHERE s.node_id = $1 AND s.pattern = d.pattern AND s.name = d.name "
    "AND d.receivers = 0 RETURNING 1) "
    "INSERT INTO helios_kv.subscriptions (node_id, pattern, name, receivers) "
    "SELECT (SELECT node_id FROM node), pattern, name, receivers "
    "FROM unnest($2::bool[], $3::bytea[], $4::int[]) AS t(pattern, name, receivers) "
    "WHERE receivers > 0 ON CONFLICT (node_id, pattern, name) "
    "DO UPDATE SET receivers = EXCLUDED.receivers"
)
_BEAT = (
    "INSERT INTO helios_kv.pubsub_nodes (node_id) VALUES ($1) "
    "ON CONFLICT (node_id) DO UPDATE SET seen_at = now() RETURNING (xmax = 0)"
)
_DROP_STALE = "DELETE FROM helios_kv.pubsub_nodes WHERE seen_at < now() - make_interval(secs => $1)"
_LEAVE = "DELETE FROM helios_kv.pubsub_nodes WHERE node_id = $1"
# The other live nodes' rows: $1 this node, $2 staleness, $3 one channel (NULL: all rows).
_REMOTE_ROWS = (
    "FROM helios_kv.subscriptions s JOIN helios_kv.pubsub_nodes n USING (node_id) "
    "WHERE s.node_id <> $1 AND n.seen_at > now() - make_interval(secs => $2) "
    "AND ($3::bytea IS NULL OR s.pattern OR s.name = $3) "
    "ORDER BY s.node_id, s.pattern, s.name"
)
_REMOTE = f"SELECT s.pattern, s.name, s.receivers {_REMOTE_ROWS}"
# PUBLISH: NOTIFY and the other nodes' receivers of the channel in one round trip.
_NOTIFY_AND_COUNT = (
    "SELECT pg_notify($4, $5), "
    f"ARRAY(SELECT s.pattern {_REMOTE_ROWS}), "
    f"ARRAY(SELECT s.name {_REMOTE_ROWS}), "
    f"ARRAY(SELECT s.receivers {_REMOTE_ROWS})"
)

Remote = list[tuple[bool, bytes, int]]  # (is a pattern, channel or pattern, receivers)


class SubscriptionBook:
    """This node's side of helios_kv.subscriptions; ``local_count(pattern, name)`` reads
    how many of this node's clients listen."""

    def __init__(
        self, engine: Engine, node_id: str, local_count: Callable[[bool, bytes], int]
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.local_count = local_count
        self.local_names: Callable[[], list[tuple[bool, bytes]]] = list
        self._dirty: set[tuple[bool, bytes]] = set()
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    def changed(self, pattern: bool, name: bytes, *, write_soon: bool = True) -> None:
        self._dirty.add((pattern, name))
        if write_soon and (self._background is None or self._background.done()):
            self._background = asyncio.create_task(self._flush_quietly())

    async def flush(self) -> None:
        """Write every changed count of this node (callers wait for their own change)."""
        async with self._lock:
            if not self._dirty:
                return
            entries = sorted(self._dirty)
            self._dirty.clear()
            counts = [self.local_count(pattern, name) for pattern, name in entries]
            try:
                async with self.engine.connection(Access.READ_WRITE) as conn:
                    await conn.execute(
                        _WRITE,
                        self.node_id,
                        [pattern for pattern, _ in entries],
                        [name for _, name in entries],
                        counts,
                    )
            except BaseException:
                self._dirty.update(entries)
                raise

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.warning("could not record pub/sub subscriptions; retrying", exc_info=True)
            await asyncio.sleep(1.0)
            if self._dirty:
                self._background = asyncio.create_task(self._flush_quietly())

    async def beat(self) -> None:
        """Say this node is alive; forget nodes that stopped beating."""
        async with self.engine.connection(Access.READ_WRITE) as conn:
            rejoined = await conn.fetchval(_BEAT, self.node_id)
            await conn.execute(_DROP_STALE, STALE_SECONDS)
        if rejoined:  # another node took us for dead and dropped our rows: write them again
            for pattern, name in self.local_names():
                self.changed(pattern, name, write_soon=False)
            await self.flush()

    async def beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("pub/sub heartbeat failed", exc_info=True)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def leave(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(BaseException):
                await self._background
        with contextlib.suppress(Exception):
            async with self.engine.connection(Access.READ_WRITE) as conn:
                await conn.execute(_LEAVE, self.node_id)

    async def remote(self, channel: bytes | None = None) -> Remote:
        """The other live nodes' rows (those that may match ``channel`` if given)."""
        async with self.engine.connection(Access.READ_WRITE) as conn:
            rows = await conn.fetch(_REMOTE, self.node_id, STALE_SECONDS, channel)
        return [(r[0], bytes(r[1]), r[2]) for r in rows]

    async def notify_and_count(
        self, conn: Any, notify_channel: str, payload: str, channel: bytes
    ) -> Remote:
        """NOTIFY ``payload`` and return the other nodes' rows that may match ``channel``."""
        row = await conn.fetchrow(
            _NOTIFY_AND_COUNT, self.node_id, STALE_SECONDS, channel, notify_channel, payload
        )
        return [(p, bytes(n), c) for p, n, c in zip(row[1], row[2], row[3], strict=True)]
