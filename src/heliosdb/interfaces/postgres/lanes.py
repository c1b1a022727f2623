"""Lanes: quick reads of several transaction-mode clients, one after another on one engine
connection.

    TxnClient --Query--> Lane (engine connection)  runs them in the order sent
    TxnClient <--reply-- Lane                     split at each ReadyForQuery, in that order

A transaction-mode pool with lanes (``postgres.lanes`` > 0) opens that many engine
connections besides its pool. A client at a transaction boundary (no engine connection
serving it, nothing held, not pinned) whose Query is one SELECT already known plain and
quick (``solo_shapes``, by the Query's shape as the fast path knows it) sends it down the
lane with the fewest queries in flight, without waiting for the queries ahead of it. The
engine finds the next query waiting when it finishes one, so its backend does not sleep
and wake for each, and several replies come back in one read: on a 2-core machine that is
most of what a pooled select costs beyond the engine's own work.

What a lane gives up: a query waits for the ones queued ahead of it on its lane. So only
shapes that ran quickly are sent there: a shape whose run took longer than ``QUICK``
seconds leaves ``solo_shapes`` for good (``slow_shapes``), and a lane whose current query
has run that long takes no more queries until it ends (they take the pool's way). A query
queued behind a slow one still waits for it; that is the cost the setting's docs state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from heliosdb.engine import Access, Engine
from heliosdb.engine.relay import EngineLoginError, EngineSession, cancel, open_session

if TYPE_CHECKING:
    from heliosdb.interfaces.postgres.pooling import TxnClient

log = logging.getLogger("heliosdb.interfaces.postgres")

QUICK = 0.05  # seconds: a query that ran longer makes its shape slow (a busy machine
# delays a quick one by a few milliseconds now and then: not slow)
_SHAPES = 1024  # remembered shapes of each kind; the set starts over when full
solo_shapes: set[bytes] = set()  # shapes of Queries that may take a lane
slow_shapes: set[bytes] = set()  # shapes that ran longer than QUICK on a lane
_length = struct.Struct("!xi").unpack_from  # a message's length, from the message's offset
_now = time.monotonic


def remember_solo(shape: bytes) -> None:
    """``shape`` (a whole Query known plain, one SELECT) may take a lane unless it ran slow."""
    if shape in slow_shapes:
        return
    if len(solo_shapes) >= _SHAPES:
        solo_shapes.clear()
    solo_shapes.add(shape)


def _slow(shape: bytes) -> None:
    solo_shapes.discard(shape)
    if len(slow_shapes) >= _SHAPES:
        slow_shapes.clear()
    slow_shapes.add(shape)


class Lane(asyncio.Protocol):
    """One engine connection running quick Queries of several clients in the order sent."""

    def __init__(self, lanes: Lanes, session: EngineSession) -> None:
        self.lanes = lanes
        self.session = session
        self.transport = cast(asyncio.Transport, session.writer.transport)
        # Per Query sent and not yet answered: its client and shape.
        self.queue: deque[tuple[TxnClient, bytes]] = deque()
        self.started = 0.0  # when the query at the head of the queue began to run
        self.carry = b""  # the start of a message whose length has not all come
        self.skip = 0  # bytes of the head client's current message still to come
        self.closed = False

    def send(self, client: TxnClient, data: bytes, shape: bytes) -> None:
        queue = self.queue
        if not queue:
            self.started = _now()
        queue.append((client, shape))
        self.lanes.sent += 1
        client.lane = self
        client.in_lane += 1
        self.transport.write(data)

    def stuck(self, now: float) -> bool:
        """Its current query has run longer than a quick one does."""
        return bool(self.queue) and now - self.started > QUICK

    def data_received(self, data: bytes) -> None:
        if self.carry:
            data = self.carry + data
            self.carry = b""
        n = len(data)
        pos = 0
        if self.skip:
            if self.skip >= n:
                self.skip -= n
                self._deliver(data)
                return
            pos = self.skip
            self.skip = 0
        start = 0
        queue = self.queue
        while n - pos >= 5:
            end = pos + 1 + _length(data, pos)[0]
            if data[pos] == 0x5A and end <= n:  # ReadyForQuery: the head's reply is whole
                self._deliver(data[start:end])
                start = pos = end
                if queue:
                    client, shape = queue.popleft()
                    now = _now()
                    if now - self.started > QUICK:
                        _slow(shape)
                    self.started = now
                    client.lane_done()
                continue
            if end > n:
                if data[pos] != 0x5A:
                    self.skip = end - n
                    pos = n
                break
            pos = end
        if pos < n:
            self.carry = data[pos:]
        if start < pos:
            self._deliver(data[start:pos])

    def _deliver(self, data: bytes) -> None:
        """Bytes of the head client's reply (none owed: an idle connection's notice)."""
        if self.queue:
            self.queue[0][0].lane_reply(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lanes.lost(self)
        while self.queue:
            client, _ = self.queue.popleft()
            client.lane_lost()

    async def cancel_head(self, client: TxnClient) -> None:
        """Cancel the running query if it is ``client``'s and has run longer than a quick
        one does. One queued behind others has not started: nothing to cancel yet. A quick
        one is over before a cancel request could reach the engine, which would then
        cancel whichever query runs there by then, another client's."""
        if self.queue and self.queue[0][0] is client and self.stuck(_now()):
            lanes = self.lanes
            await cancel(lanes.engine, lanes.access, self.session.pid, self.session.secret)


class Lanes:
    """The lanes of one transaction-mode pool (same engine role, same startup parameters)."""

    def __init__(
        self, engine: Engine, access: Access, parameters: dict[str, str], count: int
    ) -> None:
        self.engine = engine
        self.access = access
        self.parameters = parameters
        self.count = count
        self.open: list[Lane] = []
        self.opening = 0
        self.sent = 0  # queries sent down these lanes, for the metrics
        self._tasks: set[asyncio.Task[Any]] = set()

    def pick(self) -> Lane | None:
        """The open lane with the fewest queries in flight whose current query is still
        quick; None: none (lanes still opening, or all held by a slow query)."""
        if len(self.open) + self.opening < self.count:
            self._open_one()
        best: Lane | None = None
        now = 0.0
        for lane in self.open:
            queue = lane.queue
            if not queue:
                return lane
            if best is None or len(queue) < len(best.queue):
                if not now:
                    now = _now()
                if not lane.stuck(now):
                    best = lane
        return best

    def _open_one(self) -> None:
        self.opening += 1
        task = asyncio.get_running_loop().create_task(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        try:
            session = await open_session(self.engine, self.access, self.parameters)
        except (EngineLoginError, OSError) as exc:
            log.warning("could not open a lane: %s", exc)
            await asyncio.sleep(1)  # not a retry storm: the next pick tries again
            return
        finally:
            self.opening -= 1
        lane = Lane(self, session)
        session.take_buffered()
        lane.transport.set_protocol(lane)
        with contextlib.suppress(RuntimeError, AttributeError):
            lane.transport.resume_reading()
        self.open.append(lane)

    def lost(self, lane: Lane) -> None:
        with contextlib.suppress(ValueError):
            self.open.remove(lane)

    def close(self) -> None:
        for lane in list(self.open):
            lane.transport.abort()
        for task in self._tasks:
            task.cancel()
