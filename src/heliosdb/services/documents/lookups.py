"""Finds by ``_id`` from many clients at once become one engine statement per collection.

A find whose filter is one plain ``_id`` (``{_id: <value>}``, the driver's
``find_one({"_id": ...})``) outside a client transaction comes here. When no lookup of
the same principal and collection is in flight, it runs at once, alone, on the store's
ordinary statement (a lone client waits for nothing). While one is in flight, the next
lookups queue; when it ends, every queued one goes in one statement

    SELECT q.i, t.bson FROM unnest($1::jsonb[]) WITH ORDINALITY AS q(id, i)
    JOIN <collection> AS t ON t._id = q.id

(up to MAX_SIZED ids, the same with the ids as that many parameters of a VALUES list:
see ``sized_sql``) that the primary key answers id by id, and each lookup gets the rows
of its own position
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, Any]  # principal id, quoted table, the principal's access level
Run = Callable[[Any, str, list[Any]], Awaitable[list[Any]]]  # (principal, sql, values)
MAX_BATCH = 1000


MAX_SIZED = 32  # batches up to this many ids take a statement of fixed arity


def batch_sql(target: str) -> str:
    return (
        "SELECT q.i, t.bson FROM unnest($1::jsonb[]) WITH ORDINALITY AS q(id, i) "
        f"JOIN {target} AS t ON t._id = q.id"
    )


@functools.lru_cache(maxsize=1024)
def sized_sql(target: str, size: int) -> str:
    """The batch statement for ``size`` ids as ``size`` jsonb parameters. The engine
    plans ``unnest`` of an array parameter for the array it is given at every run (its
    generic plan guesses 10 or more rows, so each custom plan looks cheaper and it never
    settles on the generic one: planning cost 2-3 times the lookups); here the row count
    is in the text, the generic plan is the custom one, and the engine keeps it."""
    rows = ", ".join(f"({i}::int8, ${i}::jsonb)" for i in range(1, size + 1))
    return f"SELECT q.i, t.bson FROM (VALUES {rows}) AS q(i, id) JOIN {target} AS t ON t._id = q.id"


def batch_statement(target: str, forms: list[Any]) -> tuple[str, list[Any]]:
    """The statement for the ids ``forms`` (bsonform.id_form) and its values: up to
    MAX_SIZED ids, ``sized_sql`` of the next power of two, padded with NULLs (which
    match nothing: ``=`` on NULL is never true); more, ``batch_sql``. Either answers
    rows (position, bson), positions counted from 1."""
    count = len(forms)
    if count > MAX_SIZED:
        return batch_sql(target), [forms]
    size = 1 << max(count - 1, 1).bit_length()
    return sized_sql(target, size), [*forms, *[None] * (size - count)]


def equal_union(target: str, branches: tuple[str, str]) -> str:
    """The rows of one scalar equality on an indexed field of ``target``, from its two
    halves (filters.equality_branches): the scalar half first (one index scan), then
    the documents where the path meets an array. Under a ``LIMIT`` the engine stops
    after the scalar half when it filled the limit, so documents where the field is the
    value come before those where it is an array holding it (a find without a sort has
    no order)."""
    scalar, arrays = branches
    return (
        f"SELECT bson FROM {target} WHERE {scalar} "
        f"UNION ALL SELECT bson FROM {target} WHERE {arrays}"
    )


@functools.lru_cache(maxsize=1024)
def equal_sql(union: str, size: int, limit: int) -> str:
    """The batch statement for ``size`` finds whose rows ``union`` (equal_union over
    the column ``q.v``) selects, each up to ``limit`` rows: each value a jsonb parameter
    of a ``VALUES`` row, and each row's matches found by the single find's own statement
    (its two halves, its limit) run for that value. The limit is in the text (the
    finds of a batch share it): with a parameter there, the engine's generic plan of
    the ``LATERAL`` union looked costlier than the plan for each run's limit, and it
    planned every run again (about 45 µs more per find)."""
    rows = ", ".join(f"({i}::int8, ${i}::jsonb)" for i in range(1, size + 1))
    return (
        f"SELECT q.i, t.bson FROM (VALUES {rows}) AS q(i, v) CROSS JOIN LATERAL "
        f"({union} LIMIT {int(limit)}) AS t "
        "WHERE q.v IS NOT NULL"
    )


def scalar_first(target: str, scalar: str) -> str:
    """A lone find_one's statement before its equal_union one: the scalar half of the
    equality (``scalar``, over ``$1``, the union's first value) alone, ``LIMIT 1`` in
    the text (only find_one's limit takes it: no limit parameter, no subquery for it).
    When it finds a document, that is the union's row (the scalar half comes first and
    fills the limit there too); else the union runs. The engine then sets up no array
    half at all: 113,300 -> 84,100 instructions per statement (callgrind, EXECUTE in
    single-user mode), nearly all of it the executor setting up that half, which the
    union's ``LIMIT`` skips running but not setting up, and the limit's subquery."""
    return f"{scalar_half(target, scalar)} LIMIT 1"


def scalar_half(target: str, scalar: str) -> str:
    """The scalar half of equal_union alone (``scalar`` its condition): a batch of
    find_ones takes it as its ``LATERAL`` subquery first, as one find_one takes
    scalar_first (the executor then sets up no array half in the statement)."""
    return f"SELECT bson FROM {target} WHERE {scalar}"


@dataclass(frozen=True, slots=True)
class Batched:
    """Finds of one loop step that one statement answers together: by one plain ``_id``
    of the table ``target`` (``where`` None), or by one scalar equality, ``where`` the
    rows of one such find over the column ``q.v`` (equal_union, with a limit, the same
    for all), ``first`` its scalar_first statement for a find_one alone and ``scalar``
    its scalar_half over ``q.v`` for find_ones together."""

    target: str
    where: str | None = None
    first: str | None = None
    scalar: str | None = None

    @property
    def most(self) -> int:
        """The most finds one statement answers."""
        return MAX_BATCH if self.where is None else MAX_SIZED

    def statement(self, values: list[Sequence[Any]], scalar: bool = False) -> tuple[str, list[Any]]:
        """The statement and its values for the finds whose single statements have the
        values ``values`` (``_id``: the id's form first; an equality: the value first,
        the limit last, the same for all; ``scalar``: of its scalar half alone); rows
        (position, bson), positions counted from 1."""
        if self.where is None:
            return batch_statement(self.target, [each[0] for each in values])
        size = 1 << max(len(values) - 1, 1).bit_length()
        padding: list[Any] = [None] * (size - len(values))
        where = self.scalar if scalar and self.scalar is not None else self.where
        return (
            equal_sql(where, size, values[0][-1]),
            [*(each[0] for each in values), *padding],
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
                    rows = await run(*batch_statement(target, [form for form, _ in live]))
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
