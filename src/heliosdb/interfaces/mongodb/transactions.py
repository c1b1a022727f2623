"""Logical sessions (``lsid``) and what hangs off them: multi-document transactions and
retryable writes. Shared by every connection of the listener, because drivers send the
commands of one session over any pooled connection.

A transaction, as drivers run it:

    {insert: ..., lsid, txnNumber: 5, autocommit: false, startTransaction: true, readConcern}
    {find: ...,   lsid, txnNumber: 5, autocommit: false}
    {commitTransaction: 1, lsid, txnNumber: 5, autocommit: false, writeConcern}   (admin)

The first command opens an engine transaction (services/documents/transactions.py) on a
connection that stays with the transaction until commit, abort, a newer ``txnNumber``
on the session, ``endSessions``, or the lifetime limit. Any error inside a transaction
aborts it, as in MongoDB; later commands of it get NoSuchTransaction (251). Errors a
retry of the whole transaction may cure (write conflicts, NoSuchTransaction) carry the
``TransientTransactionError`` label, which ``with_transaction`` callbacks retry on.

A ``txnNumber`` without ``autocommit`` is a retryable write: the reply of the last one is
kept per session, so a driver's retry of the same number gets the first reply again
instead of writing twice (only on this node, and only until the session expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bson

from heliosdb.errors import HeliosError
from heliosdb.interfaces.mongodb import errors
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.services.documents import bsonform
from heliosdb.services.documents import transactions as engine_transactions
from heliosdb.services.documents.transactions import DocumentTransaction

if TYPE_CHECKING:
    from heliosdb.interfaces.mongodb.connection import Request, Session
    from heliosdb.interfaces.mongodb.registry import Handler

log = logging.getLogger("heliosdb.interfaces.mongodb")

TRANSIENT = "TransientTransactionError"
SESSION_IDLE_SECONDS = 30 * 60.0  # logicalSessionTimeoutMinutes in hello
MAX_RETRY_REPLY_BYTES = 1024 * 1024
# What MongoDB lets run inside a transaction (count, listCollections, drop... do not).
ALLOWED_IN_TRANSACTION = frozenset(
    {
        "find",
        "getMore",
        "killCursors",
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "aggregate",
        "distinct",
        "create",
        "createIndexes",
        "commitTransaction",
        "abortTransaction",
    }
)
RETRYABLE_WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
READ_CONCERN_LEVELS = frozenset({"local", "majority", "snapshot"})


class State(enum.Enum):
    NONE = "none"
    ACTIVE = "active"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass
class LogicalSession:
    owner: str
    lsid: bytes
    txn_number: int = -1
    state: State = State.NONE
    transaction: DocumentTransaction | None = None
    expiry: asyncio.TimerHandle | None = None
    expired: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    used_at: float = field(default_factory=time.monotonic)
    retry_command: str = ""
    retry_reply: dict[str, Any] | None = None


class SessionTable:
    """Every logical session with state on this node, by (principal id, lsid)."""

    def __init__(
        self, lifetime_seconds: float, lock_timeout_ms: int, max_per_principal: int
    ) -> None:
        self.lifetime_seconds = lifetime_seconds
        self.lock_timeout_ms = lock_timeout_ms
        self.max_per_principal = max_per_principal
        self._sessions: dict[tuple[str, bytes], LogicalSession] = {}
        self._next_sweep = time.monotonic() + 60.0
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def open_transactions(self) -> int:
        return sum(1 for s in self._sessions.values() if s.transaction is not None)

    # -- entry point from the dispatcher ----------------------------------------------
    async def run(self, session: Session, request: Request, handler: Handler) -> dict[str, Any]:
        """Run a command that carries ``lsid`` and ``txnNumber``; the reply or error
        document (with ``errorLabels``)."""
        body = request.body
        number = body.get("txnNumber")
        if isinstance(number, bool) or not isinstance(number, int):
            raise CommandError(14, "BSON field 'txnNumber' is the wrong type, expected 'long'")
        logical = self._get(session.owner, _lsid_bytes(body.get("lsid")))
        autocommit = body.get("autocommit")
        if autocommit is None:
            return await self._retryable(session, request, handler, logical, number)
        if autocommit is not False:
            raise CommandError(72, "Specifying autocommit=true is not allowed.")
        async with logical.lock:
            try:
                reply = await self._in_transaction(session, request, handler, logical, number)
            except (HeliosError, CommandError) as exc:
                reply = errors.from_exception(exc)
            except Exception:
                log.exception("mongodb command %s in a transaction failed", request.name)
                reply = errors.error_document(1, "internal error")
            if reply.get("ok", 1.0) == 0.0 or reply.get("writeErrors"):
                reply = await self._failed(logical, number, request.name, reply)
        return reply

    async def _in_transaction(
        self,
        session: Session,
        request: Request,
        handler: Handler,
        logical: LogicalSession,
        number: int,
    ) -> dict[str, Any]:
        body = request.body
        name = request.name
        if body.get("startTransaction"):
            await self._start(session, request, logical, number)
        else:
            finished = self._check_current(logical, number, name)
            if finished is not None:
                return finished
            if "readConcern" in body:
                raise CommandError(
                    72, "Only the first command in a transaction may specify a readConcern"
                )
        if name == "commitTransaction":
            await self._finish(logical, commit=True)
            return {}
        if name == "abortTransaction":
            await self._finish(logical, commit=False)
            return {}
        if name not in ALLOWED_IN_TRANSACTION:
            raise CommandError(263, f"Cannot run '{name}' in a multi-document transaction.")
        if "writeConcern" in body:
            raise CommandError(72, "Cannot set write concern after starting a transaction.")
        if logical.transaction is None:
            logical.transaction = await self._begin(session, logical)
        txn = logical.transaction
        async with txn.lock:
            with engine_transactions.using(txn):
                return await handler(session, request)

    async def _start(
        self, session: Session, request: Request, logical: LogicalSession, number: int
    ) -> None:
        if number < logical.txn_number:
            raise CommandError(
                225,
                f"Cannot start transaction {number} on session because a newer "
                f"transaction {logical.txn_number} has already started.",
            )
        if number == logical.txn_number and logical.state is not State.NONE:
            raise CommandError(
                251,
                f"Given transaction number {number} does not match any in-progress transactions.",
            )
        concern = request.body.get("readConcern") or {}
        level = concern.get("level") if isinstance(concern, dict) else None
        if level is not None and level not in READ_CONCERN_LEVELS:
            raise CommandError(
                72,
                f"The readConcern level must be either 'local' (default), 'majority' or "
                f"'snapshot' in order to run in a transaction, not '{level}'",
            )
        if request.name in ("commitTransaction", "abortTransaction"):
            raise CommandError(
                251, f"Given transaction number {number} does not match any transaction."
            )
        await self._drop_transaction(logical)  # a newer number ends the older transaction
        logical.txn_number = number
        logical.state = State.ACTIVE
        logical.expired = False
        logical.retry_reply = None
        loop = asyncio.get_running_loop()
        logical.expiry = loop.call_later(self.lifetime_seconds, self._expire_soon, logical, number)

    def _check_current(
        self, logical: LogicalSession, number: int, name: str
    ) -> dict[str, Any] | None:
        """Raise unless ``number`` is the session's transaction and still open; a retried
        commit of a committed transaction answers ok again (the reply returned)."""
        if number == logical.txn_number:
            if logical.state is State.ACTIVE:
                return None
            if logical.state is State.COMMITTED:
                if name == "commitTransaction":
                    return {}
                if name == "abortTransaction":
                    raise CommandError(
                        256, "Cannot abort transaction: it has already been committed."
                    )
                raise CommandError(
                    256, f"Transaction {number} has been committed; start a new transaction."
                )
            if logical.state is State.ABORTED:
                why = (
                    "aborted after transactionLifetimeLimitSeconds"
                    if logical.expired
                    else "aborted"
                )
                raise CommandError(
                    251, f"Transaction with {{ txnNumber: {number} }} has been {why}."
                )
        if number < logical.txn_number:
            raise CommandError(
                225,
                f"txnNumber {number} is less than last txnNumber {logical.txn_number} "
                "seen in this session",
            )
        raise CommandError(
            251,
            f"Given transaction number {number} does not match any in-progress transactions. "
            f"The active transaction number is {logical.txn_number}",
        )

    async def _begin(self, session: Session, logical: LogicalSession) -> DocumentTransaction:
        assert session.principal is not None
        held = sum(
            1
            for s in self._sessions.values()
            if s.owner == logical.owner and s.transaction is not None
        )
        if held >= self.max_per_principal:
            raise CommandError(
                261,
                f"this key already holds {held} open transactions on this node "
                "(mongodb.max_transactions_per_principal)",
            )
        return await session.services.documents.begin(
            session.principal, lock_timeout_ms=self.lock_timeout_ms
        )

    async def _finish(self, logical: LogicalSession, *, commit: bool) -> None:
        txn = logical.transaction
        logical.transaction = None
        self._cancel_expiry(logical)
        if txn is None:  # nothing ran in it: nothing to commit or roll back
            logical.state = State.COMMITTED if commit else State.ABORTED
            return
        async with txn.lock:
            if commit:
                try:
                    await txn.commit()
                except HeliosError:
                    logical.state = State.ABORTED
                    raise
                logical.state = State.COMMITTED
            else:
                await txn.rollback()
                logical.state = State.ABORTED

    async def _failed(
        self, logical: LogicalSession, number: int, name: str, reply: dict[str, Any]
    ) -> dict[str, Any]:
        """An error inside a transaction aborts it; label what a retry may cure."""
        if logical.txn_number == number and logical.state is State.ACTIVE:
            await self._drop_transaction(logical)
            logical.state = State.ABORTED
        write_errors = reply.get("writeErrors") or []
        if reply.get("ok", 1.0) != 0.0 and write_errors:
            first = write_errors[0]
            if first.get("code") != 112:
                return reply
            # A write conflict inside a transaction is a command error, not a write error.
            reply = errors.error_document(112, str(first.get("errmsg", "WriteConflict")))
        if reply.get("code") in (112, 251) and name != "abortTransaction":
            reply["errorLabels"] = [TRANSIENT]
        return reply

    # -- retryable writes ---------------------------------------------------------------
    async def _retryable(
        self,
        session: Session,
        request: Request,
        handler: Handler,
        logical: LogicalSession,
        number: int,
    ) -> dict[str, Any]:
        if request.name not in RETRYABLE_WRITES:
            return await handler(session, request)
        async with logical.lock:
            if number < logical.txn_number:
                raise CommandError(
                    225,
                    f"Retryable write with txnNumber {number} is prohibited on this session "
                    f"because a newer retryable write with txnNumber {logical.txn_number} "
                    "has already started",
                )
            if (
                number == logical.txn_number
                and logical.retry_reply is not None
                and logical.retry_command == request.name
            ):
                return dict(logical.retry_reply)
            if logical.state is State.ACTIVE:
                await self._drop_transaction(logical)
                logical.state = State.ABORTED
            logical.txn_number = number
            logical.state = State.NONE
            logical.retry_reply = None
            reply = await handler(session, request)
            if not reply.get("writeErrors") and _small(reply):
                logical.retry_command = request.name
                logical.retry_reply = dict(reply)
            return reply

    # -- ending sessions ----------------------------------------------------------------
    async def end(self, owner: str, lsids: list[Any]) -> None:
        """endSessions/killSessions: abort their transactions and forget them."""
        for lsid in lsids:
            with contextlib.suppress(CommandError):
                key = (owner, _lsid_bytes(lsid))
                logical = self._sessions.pop(key, None)
                if logical is not None:
                    async with logical.lock:
                        await self._drop_transaction(logical)

    async def end_all(self, owner: str | None = None) -> None:
        """Abort every transaction (of ``owner``, or all when the listener stops)."""
        for key, logical in list(self._sessions.items()):
            if owner is None or logical.owner == owner:
                self._sessions.pop(key, None)
                await self._drop_transaction(logical)
        if owner is None:
            for task in list(self._tasks):
                task.cancel()

    # -- bookkeeping --------------------------------------------------------------------
    def _get(self, owner: str, lsid: bytes) -> LogicalSession:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 60.0
            for key, stale in list(self._sessions.items()):
                idle = now - stale.used_at > SESSION_IDLE_SECONDS
                if idle and stale.transaction is None and not stale.lock.locked():
                    del self._sessions[key]
        logical = self._sessions.get((owner, lsid))
        if logical is None:
            logical = self._sessions[(owner, lsid)] = LogicalSession(owner, lsid)
        logical.used_at = now
        return logical

    async def _drop_transaction(self, logical: LogicalSession) -> None:
        self._cancel_expiry(logical)
        txn, logical.transaction = logical.transaction, None
        if txn is not None:
            async with txn.lock:
                await txn.rollback()

    @staticmethod
    def _cancel_expiry(logical: LogicalSession) -> None:
        if logical.expiry is not None:
            logical.expiry.cancel()
            logical.expiry = None

    def _expire_soon(self, logical: LogicalSession, number: int) -> None:
        task = asyncio.create_task(self._expire(logical, number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, logical: LogicalSession, number: int) -> None:
        async with logical.lock:
            if logical.txn_number != number or logical.state is not State.ACTIVE:
                return
            logical.expiry = None
            await self._drop_transaction(logical)
            logical.state = State.ABORTED
            logical.expired = True
            log.info(
                "aborted MongoDB transaction %s after %s s (transactionLifetimeLimitSeconds)",
                number,
                self.lifetime_seconds,
            )


def _lsid_bytes(lsid: Any) -> bytes:
    if not isinstance(lsid, dict) or not isinstance(lsid.get("id"), bytes):
        raise CommandError(14, "BSON field 'lsid.id' is the wrong type, expected 'binData'")
    return bytes(lsid["id"])


def _small(reply: dict[str, Any]) -> bool:
    try:
        return len(bson.encode(reply, codec_options=bsonform.CODEC_OPTIONS)) <= (
            MAX_RETRY_REPLY_BYTES
        )
    except Exception:  # noqa: BLE001 - a reply we cannot size is not kept
        return False
