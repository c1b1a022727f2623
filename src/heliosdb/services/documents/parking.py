"""Engine connections kept between statements that come one after another.

A MongoDB client usually sends its next command a fraction of a millisecond after the
last reply. Taking a pooled connection and giving it back costs the node more than a
small statement's own round trip (asyncpg's queue, holder, proxy and idle timer), so
after a clean statement the store keeps the lease here, up to ``MAX_KEPT`` per access
level (a few clients at once each find one), and the next statement of that level takes
the one kept last. A lease nobody takes for ``IDLE_SECONDS`` goes back to the pool, so
the pool lends at most ``MAX_KEPT`` idle connections per level, briefly. A lease is only
kept when its session is clean (``keep_session``: the next principal gets the usual
reset) and outside any transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from heliosdb.engine import Access

IDLE_SECONDS = 0.5
MAX_KEPT = 2


class Parking:
    def __init__(self) -> None:
        self._leases: dict[Access, list[tuple[Any, float]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._returning: set[asyncio.Task[None]] = set()

    def take(self, access: Access) -> Any:
        """The lease kept last for ``access``, or None."""
        kept = self._leases.get(access)
        return kept.pop()[0] if kept else None

    def keep(self, access: Access, lease: Any) -> bool:
        """Keep ``lease`` (False: MAX_KEPT are kept already; the caller gives it back)."""
        kept = self._leases.get(access)
        if kept is None:
            kept = self._leases[access] = []
        elif len(kept) >= MAX_KEPT:
            return False
        kept.append((lease, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._sweep)
        return True

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        oldest = now
        for kept in self._leases.values():
            for entry in [e for e in kept if now - e[1] >= IDLE_SECONDS]:
                kept.remove(entry)
                self._give_back(entry[0])
            if kept:
                oldest = min(oldest, kept[0][1])
        if any(self._leases.values()):
            delay = max(0.01, IDLE_SECONDS - (now - oldest))
            self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _give_back(self, lease: Any) -> None:
        task = asyncio.get_running_loop().create_task(lease.__aexit__(None, None, None))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def close(self) -> None:
        """Give every kept lease back (before the engine's pools close)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        leases, self._leases = self._leases, {}
        for kept in leases.values():
            for lease, _ in kept:
                with contextlib.suppress(Exception):
                    await lease.__aexit__(None, None, None)
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)
