"""Every node's fan-out: ``helios.change_events`` -> this node's subscriptions.

While it has subscriptions, the hub LISTENs on the capture channel (and looks anyway
once a second, in case a notification was lost with a connection), reads events past
the last position it dispatched, in order, and offers each to the subscriptions on its
table. Without any it does not LISTEN, so a captured write wakes no process but the
leader's; the first subscription waits (:meth:`Hub.ready`) until it LISTENs again and
has read where the change log ends. A subscription
with ``from_position`` first catches up from the table, then joins the live stream at
exactly the position it has read up to, so nothing is missed or repeated.

A consumer (a WebSocket connection) is an :class:`EventSink` with a bounded queue:
``offer`` never blocks the hub; when it refuses, the subscription ends with a
slow-consumer error that says which position to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.security.principals import Principal
from heliosdb.services.changes import stagetimes
from heliosdb.services.changes.capture import CHANNEL
from heliosdb.services.changes.events import ChangeEvent, parse_notice
from heliosdb.services.changes.filters import RowFilter

log = logging.getLogger("heliosdb.changes")

PAGE = 2000
# Offers between two yields to the event loop (about 10-20 ms of work): every yield
# lets each connection's writer send what it has, one socket write each, so fewer,
# larger slices cost fewer writes; more would delay other requests for longer.
_OFFERS_PER_SLICE = 10_000
_EVENTS_PER_SLICE = 250  # and events (each decoded, and framed at least once)
_INBOX_SLICE = 2000  # events taken from the inbox at a time


def _drain(queue: deque[ChangeEvent], count: int) -> list[ChangeEvent]:
    return [queue.popleft() for _ in range(min(count, len(queue)))]


_SELECT_EVENTS = (
    "SELECT position, schema_name, table_name, event_type, payload::text AS payload "
    "FROM helios.change_events WHERE position > $1"
)
LAST_POSITION = "SELECT last_position FROM helios.change_capture WHERE slot_name = $1"
_CATCH_UP = (
    "SELECT c.pruned_through, e.* FROM helios.change_capture c LEFT JOIN LATERAL ("
    "SELECT position, schema_name, table_name, event_type, payload::text AS payload "
    "FROM helios.change_events WHERE position > $1 AND schema_name = $2 "
    "AND table_name = $3 ORDER BY position LIMIT $4) e ON true WHERE c.slot_name = $5"
)


class EventSink(Protocol):
    def offer(
        self, subscription: Subscription, event: ChangeEvent, match: tuple[bool, bool] | None
    ) -> bool:
        """Queue one event without waiting; False when the consumer's queue is full.

        ``match`` is, for a filtered UPDATE, whether the filter matched (new row, old row).
        """

    async def wait_room(self) -> None:
        """Wait until the consumer's queue has room (catch-up reads at the consumer's pace)."""

    def end(self, subscription: Subscription, error: HeliosError) -> None:
        """The subscription ended on the server's side (slow consumer, lost privilege)."""


@dataclass(eq=False, slots=True)
class Subscription:
    id: str
    principal: Principal
    schema: str
    table: str
    events: frozenset[str]
    filter: RowFilter | None
    sink: EventSink
    cursor: int  # the last position this subscription has been offered (or skipped)
    catching_up: bool = False
    active: bool = True
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def _event(row: Any) -> ChangeEvent:
    return ChangeEvent(
        int(row["position"]),
        row["schema_name"],
        row["table_name"],
        row["event_type"],
        row["payload"].encode(),
    )


class Hub:
    def __init__(self, engine: Engine, slot: str) -> None:
        self.engine = engine
        self.slot = slot
        self.delivered = 0  # the last position dispatched on this node
        self._by_table: dict[tuple[str, str], set[Subscription]] = {}
        self._wake = asyncio.Event()
        self._inbox: deque[ChangeEvent] = deque()  # from this node's leader, in order
        self._queued = 0  # the newest position queued in the inbox
        self._expected = 0  # the newest position this node's leader is writing
        self._need_read = True
        # While this node's leader leads, every event comes from it (dispatch_written),
        # so the hub does not LISTEN: each NOTIFY of its writes was one more wakeup of
        # this process per batch (~150-200 us of CPU on a crowded machine) to be skipped.
        self._local_leader = False
        self._listening = False
        # Subscribes waiting for the hub to LISTEN and find the end of the change log.
        self._waiters: list[asyncio.Future[None]] = []
        self.on_dispatch: Callable[[ChangeEvent], None] | None = None  # benchmarks, metrics

    # -- subscriptions ------------------------------------------------------------

    def add(self, sub: Subscription, from_position: int | None) -> None:
        if from_position is None:
            sub.cursor = self.delivered
        else:
            sub.cursor = from_position
            sub.catching_up = True
            sub.task = asyncio.create_task(self._catch_up(sub), name=f"catch-up {sub.id}")
        self._by_table.setdefault((sub.schema, sub.table), set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        sub.active = False
        subs = self._by_table.get((sub.schema, sub.table))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_table[(sub.schema, sub.table)]
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if not self._by_table:
            self._wake.set()  # the last one: stop listening

    async def ready(self, timeout: float = 10.0) -> None:
        """Return once this hub's ``delivered`` is the end of the change log, kept so:
        it LISTENs (or this process's leader hands it every event). A hub with no
        subscriptions does neither; before its first, it LISTENs and reads how far the
        log goes (events before that were written before the subscribe)."""
        if self._listening or self._local_leader:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise HeliosError(
                ErrorCode.UNAVAILABLE, "the change hub cannot reach the engine; try again"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _dispatches(self) -> bool:
        """Whether anything here takes events: a subscription or an observer."""
        return bool(self._by_table or self.on_dispatch is not None or stagetimes.enabled())

    def _wants_events(self) -> bool:
        """Whether to LISTEN: something takes events, or a subscribe waits to."""
        return bool(self._waiters) or self._dispatches()

    def _release(self) -> None:
        # Each waiter leaves the list itself (ready()), right before its subscription
        # is added: until then the hub keeps listening.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def count(self) -> int:
        return sum(len(s) for s in self._by_table.values())

    def _offer(
        self, sub: Subscription, event: ChangeEvent, memo: dict[int, tuple[bool, bool]]
    ) -> bool:
        """Offer ``event`` to ``sub`` if it wants it; False if the subscription ended.

        ``memo`` holds this event's result per filter: subscriptions with the same filter
        on a table share one compiled RowFilter (ChangeService), evaluated once per event.
        """
        if event.event_type in sub.events:
            match: tuple[bool, bool] | None = None
            wanted = True
            row_filter = sub.filter
            if row_filter is not None and event.event_type != "TRUNCATE":
                result = memo.get(id(row_filter))
                if result is None:
                    data = event.data
                    result = (row_filter.matches(data["row"]), row_filter.matches(data["old_row"]))
                    memo[id(row_filter)] = result
                wanted = result[0] or result[1]
                if event.event_type == "UPDATE":
                    match = result
            if wanted and not sub.sink.offer(sub, event, match):
                self._end(sub, _slow_consumer(sub))
                return False
        sub.cursor = event.position
        return True

    def _end(self, sub: Subscription, error: HeliosError) -> None:
        self.remove(sub)
        sub.sink.end(sub, error)

    # -- live stream --------------------------------------------------------------

    def _dispatch_one(self, event: ChangeEvent) -> int:
        """Offer one event to this node's live subscriptions; the number of offers."""
        self.delivered = event.position
        subs = self._by_table.get((event.schema, event.table))
        offers = 0
        if subs:
            memo: dict[int, tuple[bool, bool]] = {}
            position, kind = event.position, event.event_type
            for sub in list(subs):  # a copy: an offer may end (remove) a subscription
                if sub.active and not sub.catching_up and position > sub.cursor:
                    offers += 1
                    if sub.filter is None and kind in sub.events:
                        # The common case inline: no filter, so no match to compute.
                        if not sub.sink.offer(sub, event, None):
                            self._end(sub, _slow_consumer(sub))
                            continue
                        sub.cursor = position
                    else:
                        self._offer(sub, event, memo)
        if self.on_dispatch is not None:
            self.on_dispatch(event)
        return offers

    async def _dispatch(self, events: Iterable[ChangeEvent]) -> None:
        """Dispatch in order, yielding to the event loop every few thousand offers, so
        connections write (and requests are served) while a big batch fans out."""
        offers = count = 0
        for event in events:
            if event.position <= self.delivered:
                continue
            offers += self._dispatch_one(event)
            count += 1
            if offers >= _OFFERS_PER_SLICE or count >= _EVENTS_PER_SLICE:
                offers = count = 0
                if stagetimes.enabled():
                    stagetimes.record("hub", self.delivered, time.time())
                await asyncio.sleep(0)
        if stagetimes.enabled():
            stagetimes.record("hub", self.delivered, time.time())

    def dispatch_written(self, events: list[ChangeEvent]) -> None:
        """Events this node's capture leader just committed (or none: read the table).

        They are queued only when they follow on from what this hub has dispatched or
        queued: after a leader change the table may hold events this hub has not read
        yet, so then the reader goes first (in order, from the table) and these are read
        again there.
        """
        last = self._inbox[-1].position if self._inbox else self.delivered
        if events and events[0].position == last + 1:
            if self._idle():
                # Nothing on this node wants them: dispatched as they are, without
                # waking the hub's task (a lone write's hand-over cost a task step).
                self.delivered = self._queued = events[-1].position
                return
            self._inbox.extend(events)
            self._queued = events[-1].position
        else:
            self._need_read = True
        self._wake.set()

    def _idle(self) -> bool:
        """Nothing to dispatch to: no subscription, nothing queued, no observer."""
        return not (self._inbox or self._dispatches())

    def expect_written(self, position: int) -> None:
        """This node's leader is about to write events through ``position`` and will
        hand them over (dispatch_written): their NOTIFY needs no read of the table."""
        self._expected = position

    def leader_started(self) -> None:
        """This node's leader leads: no other leader writes until it stops (the advisory
        lock), so NOTIFYs need not be heard meanwhile."""
        self._local_leader = True
        self._wake.set()

    def leader_stopped(self) -> None:
        """This node's leader failed or stopped: a write it announced may have
        committed without a hand-over, so the table is read (and every NOTIFY is again)."""
        self._expected = 0
        self._local_leader = False
        self._need_read = True
        self._wake.set()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """LISTEN while something here takes events, unless this node's leader leads;
        after either change the table is read (LISTEN first, so nothing written
        meanwhile is missed; with nothing to dispatch to, the read only finds where the
        log ends)."""
        wanted = not self._local_leader and self._wants_events()
        if self._listening != wanted:
            self._listening = wanted
            if wanted:
                await conn.add_listener(CHANNEL, self._notified)
            else:
                await conn.remove_listener(CHANNEL, self._notified)
            self._need_read = True

    async def run(self, start_position: int) -> None:
        self.delivered = max(self.delivered, start_position)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self.engine.dedicated("heliosdb-changes")
                self._listening = False
                self._need_read = True
                while True:
                    self._wake.clear()
                    await self._listen(conn)
                    while self._inbox:
                        await self._dispatch(_drain(self._inbox, _INBOX_SLICE))
                    if self._need_read:
                        self._need_read = False
                        await self._read(conn)
                    if self._inbox or self._need_read:
                        continue
                    if self._waiters and (self._listening or self._local_leader):
                        self._release()
                    try:
                        # (asyncio.timeout, not wait_for: no task made for every wakeup)
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    except TimeoutError:
                        # In case a notification was lost; none is awaited while this
                        # node's leader leads (it hands every event over itself), nor
                        # while nothing here takes events.
                        self._need_read = self._listening
            except asyncio.CancelledError:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, HeliosError) as exc:
                log.warning("change hub lost its engine connection: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
            except Exception:  # e.g. asyncpg's InternalClientError: the hub must go on
                log.exception("change hub failed; reconnecting")
                await asyncio.sleep(1.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        # The payload is the newest position written, and the events when they fit
        # (events.encode_notice). The leader's own node has them queued already
        # (dispatch_written), or will as soon as the leader's write returns
        # (expect_written): the NOTIFY may arrive first. Then nothing to do.
        text = str(payload)
        head = text.split("\n", 1)[0]
        seen = max(self._queued, self.delivered, self._expected)
        if head.isascii() and head.isdigit() and int(head) <= seen:
            return  # the common case, decided without parsing the events
        newest, events = parse_notice(text)
        if 0 <= newest <= seen:
            return
        if events:
            self.dispatch_written(events)  # or a read, when they do not follow on
        else:
            self._need_read = True
            self._wake.set()

    async def _read(self, conn: asyncpg.Connection) -> None:
        if not self._dispatches():
            # Nothing to dispatch to (a hand-over or notice that did not follow on, a
            # leader change): only where the log ends matters, for the next subscription.
            last = await conn.fetchval(LAST_POSITION, self.slot)
            self.delivered = self._queued = max(self.delivered, int(last or 0))
            return
        while True:
            rows = await conn.fetch(
                _SELECT_EVENTS + " ORDER BY position LIMIT $2", self.delivered, PAGE
            )
            if rows and self.delivered and rows[0]["position"] > self.delivered + 1:
                self._lost(self.delivered, int(rows[0]["position"]) - 1)
            if rows:
                await self._dispatch([_event(r) for r in rows])
            if len(rows) < PAGE:
                return

    def _lost(self, after: int, through: int) -> None:
        """Events were swept before this hub read them (a retention shorter than this
        node's lag): every subscription here would miss them, so each ends, asking to
        resync, rather than skip them silently."""
        log.warning("events %d..%d were swept before this node read them", after + 1, through)
        for subs in list(self._by_table.values()):
            for sub in list(subs):
                sub.cursor = min(sub.cursor, after)
                self._end(sub, _resync(sub, through))

    # -- catch-up -----------------------------------------------------------------

    async def _catch_up(self, sub: Subscription) -> None:
        try:
            while sub.active:
                target = self.delivered
                async with self.engine.connection(Access.SYSTEM) as conn:
                    # One statement, one snapshot: the page and how far the retention
                    # sweep has deleted, so a sweep that overtakes a slow catch-up is seen.
                    rows = await conn.fetch(
                        _CATCH_UP, sub.cursor, sub.schema, sub.table, PAGE, self.slot
                    )
                if rows and rows[0]["pruned_through"] > sub.cursor:
                    self._end(sub, _resync(sub, int(rows[0]["pruned_through"])))
                    return
                rows = [r for r in rows if r["position"] is not None]
                for row in rows:
                    await sub.sink.wait_room()
                    if not sub.active or not self._offer(sub, _event(row), {}):
                        return
                if len(rows) < PAGE:
                    # Everything of this table up to `target` has been offered.
                    sub.cursor = max(sub.cursor, target)
                    if self.delivered == target:
                        sub.catching_up = False  # no await since the check: no gap
                        return
        except asyncio.CancelledError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, HeliosError) as exc:
            log.warning("catch-up of subscription %s failed: %s", sub.id, exc)
            self._end(
                sub,
                HeliosError(
                    ErrorCode.UNAVAILABLE,
                    "the subscription could not read past events; resubscribe",
                    from_position=sub.cursor,
                ),
            )


def _resync(sub: Subscription, pruned_through: int) -> HeliosError:
    return HeliosError(
        ErrorCode.INVALID_ARGUMENT,
        f"subscription ended: events after position {sub.cursor} were removed by the "
        "retention sweep before they were read; read the table again to resync, then "
        "subscribe without from_position",
        reason="resync_required",
        oldest_position=pruned_through + 1,
    )


def _slow_consumer(sub: Subscription) -> HeliosError:
    return HeliosError(
        ErrorCode.RESOURCE_EXHAUSTED,
        "subscription ended: events arrived faster than the client read them and the "
        "connection's queue is full; resubscribe with from_position to resume",
        reason="slow_consumer",
        from_position=sub.cursor,
    )
