"""CancelRequests that reach a node other than the one holding the session.

Behind a load balancer, libpq's cancel connection (psql Ctrl-C, psycopg ``cancel()``)
lands on any node. A node that does not know the (pid, secret) pair publishes it here:
one row in ``helios.pg_cancel_requests`` (the SYSTEM role's, unreadable by client
roles) and ``NOTIFY helios_pg_cancel`` carrying only the row id, since any engine role
may LISTEN on any channel and the secret must not travel in the payload. Every node
LISTENs, reads the row and hands (pid, secret) to its subscribers (the PostgreSQL
gateways), which cancel only a session whose key matches exactly. Rows older than a
minute are deleted whenever a new one is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from heliosdb.engine import Access, Engine

log = logging.getLogger("heliosdb.services.cancels")

CHANNEL = "helios_pg_cancel"
Subscriber = Callable[[int, bytes], Coroutine[Any, Any, None]]


class CancelRelay:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._subscribers: list[Subscriber] = []
        self._listener: Any = None
        self._starting: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(pid, secret)`` for every cancel published by any node."""
        self._subscribers.append(subscriber)
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._listener is None:
                listener = await self.engine.dedicated("heliosdb-pg-cancel")
                await listener.add_listener(CHANNEL, self._on_notify)
                self._listener = listener

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)
        if not self._subscribers and self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await listener.close()

    async def publish(self, pid: int, secret: bytes) -> None:
        """Ask every node (this one too) to cancel the session with this key."""
        async with self.engine.connection(Access.SYSTEM) as conn:
            await conn.execute(
                "WITH old AS (DELETE FROM helios.pg_cancel_requests "
                "WHERE created_at < now() - interval '1 minute'), "
                "new AS (INSERT INTO helios.pg_cancel_requests (pid, secret) "
                "VALUES ($1, $2) RETURNING id) "
                "SELECT pg_notify($3, id::text) FROM new",
                pid,
                secret,
                CHANNEL,
            )

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str) or not payload.isdigit() or not self._subscribers:
            return  # anyone may NOTIFY this channel: ignore what is not a row id
        task = asyncio.get_running_loop().create_task(self._deliver(int(payload)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, request_id: int) -> None:
        try:
            async with self.engine.connection(Access.SYSTEM) as conn:
                row = await conn.fetchrow(
                    "SELECT pid, secret FROM helios.pg_cancel_requests WHERE id = $1",
                    request_id,
                )
            if row is None:
                return
            for subscriber in list(self._subscribers):
                await subscriber(row["pid"], bytes(row["secret"]))
        except Exception:
            log.warning("could not deliver cancel request %d", request_id, exc_info=True)
