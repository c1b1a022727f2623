"""A sort on ``_id`` in MongoDB's order of types when a collection mixes kinds of ``_id``
(MinKey < null < numbers < strings < documents < binary < ObjectId < booleans < dates <
timestamps < MaxKey), in finds, aggregates and cursors read across batches; and a
collection whose ``_id``s are all of one kind still sorted by its primary key index."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import bson
import psycopg
import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from pymongo.collection import Collection
from pymongo.database import Database

from heliosdb.services.documents import catalog
from tests.integration.mongodb.conftest import found
from tests.nodeproc import NodeProcess

UTC = dt.UTC

# One _id of each kind in MongoDB's ascending order, several where a kind orders within
MIXED: list[Any] = [
    MinKey(),
    None,
    float("nan"),
    float("-inf"),
    -3,
    0,
    2.5,
    Int64(7),
    Decimal128(Decimal("7.5")),
    float("inf"),
    "",
    "B",
    "a",
    "warm",
    "\u00e9",
    {"a": 1},
    {"a": 1, "b": 0},
    {"b": 1, "a": 2},
    {"z": 0},
    Binary(b"\x09", 0),
    Binary(b"\x00\x00", 0),
    ObjectId("5f0000000000000000000000"),
    ObjectId("6a0000000000000000000000"),
    False,
    True,
    dt.datetime(1960, 1, 1, tzinfo=UTC),
    dt.datetime(2020, 1, 1, tzinfo=UTC),
    Timestamp(1, 2),
    Timestamp(2, 1),
    MaxKey(),
]


def ids(docs: Any) -> list[bytes]:
    """The ``_id``s of ``docs`` as BSON, so types (and NaN) compare exactly."""
    return exact(d["_id"] for d in docs)


def exact(values: Any) -> list[bytes]:
    """``values`` as BSON, as ``ids`` gives them."""
    return [bson.encode({"v": v}) for v in values]


@pytest.fixture
def coll(db: Database[dict[str, Any]], coll_name: str) -> Collection[dict[str, Any]]:
    return db[coll_name]


@pytest.fixture
def mixed(coll: Collection[dict[str, Any]]) -> Collection[dict[str, Any]]:
    # inserted out of order, so no result is the insertion order by chance
    coll.insert_many([{"_id": v, "k": i % 3} for i, v in enumerate(reversed(MIXED))])
    return coll


def test_find_sort_by_id_puts_numbers_before_strings(coll: Collection[dict[str, Any]]) -> None:
    coll.insert_many([{"_id": "warm"}, {"_id": 0}, {"_id": 1}, {"_id": 2}])
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)])] == [0, 1, 2, "warm"]
    assert [d["_id"] for d in coll.find({}, sort=[("_id", -1)])] == ["warm", 2, 1, 0]
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)], limit=1)] == [0]


def test_find_sort_by_id_in_mongodb_order_of_types(mixed: Collection[dict[str, Any]]) -> None:
    assert ids(mixed.find({}, sort=[("_id", 1)])) == exact(MIXED)
    assert ids(mixed.find({}, sort=[("_id", -1)])) == exact(reversed(MIXED))


def test_find_sort_by_id_with_skip_and_limit(mixed: Collection[dict[str, Any]]) -> None:
    for skip, limit in [(0, 1), (0, 5), (3, 5), (10, 7), (25, 100)]:
        asc = mixed.find({}, sort=[("_id", 1)], skip=skip, limit=limit)
        assert ids(asc) == exact(MIXED[skip : skip + limit])
        desc = mixed.find({}, sort=[("_id", -1)], skip=skip, limit=limit)
        assert ids(desc) == exact(MIXED[::-1][skip : skip + limit])


def test_find_sort_by_id_with_a_filter(mixed: Collection[dict[str, Any]]) -> None:
    expected = [v for i, v in enumerate(reversed(MIXED)) if i % 3 == 1]
    expected.reverse()  # MIXED's order
    assert ids(mixed.find({"k": 1}, sort=[("_id", 1)])) == exact(expected)
    assert ids(mixed.find({"k": 1}, sort=[("_id", -1)], limit=4)) == exact(expected[::-1][:4])


def test_sort_by_another_field_then_id(mixed: Collection[dict[str, Any]]) -> None:
    found = list(mixed.find({}, sort=[("k", 1), ("_id", -1)]))
    for k in range(3):
        group = [v for i, v in enumerate(reversed(MIXED)) if i % 3 == k]
        assert ids(d for d in found if d["k"] == k) == exact(group)  # reversed(MIXED): _id -1
    assert [d["k"] for d in found] == sorted(d["k"] for d in found)


def test_aggregate_sort_by_id(mixed: Collection[dict[str, Any]]) -> None:
    assert ids(mixed.aggregate([{"$sort": {"_id": 1}}])) == exact(MIXED)
    pipeline: list[dict[str, Any]] = [
        {"$match": {}},
        {"$sort": {"_id": -1}},
        {"$skip": 2},
        {"$limit": 4},
    ]
    assert ids(mixed.aggregate(pipeline)) == exact(MIXED[::-1][2:6])
    # a stage the engine does not run after the sort: its input in the same order
    grouped = mixed.aggregate(
        [{"$sort": {"_id": 1}}, {"$group": {"_id": None, "all": {"$push": "$_id"}}}]
    )
    assert exact(next(grouped)["all"]) == exact(MIXED)


def test_cursor_reads_mixed_ids_in_order_across_batches(coll: Collection[dict[str, Any]]) -> None:
    # more than the first read (1025 rows): the rest streams through an engine cursor
    numbers = list(range(800))
    strings = [f"s{i:04d}" for i in range(800)]
    coll.insert_many([{"_id": v} for v in strings + numbers])
    expected: list[Any] = [*numbers, *strings]
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)], batch_size=100)] == expected
    assert [d["_id"] for d in coll.find({}, sort=[("_id", -1)], batch_size=300)] == (expected[::-1])
    asc = coll.find({}, sort=[("_id", 1)], skip=700, limit=200, batch_size=50)
    assert [d["_id"] for d in asc] == expected[700:900]
    agg = coll.aggregate([{"$sort": {"_id": 1}}, {"$skip": 790}], batchSize=7)
    assert [d["_id"] for d in agg] == expected[790:]


def test_ids_of_one_kind_sort_in_mongodb_order(coll: Collection[dict[str, Any]]) -> None:
    """The primary key's order within each kind it serves sorts is MongoDB's."""
    oids = ["000000000000000000000001", "0a0000000000000000000000", "a0" + "0" * 22, "f" * 24]
    kinds: list[list[Any]] = [
        [-(2**62), -2.5, Int64(-1), 0, 1, Decimal128("1.5"), 2**53 + 2, 1e300],
        ["", "\x00", "A", "B", "a", "ab", "b", "\u00e9", "\u4e2d", "\U0001f600"],
        [ObjectId(h) for h in oids],
        [
            dt.datetime(1, 1, 1, tzinfo=UTC),
            dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
            dt.datetime(1970, 1, 1, tzinfo=UTC),
            dt.datetime(2030, 1, 1, tzinfo=UTC),
        ],
        [False, True],
    ]
    for values in kinds:
        coll.delete_many({})
        coll.insert_many([{"_id": v} for v in reversed(values)])
        assert ids(coll.find({}, sort=[("_id", 1)])) == exact(values)
        assert ids(coll.find({}, sort=[("_id", -1)], limit=3)) == exact(values[::-1][:3])


def _counts(node: NodeProcess, coll: Collection[dict[str, Any]]) -> tuple[int, int, int]:
    """(sequential scans, index scans, rows inserted) the engine counted on ``coll``'s
    table, as far as its backends have published them (when idle, a while after)."""
    target = catalog.table(coll.database.name, coll.name)
    with psycopg.connect(node.engine_url) as conn:
        row = conn.execute(
            "SELECT seq_scan, coalesce(idx_scan, 0), n_tup_ins FROM pg_stat_user_tables "
            "WHERE relid = %s::regclass",
            (target,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _published(
    node: NodeProcess, coll: Collection[dict[str, Any]], ready: Callable[[tuple[int, ...]], bool]
) -> tuple[int, ...]:
    for _ in range(600):  # no assumption on how soon the engine publishes them
        counts = _counts(node, coll)
        if ready(counts):
            return counts
        time.sleep(0.1)
    pytest.fail("the engine never published the counts waited for")


def test_ids_of_one_kind_sort_through_the_primary_key(
    node: NodeProcess, coll: Collection[dict[str, Any]]
) -> None:
    made = [ObjectId() for _ in range(3000)]
    coll.insert_many([{"_id": v, "n": i} for i, v in enumerate(made)])
    first = sorted(made)[:10]
    # once the inserts (and what the insert statement read) are counted
    before = _published(node, coll, lambda c: c[2] == len(made))
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)], limit=10)] == first
    page = coll.find({"_id": {"$gt": first[4]}}, sort=[("_id", 1)], limit=5)
    assert [d["_id"] for d in page] == first[5:]
    latest = coll.aggregate([{"$sort": {"_id": -1}}, {"$limit": 1}])
    assert [d["_id"] for d in latest] == [max(made)]
    # each of the three reads scans the index: once they are all counted ...
    after = _published(node, coll, lambda c: c[1] >= before[1] + 3)
    assert after[0] == before[0]  # ... no sequential scan: the index read the first rows
    # one string among them: the sort reads the whole collection, in MongoDB's order
    coll.insert_one({"_id": "late"})
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)], limit=2)] == ["late", first[0]]
    _published(node, coll, lambda c: c[0] > after[0])


def test_find_and_modify_picks_the_first_in_mongodb_order(
    coll: Collection[dict[str, Any]],
) -> None:
    coll.insert_many([{"_id": "warm", "n": 0}, {"_id": 2, "n": 0}, {"_id": 1, "n": 0}])
    first = coll.find_one_and_update({}, {"$inc": {"n": 1}}, sort=[("_id", 1)])
    assert found(first)["_id"] == 1
    last = coll.find_one_and_update({"n": 0}, {"$set": {"n": 5}}, sort=[("_id", -1)])
    assert found(last)["_id"] == "warm"
    assert found(coll.find_one_and_delete({}, sort=[("_id", 1)]))["_id"] == 1
    assert found(coll.find_one_and_delete({}, sort=[("_id", -1)]))["_id"] == "warm"
    assert [d["_id"] for d in coll.find()] == [2]
    # all of one kind: the primary key's order, as before
    coll.insert_many([{"_id": i, "n": 0} for i in (9, -4, 30)])
    assert found(coll.find_one_and_delete({}, sort=[("_id", 1)]))["_id"] == -4
    replaced = coll.find_one_and_replace({"n": 0}, {"n": 7}, sort=[("_id", -1)])
    assert found(replaced)["_id"] == 30
    assert coll.find_one({"_id": 30}) == {"_id": 30, "n": 7}


def test_sort_by_id_with_a_filter_checked_again_in_the_node(
    coll: Collection[dict[str, Any]],
) -> None:
    # equality with a document of two fields: the engine reads a superset, the node
    # checks each row (filters.py recheck), then skips and limits; 1,200 rows stream
    coll.insert_many([{"_id": f"s{i:04d}", "d": {"x": 1, "y": 2}} for i in range(600)])
    coll.insert_many([{"_id": i, "d": {"x": 1, "y": 2}} for i in range(600)])
    coll.insert_many([{"_id": -1 - i, "d": {"y": 2, "x": 1}} for i in range(5)])
    expected: list[Any] = [*range(600), *(f"s{i:04d}" for i in range(600))]
    found_ids = [d["_id"] for d in coll.find({"d": {"x": 1, "y": 2}}, sort=[("_id", 1)])]
    assert found_ids == expected
    page = coll.find({"d": {"x": 1, "y": 2}}, sort=[("_id", -1)], skip=590, limit=20)
    assert [d["_id"] for d in page] == expected[::-1][590:610]
