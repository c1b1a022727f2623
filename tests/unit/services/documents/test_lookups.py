"""IdLookups' queueing on its own (the engine side is tested in
tests/integration/mongodb/test_id_lookups.py): positions, failures, cancellation; and the
statements of batched finds (Batched; the engine side in test_hotpath.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId

from heliosdb.services.documents.filters import equality_branches
from heliosdb.services.documents.lookups import (
    MAX_SIZED,
    Batched,
    IdLookups,
    batch_sql,
    equal_sql,
    equal_union,
    scalar_first,
    scalar_half,
    sized_sql,
)

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


def test_equality_batches_carry_each_value_then_the_limit() -> None:
    """A batch of finds by one equality: each find's value (its single statement's first
    value) in a VALUES row padded with NULLs to a power of two, the shared limit (its
    last value) in the text; by _id, the ids' statement."""
    branches = equality_branches("k", "a", {"k": "(doc -> 'k')"}, "q.v")
    assert branches is not None
    where = equal_union('"db"."c"', branches)
    assert "$" not in where and "q.v" in where and " UNION ALL " in where
    batch = Batched('"db"."c"', where)
    assert batch.most == MAX_SIZED
    sql, values = batch.statement([["a", "a", 3], [5, 5, 3], [True, True, 3]])
    assert sql == equal_sql(where, 4, 3)
    assert values == ["a", 5, True, None]
    assert " LIMIT 3) AS t " in sql and "$5" not in sql and "WHERE q.v IS NOT NULL" in sql
    assert batch.statement([["x", 1]]) == (equal_sql(where, 2, 1), ["x", None])
    ids = Batched('"db"."c"')
    assert ids.statement([["x"], ["y"], ["z"]]) == (sized_sql('"db"."c"', 4), ["x", "y", "z", None])
    assert Batched('"db"."c"', where) == batch and hash(Batched('"db"."c"', where)) == hash(batch)


def test_only_plain_scalar_equalities_make_a_batch_condition() -> None:
    indexed = {"k": "(doc -> 'k')"}
    first = equality_branches("k", "z", indexed, "q.v")
    assert first is not None
    scalar, arrays = first
    assert scalar == "(doc -> 'k') = q.v"
    assert arrays.startswith("(jsonb_typeof((doc -> 'k')) = 'array') AND ")
    for value in ("a", "", 5, 2.5, True, False, 2**62):
        assert equality_branches("k", value, indexed, "q.v") == first
    others: list[Any] = [None, [1], {"x": 1}, "a\x00b", float("nan"), Int64(5), ObjectId()]
    for other in others:
        assert equality_branches("k", other, indexed, "q.v") is None, other
    assert equality_branches("$where", "a", indexed, "q.v") is None
    assert equality_branches("n", "a", indexed, "q.v") is None  # not indexed
    assert equality_branches("_id", "a", {"_id": "_id"}, "q.v") is None


def test_only_limited_plain_equalities_on_an_indexed_top_level_field_take_two_halves() -> None:
    """find_one-like finds take the union (its limit behind a subquery, so the engine
    keeps one generic plan); without a limit, with a sort or skip, on a dotted path or
    with a value that is not plain, the single condition."""
    from heliosdb.services.documents.store import FindQuery, _find_statement

    indexed = {"k": "(doc -> 'k')", "a.b": "(doc -> 'a' -> 'b')"}
    sql, values, _ = _find_statement("db", "c", FindQuery(filter={"k": "x"}, limit=-3), indexed)
    assert " UNION ALL " in sql and sql.endswith(" AS s LIMIT (SELECT $2::bigint)")
    assert values == ["x", 3]
    for query in (
        FindQuery(filter={"k": "x"}),
        FindQuery(filter={"k": "x"}, limit=1, sort={"n": 1}),
        FindQuery(filter={"k": "x"}, limit=1, skip=1),
        FindQuery(filter={"a.b": "x"}, limit=1),
        FindQuery(filter={"k": Int64(5)}, limit=1),
        FindQuery(filter={"k": "x", "n": 1}, limit=1),
        FindQuery(filter={"n": "x"}, limit=1),
    ):
        assert " UNION ALL " not in _find_statement("db", "c", query, indexed)[0], query


def test_a_lone_find_ones_scalar_half_is_its_index_condition_over_the_unions_value() -> None:
    """The statement a find_one by one equality runs before its union (pipelined.py
    ``_first``): the scalar half alone over ``$1`` (the union's first value), find_one's
    limit in the text."""
    from heliosdb.services.documents.store import FindQuery, _batched, _find_statement

    indexed = {"k": "(doc -> 'k')"}
    sql = scalar_first('"db"."c"', "(doc -> 'k') = $1::jsonb")
    assert sql == """SELECT bson FROM "db"."c" WHERE (doc -> 'k') = $1::jsonb LIMIT 1"""
    batch = _batched("db", "c", {"k": "x"}, 1, indexed)
    assert batch is not None and batch.first == sql
    union, values, _ = _find_statement("db", "c", FindQuery(filter={"k": "x"}, limit=1), indexed)
    assert union.startswith('SELECT bson FROM (SELECT bson FROM "db"."c" WHERE (doc -> \'k\') = $1')
    assert values == ["x", 1]
    assert _batched("db", "c", {"_id": "x"}, 1, indexed) == Batched('"db"."c"')  # no first
    assert _batched("db", "c", {"k": Int64(5)}, 1, indexed) is None


def test_find_ones_together_take_the_scalar_half_in_the_batch_statement() -> None:
    """A batch of find_ones by one equality: ``scalar`` picks the scalar half alone as
    the ``LATERAL`` subquery (the same values), else the union; by _id, no such thing."""
    from heliosdb.services.documents.store import _batched

    indexed = {"k": "(doc -> 'k')"}
    batch = _batched("db", "c", {"k": "x"}, 1, indexed)
    assert batch is not None and batch.where is not None
    half = scalar_half('"db"."c"', "(doc -> 'k') = q.v")
    assert batch.scalar == half
    finds: list[Sequence[Any]] = [["a", 1], ["b", 1], [5, 1]]
    assert batch.statement(finds, scalar=True) == (equal_sql(half, 4, 1), ["a", "b", 5, None])
    assert batch.statement(finds) == (equal_sql(batch.where, 4, 1), ["a", "b", 5, None])
    ids = Batched('"db"."c"')
    assert ids.statement([["x"]], scalar=True) == ids.statement([["x"]])
