"""Transactions that outlive one request: an engine connection pinned to an id.

    begin(principal, isolation, read_only)  -> OpenTransaction (id, timeout)
    execute(principal, id, sql, params)     runs in it (one call at a time)
    commit / rollback(principal, id)        end it and return the connection

An id is unguessable and belongs to the principal that began it: anybody else gets
NOT_FOUND, exactly as for an id that never existed or has expired. A transaction left
idle for longer than its timeout is rolled back by a reaper task, and each principal
may hold only so many at once, because each one holds an engine connection.

The limit holds across every process on the engine (a node's ``workers`` each hold their
own transactions, and so does every node sharing the engine). A begun transaction is
recorded in ``helios.open_transactions`` by the engine backend holding it (pid,
backend_start, and the transaction's start time, xact_start); a row counts while
``pg_stat_activity`` shows that backend still inside that very transaction. So however a
transaction ends (commit, rollback, the idle reaper, its process killed with the engine
connection) it stops counting without a write; stale rows are dropped by the next begin
of their principal. Admission locks the principal (a transaction-level advisory lock on
the system connection) while it counts and records, so two processes cannot both take
the last slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError, invalid, not_found
from heliosdb.security.principals import Principal
from heliosdb.services.query import QueryResult, QueryService

log = logging.getLogger("heliosdb.transactions")

# Admission (services/transactions.py, migration 14); all on a SYSTEM connection.
_LOCK_PRINCIPAL = "SELECT pg_advisory_xact_lock(hashtext('helios.open_transactions'), hashtext($1))"
_STILL_OPEN = (
    "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.pid "
    "AND a.backend_start = t.backend_start AND a.xact_start = t.xact_start)"
)
_COUNT_OPEN = (
    "WITH gone AS (DELETE FROM helios.open_transactions t "  # noqa: S608 - constant text
    f"WHERE t.principal = $1 AND NOT {_STILL_OPEN}) "
    f"SELECT count(*) FROM helios.open_transactions t WHERE t.principal = $1 AND {_STILL_OPEN}"
)
_RECORD_OPEN = (
    "INSERT INTO helios.open_transactions (principal, pid, backend_start, xact_start) "
    "SELECT $1, pid, backend_start, xact_start FROM pg_stat_activity "
    "WHERE pid = $2 AND xact_start IS NOT NULL ON CONFLICT DO NOTHING"
)


class Isolation(enum.StrEnum):
    READ_COMMITTED = "read_committed"
    REPEATABLE_READ = "repeatable_read"
    SERIALIZABLE = "serializable"


@dataclass(eq=False)
class OpenTransaction:
    id: str
    principal_id: str
    isolation: Isolation
    read_only: bool
    idle_timeout: float
    connection: Any
    transaction: Any
    exits: contextlib.AsyncExitStack
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False

    def expired(self, now: float) -> bool:
        return not self.lock.locked() and now - self.last_used > self.idle_timeout


class Transactions:
    def __init__(
        self,
        engine: Engine,
        query: QueryService,
        *,
        idle_timeout: float = 60.0,
        max_idle_timeout: float = 600.0,
        per_principal: int = 4,
    ) -> None:
        self.engine = engine
        self.query = query
        self.idle_timeout = idle_timeout
        self.max_idle_timeout = max_idle_timeout
        self.per_principal = per_principal
        self._open: dict[str, OpenTransaction] = {}
        self._starting: dict[str, int] = {}  # begins in flight, counted against the limit
        self._reaper: asyncio.Task[None] | None = None

    def count(self, principal: Principal | None = None) -> int:
        if principal is None:
            return len(self._open)
        return sum(1 for t in self._open.values() if t.principal_id == principal.id)

    async def begin(
        self,
        principal: Principal,
        isolation: Isolation = Isolation.READ_COMMITTED,
        *,
        read_only: bool = False,
        idle_timeout: float | None = None,
    ) -> OpenTransaction:
        if idle_timeout is not None and idle_timeout < 0:
            raise invalid("idle_timeout_seconds must not be negative")
        timeout = min(idle_timeout or self.idle_timeout, self.max_idle_timeout)
        # This process's own count first: no engine round trip to refuse what it holds.
        if self.count(principal) + self._starting.get(principal.id, 0) >= self.per_principal:
            raise self._full()
        exits = contextlib.AsyncExitStack()
        self._starting[principal.id] = self._starting.get(principal.id, 0) + 1
        try:
            conn = await exits.enter_async_context(self.engine.connection(principal.access))
            tx = conn.transaction(isolation=isolation.value, readonly=read_only)
            await tx.start()
            if not await self._admit(principal.id, conn.get_server_pid()):
                await tx.rollback()
                raise self._full()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await exits.aclose()
            raise from_engine(exc) from None
        except BaseException:
            await exits.aclose()
            raise
        finally:
            left = self._starting.pop(principal.id) - 1
            if left:
                self._starting[principal.id] = left
        opened = OpenTransaction(
            id="tx_" + secrets.token_urlsafe(18),
            principal_id=principal.id,
            isolation=isolation,
            read_only=read_only,
            idle_timeout=timeout,
            connection=conn,
            transaction=tx,
            exits=exits,
        )
        self._open[opened.id] = opened
        self._ensure_reaper()
        return opened

    def _full(self) -> HeliosError:
        return HeliosError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"this principal already holds {self.per_principal} open transactions; "
            "commit or roll one back first",
            limit=self.per_principal,
        )

    async def _admit(self, principal_id: str, backend_pid: int) -> bool:
        """Record the transaction just begun on engine backend ``backend_pid`` unless the
        principal holds the limit already, counted on the whole engine (see above)."""
        async with self.engine.connection(Access.SYSTEM) as system, system.transaction():
            await system.execute(_LOCK_PRINCIPAL, principal_id)
            held: int = await system.fetchval(_COUNT_OPEN, principal_id)
            if held >= self.per_principal:
                return False
            status = await system.execute(_RECORD_OPEN, principal_id, backend_pid)
            if status != "INSERT 0 1":
                # The engine does not show the backend's transaction (track_activities
                # off): it cannot be counted across processes, only in this one.
                log.warning("open transaction on backend %d not recorded", backend_pid)
        return True

    @contextlib.asynccontextmanager
    async def use(self, principal: Principal, tx_id: str) -> AsyncIterator[OpenTransaction]:
        """The transaction, held for one call; concurrent calls on one id take turns."""
        opened = self._find(principal, tx_id)
        async with opened.lock:
            if opened.closed:
                raise _unknown(tx_id)
            try:
                yield opened
            finally:
                opened.last_used = time.monotonic()
                if opened.connection._con is None:  # its engine connection was lost
                    await self._close(opened)  # (the engine rolled it back): later ids NOT_FOUND

    async def execute(
        self, principal: Principal, tx_id: str, sql: str, params: Sequence[Any] = ()
    ) -> QueryResult:
        async with self.use(principal, tx_id) as opened:
            return await self.query.execute_on(opened.connection, sql, params)

    async def commit(self, principal: Principal, tx_id: str) -> None:
        async with self.use(principal, tx_id) as opened:
            try:
                await opened.transaction.commit()
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise from_engine(exc) from None
            finally:
                await self._close(opened)

    async def rollback(self, principal: Principal, tx_id: str) -> None:
        async with self.use(principal, tx_id) as opened:
            await self._rollback(opened)

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for opened in list(self._open.values()):
            await self._rollback(opened)

    def _find(self, principal: Principal, tx_id: str) -> OpenTransaction:
        if not isinstance(tx_id, str) or not tx_id:
            raise invalid("a transaction id is required")
        opened = self._open.get(tx_id)
        if opened is None or opened.closed or opened.principal_id != principal.id:
            raise _unknown(tx_id)
        return opened

    async def _rollback(self, opened: OpenTransaction) -> None:
        try:
            if not opened.closed:
                await opened.transaction.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("rollback of %s failed: %s", opened.id, exc)
        finally:
            await self._close(opened)

    async def _close(self, opened: OpenTransaction) -> None:
        if opened.closed:
            return
        opened.closed = True
        self._open.pop(opened.id, None)
        await opened.exits.aclose()

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="heliosdb-tx-reaper")

    async def _reap(self) -> None:
        while self._open:
            shortest = min(t.idle_timeout for t in self._open.values())
            await asyncio.sleep(min(1.0, max(0.05, shortest / 4)))
            now = time.monotonic()
            for opened in [t for t in self._open.values() if t.expired(now)]:
                if opened.lock.locked():
                    continue  # a call began since: not idle after all
                async with opened.lock:
                    log.info("rolling back %s: idle for %.0fs", opened.id, opened.idle_timeout)
                    await self._rollback(opened)


def _unknown(tx_id: str) -> HeliosError:
    return not_found(f"no open transaction {tx_id[:64]!r}: it never existed, ended or expired")
