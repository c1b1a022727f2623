"""IdLookups' queueing on its own (the engine side is tested in
tests/integration/mongodb/test_id_lookups.py): positions, failures, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from heliosdb.services.documents.lookups import MAX_SIZED, IdLookups, batch_sql, sized_sql

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
    # three ids: the statement of four parameters, the fourth NULL
    assert seen == [(sized_sql('"db"."c"', 4), ["x", "y", "z", None])]
    await lookups.close()
    assert not lookups.busy(KEY)
    assert (lookups.batches, lookups.batched) == (1, 3)


async def test_a_failed_batch_fails_each_lookup_and_a_cancelled_one_is_skipped() -> None:
    lookups = IdLookups()
    calls: list[list[Any]] = []

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        calls.append(values)
        raise ValueError("engine says no")

    lookups.begin(KEY)
    first, gone, last = (lookups.queue(KEY, form) for form in (1, 2, 3))
    gone.cancel()
    lookups.end(KEY, run, "principal", '"db"."c"')
    for future in (first, last):
        with pytest.raises(ValueError, match="engine says no"):
            await future
    await lookups.close()
    assert calls == [[1, 3]]  # two ids: the statement of two parameters
    assert not lookups.busy(KEY)


async def test_a_lone_lookup_leaves_nothing_behind() -> None:
    lookups = IdLookups()

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        raise AssertionError("nothing was queued")

    lookups.begin(KEY)
    lookups.end(KEY, run, "principal", '"db"."c"')
    assert not lookups.busy(KEY)
    await lookups.close()


async def test_batches_beyond_the_sized_statements_take_unnest() -> None:
    lookups = IdLookups()
    seen: list[tuple[str, list[Any]]] = []

    async def run(principal: Any, sql: str, values: list[Any]) -> list[Any]:
        seen.append((sql, values))
        return [(MAX_SIZED + 1, b"last")]

    lookups.begin(KEY)
    futures = [lookups.queue(KEY, i) for i in range(MAX_SIZED + 1)]
    lookups.end(KEY, run, "principal", '"db"."c"')
    found = await asyncio.gather(*futures)
    assert found[-1] == [b"last"] and found[:-1] == [[]] * MAX_SIZED
    assert seen == [(batch_sql('"db"."c"'), [list(range(MAX_SIZED + 1))])]
    await lookups.close()


def test_sized_statements_have_a_parameter_and_a_position_per_id() -> None:
    sql = sized_sql('"db"."c"', 2)
    assert sql == (
        "SELECT q.i, t.bson FROM (VALUES (1::int8, $1::jsonb), (2::int8, $2::jsonb)) "
        'AS q(i, id) JOIN "db"."c" AS t ON t._id = q.id'
    )
