"""Sorts on fields that hold arrays, in MongoDB's order.

MongoDB sorts a document by the smallest element of an array at the sort path for an
ascending sort and by the largest for a descending one; an empty array sorts below
null and a missing field (docs: "Comparison/Sort Order", the Arrays section). The key
is the one a multikey index would hold for the path (its sort key generator; the
server's ``jstests/core/sort_array.js`` and ``sort_key_generator_test.cpp``): an array
at the end of the path gives its elements (an element that is itself an array counts
as one array value), and on a dotted path through an array of documents each element
gives its value there, null where it lacks the field or is no document, null for an
empty array on the way. The expected orders below are written by hand from that rule.

Each order is checked where the engine sorts (find with skip and limit, a leading
``$sort``, findAndModify) and where the node sorts (a ``$sort`` after ``$project``).
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from tests.integration.mongodb.conftest import found

# _id -> tags; the ascending key and the descending one in the comments
TAGS: dict[int, Any] = {
    0: [3, 0, 1],  # 0 / 3
    1: [8, 4, -1],  # -1 / 8
    2: [],  # undefined: below null both ways
    3: None,  # missing: null
    5: 5,
    6: [2],  # 2 / 2
    7: "b",
    8: ["a", 7],  # 7 (numbers below strings) / "a"
    9: {"x": 1},
    10: [[0], 9],  # 9 / [0] (an array above a number)
    11: [True, {"y": 1}],  # {y: 1} (an object below a boolean) / true
}
TAGS_ASCENDING = [2, 3, 1, 0, 6, 5, 8, 10, 7, 9, 11]
TAGS_DESCENDING = [11, 10, 9, 7, 8, 1, 5, 0, 6, 3, 2]


def fresh(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    return db[f"arrays_{uuid.uuid4().hex[:8]}"]


def ids(documents: Any) -> list[int]:
    return [d["_id"] for d in documents]


def tags(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = fresh(db)
    rows = [{"_id": i} if v is None else {"_id": i, "tags": v} for i, v in TAGS.items()]
    coll.insert_many(rows[::-1])  # the table's order is none of the sorts'
    return coll


def test_find_sorts_by_smallest_or_largest_element(
    db: Database[dict[str, Any]], ro_client: MongoClient[dict[str, Any]]
) -> None:
    coll = tags(db)
    assert ids(coll.find().sort("tags", 1)) == TAGS_ASCENDING
    assert ids(coll.find().sort("tags", -1)) == TAGS_DESCENDING
    assert ids(coll.find().sort("tags", 1).skip(2).limit(4)) == TAGS_ASCENDING[2:6]
    assert ids(coll.find().sort("tags", -1).limit(3)) == TAGS_DESCENDING[:3]
    reader = ro_client[db.name][coll.name]  # a read-only key sorts the same
    assert ids(reader.find().sort("tags", -1)) == TAGS_DESCENDING
    coll.drop()


def test_aggregate_sorts_in_the_engine_and_in_the_node(db: Database[dict[str, Any]]) -> None:
    coll = tags(db)
    assert ids(coll.aggregate([{"$sort": {"tags": 1}}])) == TAGS_ASCENDING
    assert ids(coll.aggregate([{"$sort": {"tags": -1}}, {"$limit": 4}])) == TAGS_DESCENDING[:4]
    # after a stage the engine does not run, the node sorts, in the same order
    projected = [{"$project": {"tags": 1}}]
    assert ids(coll.aggregate([*projected, {"$sort": {"tags": 1}}])) == TAGS_ASCENDING
    assert ids(coll.aggregate([*projected, {"$sort": {"tags": -1}}])) == TAGS_DESCENDING
    coll.drop()


def test_find_and_modify_takes_the_first_by_array_order(db: Database[dict[str, Any]]) -> None:
    coll = tags(db)
    numbers = {"tags": {"$type": "number"}}  # an array matches by its elements
    first = coll.find_one_and_update(numbers, {"$set": {"seen": True}}, sort=[("tags", 1)])
    assert found(first)["_id"] == 1  # smallest element -1
    last = coll.find_one_and_delete(numbers, sort=[("tags", -1)])
    assert found(last)["_id"] == 10  # [[0], 9]: its largest element is the array [0]
    coll.drop()


# _id -> items: a dotted path through arrays of documents
ITEMS: dict[int, Any] = {
    10: [{"price": 5}, {"price": 2}],  # 2 / 5
    11: [{"price": 3}],  # 3 / 3
    12: [{"price": 4}, {"name": "x"}],  # null (an element without price) / 4
    13: [],  # null (an empty array on the way) / null
    14: {"price": 1},  # 1 / 1
    15: [{"price": [6, 0.5]}, {"price": 7}],  # 0.5 / 7
    16: [1, {"price": 3.5}],  # null (an element that is no document) / 3.5
}


def test_dotted_paths_through_arrays_of_documents(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.insert_many([{"_id": i, "items": v} for i, v in reversed(ITEMS.items())])
    ascending = [12, 13, 16, 15, 14, 10, 11]  # nulls by _id, then 0.5, 1, 2, 3
    descending = [15, 10, 12, 16, 11, 14, 13]
    by_price = [("items.price", 1), ("_id", 1)]
    assert ids(coll.find().sort(by_price)) == ascending
    assert ids(coll.find().sort([("items.price", -1), ("_id", 1)])) == descending
    stage = {"$sort": {"items.price": 1, "_id": 1}}
    assert ids(coll.aggregate([stage])) == ascending
    assert ids(coll.aggregate([{"$project": {"items": 1}}, stage])) == ascending
    coll.drop()


def test_compound_sorts_with_arrays(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    rows: list[dict[str, Any]] = [
        {"_id": 20, "tags": [2, 9], "n": 1},
        {"_id": 21, "tags": [5, 2], "n": 3},
        {"_id": 22, "tags": 2, "n": 2},
        {"_id": 23, "tags": [], "n": 0},
        {"_id": 24, "tags": None, "n": 5},
        {"_id": 25, "n": 4},
        {"_id": 26, "tags": [1, 3], "n": [0, 7]},
    ]
    coll.insert_many(rows[::-1])
    # tags ascending (undefined, null, null, 1, then three 2s), n descending among ties
    assert ids(coll.find().sort([("tags", 1), ("n", -1)])) == [23, 24, 25, 26, 21, 22, 20]
    # tags descending (9, 5, 3, 2, null, null, undefined), n ascending among ties
    assert ids(coll.find().sort([("tags", -1), ("n", 1)])) == [20, 21, 26, 22, 25, 24, 23]
    node_sort = [{"$project": {"tags": 1, "n": 1}}, {"$sort": {"tags": 1, "n": -1}}]
    assert ids(coll.aggregate(node_sort)) == [23, 24, 25, 26, 21, 22, 20]
    coll.drop()


def test_deeper_paths_through_arrays(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    rows: list[dict[str, Any]] = [
        {"_id": 30, "o": {"items": [{"price": 4}, {"price": 1}]}},  # 1 / 4
        {"_id": 31, "o": [{"items": {"price": 3}}]},  # 3 / 3
        {"_id": 32, "o": {"items": {"price": 2}}},  # 2 / 2: no array
        {"_id": 33, "o": [{"items": [{"price": 5}, {}]}]},  # null / 5
    ]
    coll.insert_many(rows[::-1])
    assert ids(coll.find().sort("o.items.price", 1)) == [33, 30, 32, 31]
    assert ids(coll.find().sort("o.items.price", -1)) == [33, 30, 31, 32]
    node_sort = [{"$project": {"o": 1}}, {"$sort": {"o.items.price": 1}}]
    assert ids(coll.aggregate(node_sort)) == [33, 30, 32, 31]
    coll.drop()
