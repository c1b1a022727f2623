"""The key-value service: transactions, coalesced GET/SET, expiry sweep, pub/sub, wakeups.

    KeyValue
      transaction(access, db, write)   one engine transaction as a Tx (store.py)
      get_string / set_string          plain GET/SET through the Coalescer
      publish / subscribe              channels delivered on every node (LISTEN/NOTIFY)
      wait_for_push                    BLPOP & co. sleep until a push on any node
      sweep                            deletes expired rows in the background

Durability: writes commit with synchronous_commit on (``always``) or off (``everysec``:
the engine's WAL writer flushes within a fraction of a second, like Redis's AOF everysec).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from heliosdb.engine import Access, Engine
from heliosdb.engine.sqlstate import from_engine
from heliosdb.services.keyvalue.coalesce import Coalescer
from heliosdb.services.keyvalue.schema import GRANTS
from heliosdb.services.keyvalue.store import Tx, now_ms
from heliosdb.services.keyvalue.subscriptions import Remote, SubscriptionBook

log = logging.getLogger("heliosdb.services.keyvalue")

CHANNEL = "helios_kv"
SWEEP_INTERVAL_SECONDS = 0.25  # the shortest pause between expiry sweeps
SWEEP_IDLE_SECONDS = 2.0  # the longest: a key given a TTL after a sweep is gone this late
SWEEP_BATCH = 1000
MESSAGE_SWEEP_SECONDS = 10.0  # stored messages are swept this often
# Up to SWEEP_BATCH expired keys deleted, and when the next live key expires (the sweep
# sleeps until then: an idle node borrows an engine connection every SWEEP_IDLE_SECONDS).
_SWEEP = (
    "WITH gone AS (DELETE FROM helios_kv.keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
    "helios_kv.keys WHERE expires_at_ms <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)) "
    "AND expires_at_ms <= $1 RETURNING 1) "
    "SELECT (SELECT count(*) FROM gone), "
    "(SELECT min(expires_at_ms) FROM helios_kv.keys WHERE expires_at_ms > $1)"
)
NOTIFY_LIMIT = 7000  # the engine caps a NOTIFY payload just under 8000 bytes
MESSAGE_TTL_SECONDS = 60  # stored (large) messages are read by every node well before this
_STORE_MESSAGE = "INSERT INTO helios_kv.messages (channel, message) VALUES ($1, $2) RETURNING id"
_READ_MESSAGE = "SELECT channel, message FROM helios_kv.messages WHERE id = $1"
_SWEEP_MESSAGES = (
    "DELETE FROM helios_kv.messages WHERE created_at < now() - make_interval(secs => $1)"
)

Deliver = Callable[[bytes, bytes, bytes | None], None]  # (channel, message, pattern)


def glob_to_regex(pattern: bytes) -> re.Pattern[bytes]:
    """Redis's glob: * ? [abc] [^a-z] and backslash escapes."""
    out = bytearray()
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == b"[":
            end = pattern.find(b"]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith(b"^")
                if negate:
                    body = body[1:]
                body = body.replace(b"\\", b"\\\\")
                out += b"[" + (b"^" if negate else b"") + body + b"]"
                i = end
        else:
            out += re.escape(c)
        i += 1
    try:
        return re.compile(bytes(out) + b"\\Z", re.S)
    except re.error:
        return re.compile(re.escape(pattern) + b"\\Z")


def _receivers(remote: Remote, channel: bytes) -> int:
    """Receivers of ``channel`` among other nodes' rows: its subscribers, matching patterns."""
    count = 0
    for is_pattern, name, receivers in remote:
        if not is_pattern:
            count += receivers if name == channel else 0
        elif glob_to_regex(name).match(channel):
            count += receivers
    return count


class KeyValue:
    def __init__(
        self, engine: Engine, *, durability: str = "everysec", coalesce_workers: int = 2
    ) -> None:
        self.engine = engine
        self.durability = durability
        self.node_id = uuid.uuid4().hex
        self.coalescer = Coalescer(
            engine,
            workers=coalesce_workers,
            synchronous_commit=durability == "always",
            before_commit=self._notify_pushes,
            after_commit=self._wake,
            push_payload=self._push_payload,
        )
        self._channels: dict[bytes, set[Deliver]] = {}
        self._patterns: dict[bytes, tuple[re.Pattern[bytes], set[Deliver]]] = {}
        self._waiters: dict[tuple[int, bytes], set[asyncio.Event]] = {}
        self._inbox: deque[tuple[bytes, bytes] | int] = deque()
        self.book = SubscriptionBook(engine, self.node_id, self._local_count)
        self.book.local_names = self._local_names
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Any = None
        self._listener_release: Callable[[], Any] | None = None
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        async with self.engine.connection(Access.SYSTEM) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios_kv.grants'))")
            for statement in GRANTS:
                await conn.execute(statement)
        pool = self.engine.pool(Access.READ_WRITE)
        self._listener = await pool.acquire()
        self._listener_release = lambda: pool.release(self._listener)
        await self._listener.add_listener(CHANNEL, self._on_notify)
        await self.coalescer.start()
        self._tasks.append(asyncio.create_task(self._sweep_forever()))
        self._tasks.append(asyncio.create_task(self.book.beat_forever()))
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._reader is not None:
            self._tasks.append(self._reader)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.book.leave()
        await self.coalescer.stop()
        if self._listener is not None and self._listener_release is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(CHANNEL, self._on_notify)
                await self._listener_release()
            self._listener = None

    # -- transactions ----------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(
        self, access: Access, db: int, *, write: bool, atomic: bool = False
    ) -> AsyncIterator[Tx]:
        """A Tx on an engine connection of ``access``; writes commit per the durability.

        Reads run statement by statement unless ``atomic``; writes always in one transaction.
        """
        if write and access is Access.READ_ONLY:
            raise AssertionError("the interface refuses writes of read-only principals")
        async with self.engine.connection(access) as conn:
            tx = Tx(conn, db)
            if not write and not atomic:
                try:
                    yield tx
                except asyncpg.PostgresError as exc:
                    raise from_engine(exc) from None
                return
            begin = "BEGIN"
            if write and self.durability != "always":
                begin += "; SET LOCAL synchronous_commit TO off"
            await conn.execute(begin)
            try:
                yield tx
                if tx.pushed:
                    await self._notify_pushes(conn, tx.pushed)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                if isinstance(exc, asyncpg.PostgresError):
                    raise from_engine(exc) from None
                raise
            try:
                await conn.execute("COMMIT")
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
        self._wake(tx.pushed)

    async def write(self, db: int, work: Callable[[Tx], Awaitable[Any]]) -> Any:
        """Run one write command in the next group transaction; its result or its error."""
        return await self.coalescer.run(db, work)

    async def incr_by(self, db: int, key: bytes, delta: int) -> int:
        """INCRBY, batched with other clients' counters (group commit)."""
        return await self.coalescer.incr(db, key, delta)

    async def push(
        self, db: int, key: bytes, values: list[bytes], *, left: bool, only_existing: bool
    ) -> int:
        """LPUSH/RPUSH(X), batched with other clients' pushes (group commit)."""
        return await self.coalescer.push(db, key, values, left=left, only_existing=only_existing)

    async def add(self, db: int, key: bytes, type_: str, elements: list[tuple[bytes, Any]]) -> int:
        """Plain HSET / SADD / ZADD, batched with other clients' (group commit): new elements."""
        return await self.coalescer.add(db, key, type_, elements)

    async def get_string(self, db: int, key: bytes) -> bytes | None:
        return await self.coalescer.get(db, key)

    async def set_string(
        self, db: int, key: bytes, value: bytes, expires_at_ms: int | None
    ) -> None:
        await self.coalescer.set(db, key, value, expires_at_ms)

    # -- blocking pops ---------------------------------------------------------------------

    async def wait_for_push(self, db: int, keys: list[bytes], timeout: float | None) -> bool:
        """Sleep until something is pushed to one of ``keys`` (True) or the timeout (False)."""
        event = asyncio.Event()
        slots = [(db, k) for k in keys]
        for slot in slots:
            self._waiters.setdefault(slot, set()).add(event)
        try:
            # Pushes on a node we miss (a dropped notification) are caught by the re-check.
            await asyncio.wait_for(event.wait(), timeout=min(timeout or 1.0, 1.0))
            return True
        except TimeoutError:
            return False
        finally:
            for slot in slots:
                waiting = self._waiters.get(slot)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[slot]

    def _wake(self, pushed: set[tuple[int, bytes]]) -> None:
        for slot in pushed:
            for event in self._waiters.get(slot, ()):
                event.set()

    def _push_payload(self, pushed: set[tuple[int, bytes]]) -> str | None:
        """The NOTIFY that wakes other nodes' blocked pops; None when too big to send."""
        payload = orjson.dumps(
            {
                "o": self.node_id,
                "k": "push",
                "p": [[db, base64.b64encode(key).decode()] for db, key in pushed],
            }
        ).decode()
        return payload if len(payload) < NOTIFY_LIMIT else None

    async def _notify_pushes(self, conn: Any, pushed: set[tuple[int, bytes]]) -> None:
        payload = self._push_payload(pushed)
        if payload is not None:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    # -- pub/sub ---------------------------------------------------------------------------

    def subscribe(self, channel: bytes, deliver: Deliver) -> None:
        self._channels.setdefault(channel, set()).add(deliver)
        self.book.changed(False, channel)

    def unsubscribe(self, channel: bytes, deliver: Deliver) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.discard(deliver)
            if not subscribers:
                del self._channels[channel]
            self.book.changed(False, channel)

    def psubscribe(self, pattern: bytes, deliver: Deliver) -> None:
        entry = self._patterns.setdefault(pattern, (glob_to_regex(pattern), set()))
        entry[1].add(deliver)
        self.book.changed(True, pattern)

    def punsubscribe(self, pattern: bytes, deliver: Deliver) -> None:
        entry = self._patterns.get(pattern)
        if entry is not None:
            entry[1].discard(deliver)
            if not entry[1]:
                del self._patterns[pattern]
            self.book.changed(True, pattern)

    async def subscriptions_recorded(self) -> None:
        """Wait until every node can count this node's current subscribers."""
        await self.book.flush()

    def _local_count(self, pattern: bool, name: bytes) -> int:
        if pattern:
            entry = self._patterns.get(name)
            return 0 if entry is None else len(entry[1])
        return len(self._channels.get(name, ()))

    def _local_names(self) -> list[tuple[bool, bytes]]:
        return [(False, c) for c in self._channels] + [(True, p) for p in self._patterns]

    async def channels(self, pattern: bytes | None) -> list[bytes]:
        """Channels with a subscriber on any node (PUBSUB CHANNELS)."""
        regex = None if pattern is None else glob_to_regex(pattern)
        names = set(self._channels) | {n for p, n, _ in await self.book.remote() if not p}
        return sorted(c for c in names if regex is None or regex.match(c))

    async def subscriber_counts(self, channels: list[bytes]) -> list[int]:
        """Subscribers of each channel on every node, patterns aside (PUBSUB NUMSUB)."""
        remote: dict[bytes, int] = {}
        if channels:
            for is_pattern, name, receivers in await self.book.remote():
                if not is_pattern:
                    remote[name] = remote.get(name, 0) + receivers
        return [len(self._channels.get(c, ())) + remote.get(c, 0) for c in channels]

    async def pattern_count(self) -> int:
        """Distinct patterns subscribed on any node (PUBSUB NUMPAT)."""
        remote = {n for p, n, _ in await self.book.remote() if p}
        return len(set(self._patterns) | remote)

    def local_channel_count(self) -> int:
        return len(self._channels)

    def local_pattern_count(self) -> int:
        return len(self._patterns)

    async def publish(self, channel: bytes, message: bytes) -> int:
        """Deliver here at once and to other nodes through the engine; return the receivers
        on every node (this node's exactly, the others' as they last recorded them).

        A message too big for a NOTIFY payload is stored in helios_kv.messages and only its
        id is notified; the other nodes read it from there (swept after MESSAGE_TTL).
        """
        received = self._deliver(channel, message)
        payload = orjson.dumps(
            {
                "o": self.node_id,
                "k": "msg",
                "c": base64.b64encode(channel).decode(),
                "m": base64.b64encode(message).decode(),
            }
        ).decode()
        async with self.engine.connection(Access.READ_WRITE) as conn:
            if len(payload) >= NOTIFY_LIMIT:
                message_id = await conn.fetchval(_STORE_MESSAGE, channel, message)
                payload = orjson.dumps({"o": self.node_id, "k": "big", "i": message_id}).decode()
            remote = await self.book.notify_and_count(conn, CHANNEL, payload, channel)
        return received + _receivers(remote, channel)

    def _deliver(self, channel: bytes, message: bytes) -> int:
        count = 0
        for deliver in list(self._channels.get(channel, ())):
            deliver(channel, message, None)
            count += 1
        for pattern, (regex, subscribers) in list(self._patterns.items()):
            if regex.match(channel):
                for deliver in list(subscribers):
                    deliver(channel, message, pattern)
                    count += 1
        return count

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = orjson.loads(payload)
            if event.get("o") == self.node_id:
                return
            if event["k"] == "push":
                self._wake({(int(db), base64.b64decode(key)) for db, key in event["p"]})
                return
            if event["k"] == "msg":
                message: tuple[bytes, bytes] | int = (
                    base64.b64decode(event["c"]),
                    base64.b64decode(event["m"]),
                )
            else:
                message = int(event["i"])
        except Exception:
            log.exception("ignored a malformed key-value notification")
            return
        if not self._inbox and isinstance(message, tuple):
            self._deliver(*message)
            return
        # A stored message is read first; later ones wait behind it to keep the order.
        self._inbox.append(message)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_inbox())

    async def _read_inbox(self) -> None:
        while self._inbox:
            message = self._inbox[0]
            if isinstance(message, int):
                try:
                    async with self.engine.connection(Access.READ_WRITE) as conn:
                        row = await conn.fetchrow(_READ_MESSAGE, message)
                except Exception:
                    log.warning("could not read stored message %d", message, exc_info=True)
                    row = None
                if row is not None:
                    self._deliver(bytes(row[0]), bytes(row[1]))
            else:
                self._deliver(*message)
            self._inbox.popleft()

    # -- expiry ----------------------------------------------------------------------------

    async def sweep(self) -> tuple[int, int | None]:
        """Delete up to SWEEP_BATCH expired keys: how many, and when (unix ms) the next
        live key with a TTL expires (None: no key has one)."""
        async with self.engine.connection(Access.READ_WRITE) as conn:
            deleted, next_ms = (await conn.fetch(_SWEEP, now_ms(), SWEEP_BATCH))[0]
        return int(deleted), next_ms

    async def sweep_messages(self) -> int:
        """Delete stored pub/sub messages older than MESSAGE_TTL_SECONDS; return how many."""
        async with self.engine.connection(Access.READ_WRITE) as conn:
            result = await conn.execute(_SWEEP_MESSAGES, float(MESSAGE_TTL_SECONDS))
        return int(result.split()[-1])

    async def _sweep_forever(self) -> None:
        """Sweep when the next key expires (within SWEEP_INTERVAL_SECONDS of it), and at
        least every SWEEP_IDLE_SECONDS for keys given a TTL since (on any node). Expired
        keys are invisible to every command whether or not the sweep has deleted them."""
        messages_swept = 0.0
        while True:
            delay = SWEEP_IDLE_SECONDS
            try:
                deleted, next_ms = await self.sweep()
                while deleted >= SWEEP_BATCH:
                    deleted, next_ms = await self.sweep()
                if next_ms is not None:
                    delay = min(max((next_ms - now_ms()) / 1000, SWEEP_INTERVAL_SECONDS), delay)
                if time.monotonic() - messages_swept >= MESSAGE_SWEEP_SECONDS:
                    messages_swept = time.monotonic()
                    await self.sweep_messages()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("expiry sweep failed", exc_info=True)
            await asyncio.sleep(delay)
