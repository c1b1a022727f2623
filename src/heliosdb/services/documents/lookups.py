"""Finds by ``_id`` from many clients at once become one engine statement per collection.

A find whose filter is one plain ``_id`` (``{_id: <value>}``, the driver's
``find_one({"_id": ...})``) outside a client transaction comes here. When no lookup of
the same principal and collection is in flight, it runs at once, alone, on the store's
ordinary statement (a lone client waits for nothing). While one is in flight, the next
lookups queue; when it ends, every queued one goes in one statement

    SELECT q.i, t.bson FROM unnest($1::jsonb[]) WITH ORDINALITY AS q(id, i)
    JOIN <collection> AS t ON t._id = q.id

that the primary key answers id by id, and each lookup gets the rows of its own position
(the engine's ``=`` on ``_id``, exactly the single statement's comparison). Lookups in one
batch were all in flight at once, so one snapshot for all of them is a valid order, and a
client still sees its own earlier writes: they finished before its lookup was queued.
One round trip and one statement's overhead then serve a whole batch: node and engine
CPU per find fall as clients are added, instead of staying flat.

Batches are per principal (its access level picks the engine role, and the session it
leaves behind is its own) and per collection. An engine error fails every lookup of the
batch with it, as it would each of them alone (none of them is at fault by itself).
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()'d names and fixed fragments;
# every value is a bind parameter.

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

Key = tuple[str, str, Any]  # principal id, quoted table, the principal's access level
Run = Callable[[Any, str, list[Any]], Awaitable[list[Any]]]  # (principal, sql, values)
MAX_BATCH = 1000


def batch_sql(target: str) -> str:
    return (
        "SELECT q.i, t.bson FROM unnest($1::jsonb[]) WITH ORDINALITY AS q(id, i) "
        f"JOIN {target} AS t ON t._id = q.id"
    )


class IdLookups:
    """The queues of lookups waiting for the one in flight (see the module docstring)."""

    def __init__(self) -> None:
        self._busy: set[Key] = set()
        self._waiting: dict[Key, list[tuple[Any, asyncio.Future[list[bytes]]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements that served queued lookups
        self.batched = 0  # the lookups they served

    def busy(self, key: Key) -> bool:
        return key in self._busy

    def begin(self, key: Key) -> None:
        """A lookup runs alone now: later ones for ``key`` queue until ``end``."""
        self._busy.add(key)

    def end(self, key: Key, run: Run, principal: Any, target: str) -> None:
        """The lone lookup is done: run what queued meanwhile (``run(principal, sql,
        values)``), or stand down."""
        if key in self._waiting:
            task = asyncio.get_running_loop().create_task(
                self._drain(key, functools.partial(run, principal), target)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._busy.discard(key)

    def queue(self, key: Key, form: Any) -> asyncio.Future[list[bytes]]:
        """Wait behind the lookup in flight; the future gets this id's BSON rows."""
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((form, future))
        return future

    async def close(self) -> None:
        """Let the batches in flight finish (before the engine's pools close)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(
        self, key: Key, run: Callable[[str, list[Any]], Awaitable[list[Any]]], target: str
    ) -> None:
        sql = batch_sql(target)
        try:
            while True:
                waiting = self._waiting.pop(key, None)
                if not waiting:
                    return
                if len(waiting) > MAX_BATCH:
                    self._waiting[key] = waiting[MAX_BATCH:]
                    waiting = waiting[:MAX_BATCH]
                live = [(form, future) for form, future in waiting if not future.done()]
                if not live:
                    continue
                try:
                    rows = await run(sql, [[form for form, _ in live]])
                except Exception as exc:  # noqa: BLE001 - each lookup alone would fail alike
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in live:
                        future.cancel()
                    raise
                found: list[list[bytes]] = [[] for _ in live]
                for row in rows:
                    found[row[0] - 1].append(bytes(row[1]))
                for (_, future), docs in zip(live, found, strict=True):
                    if not future.done():
                        future.set_result(docs)
                self.batches += 1
                self.batched += len(live)
        finally:
            self._busy.discard(key)
            for _, future in self._waiting.pop(key, []):  # only after a cancellation
                if not future.done():
                    future.cancel()
