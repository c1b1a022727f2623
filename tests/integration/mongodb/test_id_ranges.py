"""A range on ``_id`` ({_id: {$gt: last}}, the paging pattern) of numbers, dates or
ObjectIds reads the primary key from the bound, and matches as MongoDB's rules (the
node's own matcher) match, whatever kinds of ``_id`` the collection holds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo.collection import Collection
from pymongo.database import Database

from heliosdb.services.documents.matcher import matches
from tests.integration.mongodb.test_id_sort_order import _published
from tests.nodeproc import NodeProcess

UTC = dt.UTC
KINDS: list[Any] = [
    None,
    -3,
    2.5,
    Int64(7),
    Decimal128("3"),
    "a",
    "b",
    ObjectId("000000000000000000000001"),
    ObjectId("ffffffffffffffffffffffff"),
    False,
    True,
    dt.datetime(1960, 1, 1, tzinfo=UTC),
    dt.datetime(2020, 1, 1, tzinfo=UTC),
    {"x": 1},
]


@pytest.fixture
def coll(db: Database[dict[str, Any]], coll_name: str) -> Collection[dict[str, Any]]:
    return db[coll_name]


def test_ranges_match_as_mongodb_over_every_kind(coll: Collection[dict[str, Any]]) -> None:
    coll.insert_many([{"_id": v} for v in KINDS])
    stored = [{"_id": v} for v in KINDS]
    for bound in [v for v in KINDS if not isinstance(v, dict)]:
        for op in ("$gt", "$gte", "$lt", "$lte"):
            query = {"_id": {op: bound}}
            got = sorted(str(d["_id"]) for d in coll.find(query))
            assert got == sorted(str(d["_id"]) for d in stored if matches(d, query)), query
    both = {"_id": {"$gt": -3, "$lte": Int64(7)}}
    assert sorted(str(d["_id"]) for d in coll.find(both)) == ["2.5", "3", "7"]


@pytest.mark.parametrize("kind", ["objectid", "number", "date"])
def test_a_range_reads_the_primary_key(
    node: NodeProcess, coll: Collection[dict[str, Any]], kind: str
) -> None:
    start = dt.datetime(2000, 1, 1, tzinfo=UTC)
    made: list[Any] = (
        [ObjectId() for _ in range(3000)]
        if kind == "objectid"
        else list(range(3000))
        if kind == "number"
        else [start + dt.timedelta(hours=i) for i in range(3000)]
    )
    coll.insert_many([{"_id": v, "n": 1} for v in made])
    last = sorted(made)[-3]
    before = _published(node, coll, lambda c: c[2] == len(made))
    assert coll.count_documents({"_id": {"$gt": last}}) == 2
    assert coll.count_documents({"_id": {"$lte": sorted(made)[1]}}) == 2
    after = _published(node, coll, lambda c: c[1] >= before[1] + 2)
    assert after[0] == before[0]  # no sequential scan: both read the key from the bound
