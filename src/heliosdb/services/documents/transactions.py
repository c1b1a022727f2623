"""Client transactions: one engine connection and one engine transaction held across
several statements (MongoDB's multi-document transactions).

    txn = await store.begin(principal, lock_timeout_ms=5)
    with transactions.using(txn):      # every DocumentStore call in this task runs on
        await store.insert(...)        # txn's connection, inside its transaction
    await txn.commit()                 # or txn.rollback(); both give the connection back

The engine transaction is REPEATABLE READ: one snapshot for the whole transaction, as
MongoDB's snapshot isolation. ``lock_timeout`` is set for the transaction only, so a
statement that would wait for a row another open transaction changed fails at once
(SQLSTATE 55P03) instead of waiting; an update of a row changed by a transaction that
committed after the snapshot fails with a serialization error (40001). Both are write
conflicts a client may retry.

Which transaction is current travels in a context variable set by ``using()``, so the
store's statements need no extra argument. Inside a transaction, statements whose
errors the store expects and handles (a missing table, a duplicate key it reports) run
under a savepoint (``guard``), because any error would otherwise abort the whole engine
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import asyncpg

from heliosdb.engine import EngineConnection
from heliosdb.engine.sqlstate import from_engine
from heliosdb.security.principals import Principal

_CURRENT: ContextVar[DocumentTransaction | None] = ContextVar(
    "heliosdb_documents_transaction", default=None
)


class DocumentTransaction:
    """An open engine transaction on a connection held until commit or rollback."""

    def __init__(self, principal: Principal, lease: Any, conn: EngineConnection) -> None:
        self.principal = principal
        self.conn = conn
        self._lease = lease
        self._transaction: Any = None
        self.finished = False
        # One statement at a time: a client must not run two commands of one transaction
        # at once, and an expiry must wait for the statement in progress.
        self.lock = asyncio.Lock()

    async def _start(self, lock_timeout_ms: int) -> None:
        self._transaction = self.conn.transaction(isolation="repeatable_read")
        await self._transaction.start()
        if lock_timeout_ms > 0:
            await self.conn.execute(
                "SELECT set_config('lock_timeout', $1, true)", f"{lock_timeout_ms}ms"
            )

    async def commit(self) -> None:
        """Commit and give the connection back; engine errors become HeliosErrors."""
        if self.finished:
            return
        self.finished = True
        try:
            await self._transaction.commit()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await self._release(clean=False)
            raise from_engine(exc) from None
        await self._release(clean=True)

    async def rollback(self) -> None:
        """Roll back and give the connection back; never raises for a broken connection."""
        if self.finished:
            return
        self.finished = True
        clean = True
        try:
            await self._transaction.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            clean = False
        await self._release(clean=clean)

    async def _release(self, *, clean: bool) -> None:
        if clean:
            # SET LOCAL ended with the transaction: the session is as it was taken.
            self.conn.keep_session(self.principal.id)
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await self._lease.__aexit__(None, None, None)


async def begin(lease: Any, principal: Principal, lock_timeout_ms: int) -> DocumentTransaction:
    """Take the lease's connection and start a transaction on it."""
    conn: EngineConnection = await lease.__aenter__()
    txn = DocumentTransaction(principal, lease, conn)
    try:
        await txn._start(lock_timeout_ms)
    except BaseException as exc:
        txn.finished = True
        await txn._release(clean=False)
        if isinstance(exc, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
            raise from_engine(exc) from None
        raise
    return txn


def current() -> DocumentTransaction | None:
    return _CURRENT.get()


@contextlib.contextmanager
def using(txn: DocumentTransaction) -> Iterator[None]:
    """Run the store's statements of this task inside ``txn``."""
    token = _CURRENT.set(txn)
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextlib.asynccontextmanager
async def guard(conn: EngineConnection) -> AsyncIterator[None]:
    """A savepoint inside a client transaction (so an expected error leaves it usable);
    nothing outside one."""
    if _CURRENT.get() is None:
        yield
        return
    async with conn.transaction():
        yield
