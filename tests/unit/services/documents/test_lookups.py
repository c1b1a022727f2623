"""IdLookups' queueing on its own (the engine side is tested in
tests/integration/mongodb/test_id_lookups.py): positions, failures, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from heliosdb.services.documents.lookups import IdLookups, batch_sql

KEY = ("principal", '"db"."c"', "rw")


async def test_queued_lookups_get_their_own_rows() -> None:
    lookups = IdLookups()
    seen: list[tuple[str, list[Any]]] = []

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        seen.append((sql, values))
        # rows of positions 3 and 1 (1-based), out of order; position 2 finds nothing
        return [(3, b"c"), (1, b"a")]

    lookups.begin(KEY)
    futures = [lookups.queue(KEY, form) for form in ("x", "y", "z")]
    assert lookups.busy(KEY)
    lookups.end(KEY, run, "principal", '"db"."c"')
    assert await asyncio.gather(*futures) == [[b"a"], [], [b"c"]]
    assert seen == [(batch_sql('"db"."c"'), [["x", "y", "z"]])]
    await lookups.close()
    assert not lookups.busy(KEY)
    assert (lookups.batches, lookups.batched) == (1, 3)


async def test_a_failed_batch_fails_each_lookup_and_a_cancelled_one_is_skipped() -> None:
    lookups = IdLookups()
    calls: list[list[Any]] = []

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        calls.append(values[0])
        raise ValueError("engine says no")

    lookups.begin(KEY)
    first, gone, last = (lookups.queue(KEY, form) for form in (1, 2, 3))
    gone.cancel()
    lookups.end(KEY, run, "principal", '"db"."c"')
    for future in (first, last):
        with pytest.raises(ValueError, match="engine says no"):
            await future
    await lookups.close()
    assert calls == [[1, 3]]
    assert not lookups.busy(KEY)


async def test_a_lone_lookup_leaves_nothing_behind() -> None:
    lookups = IdLookups()

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        raise AssertionError("nothing was queued")

    lookups.begin(KEY)
    lookups.end(KEY, run, "principal", '"db"."c"')
    assert not lookups.busy(KEY)
    await lookups.close()
