"""``{field: {$in: [...]}}`` of scalars compiles to one array parameter; it matches what
MongoDB's rules (the node's own matcher) match, whatever the stored values' shapes."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Decimal128, Int64
from pymongo.database import Database

from heliosdb.services.documents.matcher import matches

DOCUMENTS: list[dict[str, Any]] = [
    {"_id": 1, "k": 5},
    {"_id": 2, "k": 5.0},
    {"_id": 3, "k": Int64(5)},
    {"_id": 4, "k": "5"},
    {"_id": 5, "k": [1, 5]},
    {"_id": 6, "k": [[5]]},
    {"_id": 7, "k": {"a": 5}},
    {"_id": 8, "k": None},
    {"_id": 9},
    {"_id": 10, "k": True},
    {"_id": 11, "k": 1},
    {"_id": 12, "k": ["a", "b"]},
    {"_id": 13, "k": "a"},
    {"_id": 14, "k": Decimal128("5")},
    {"_id": 15, "k": 5.5},
    {"_id": 16, "k": []},
]


@pytest.mark.parametrize(
    "values",
    [
        [5],
        ["5", "a"],
        [True],
        [1, 5.5],
        ["b", 2, False],
        [0.5, "zz"],
        list(range(1000)),
    ],
)
def test_in_of_scalars_matches_as_mongodb(db: Database[dict[str, Any]], values: list[Any]) -> None:
    coll = db.in_lists
    if coll.estimated_document_count() == 0:
        coll.insert_many(DOCUMENTS)
    query = {"k": {"$in": values}}
    expected = sorted(d["_id"] for d in DOCUMENTS if matches(d, query))
    assert sorted(d["_id"] for d in coll.find(query)) == expected
    assert sorted(d["_id"] for d in coll.find({"k": {"$nin": values}})) == sorted(
        d["_id"] for d in DOCUMENTS if d["_id"] not in expected
    )


def test_a_long_in_list_over_many_documents(db: Database[dict[str, Any]]) -> None:
    coll = db.in_long
    coll.insert_many([{"v": i, "w": [i, -i]} for i in range(10_000)])
    wanted = list(range(0, 20_000, 2))
    assert coll.count_documents({"v": {"$in": wanted}}) == 5_000
    assert coll.count_documents({"w": {"$in": [-i for i in wanted]}}) == 5_000
