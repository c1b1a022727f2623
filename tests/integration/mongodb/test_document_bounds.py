"""Ranges whose bound is an embedded document or an array compare in MongoDB's BSON
order: only values of the bound's type (type bracketing), documents field by field
(each value's type, then the field name, then the value; a prefix first), arrays
element by element, an array field both as a whole and by its elements. Finds, counts,
updates, deletes and a ``$match`` agree."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database

Docs = Collection[dict[str, Any]]


@pytest.fixture
def shapes(db: Database[dict[str, Any]]) -> Docs:
    db.shapes.drop()
    db.shapes.insert_many(
        [
            {"_id": 1, "a": {"x": 2}},
            {"_id": 2, "a": {"x": 1, "y": 0}},  # {x: 1} is its prefix
            {"_id": 3, "a": {"y": 0}},  # the name y after x
            {"_id": 4, "a": [{"x": 5}]},  # an element
            {"_id": 5, "a": 5},  # a number: not a document
            {"_id": 6, "a": "s"},
            {"_id": 7, "a": [1, 2]},
            {"_id": 8, "a": {"x": 1}},
            {"_id": 9, "a": {"x": "a"}},  # a string is above every number
            {"_id": 10},
            {"_id": 11, "a": {"x": 0}},
        ]
    )
    return db.shapes


@pytest.fixture
def arrays(db: Database[dict[str, Any]]) -> Docs:
    db.arrays.drop()
    db.arrays.insert_many(
        [
            {"_id": 1, "v": [0, 5]},
            {"_id": 2, "v": [1, 2]},
            {"_id": 3, "v": [1]},
            {"_id": 4, "v": [[0]]},  # [0] < [1, 2] as an element; [[0]] > [1, 2] whole
            {"_id": 5, "v": 0},
            {"_id": 6, "v": [3]},
            {"_id": 7, "v": []},
            {"_id": 8},
        ]
    )
    return db.arrays


def ids(found: Any) -> list[Any]:
    return sorted(d["_id"] for d in found)


def test_find_with_a_document_bound(shapes: Docs) -> None:
    assert ids(shapes.find({"a": {"$gt": {"x": 1}}})) == [1, 2, 3, 4, 9]
    assert ids(shapes.find({"a": {"$gte": {"x": 1}}})) == [1, 2, 3, 4, 8, 9]
    assert ids(shapes.find({"a": {"$lt": {"x": 1}}})) == [11]
    assert ids(shapes.find({"a": {"$lte": {"x": 1}}})) == [8, 11]
    assert ids(shapes.find({"a": {"$gt": {"x": 0}, "$lt": {"x": 2}}})) == [2, 8]
    assert ids(shapes.find({"a": {"$not": {"$gt": {"x": 1}}}})) == [5, 6, 7, 8, 10, 11]
    assert ids(shapes.find({"a": {"$gt": {"x": 1}}}).sort("_id", 1).skip(1).limit(2)) == [2, 3]


def test_count_match_and_distinct_with_a_document_bound(shapes: Docs) -> None:
    assert shapes.count_documents({"a": {"$gt": {"x": 1}}}) == 5
    assert shapes.count_documents({"a": {"$gt": {"x": 1}}}, skip=1, limit=3) == 3
    assert list(shapes.aggregate([{"$match": {"a": {"$gt": {"x": 1}}}}, {"$count": "n"}])) == [
        {"n": 5}
    ]
    assert shapes.distinct("_id", {"a": {"$lt": {"x": 1}}}) == [11]


def test_writes_with_a_document_bound(shapes: Docs) -> None:
    assert shapes.update_many({"a": {"$gt": {"x": 1}}}, {"$set": {"m": 1}}).modified_count == 5
    assert ids(shapes.find({"m": 1})) == [1, 2, 3, 4, 9]
    assert shapes.update_one({"a": {"$lt": {"x": 1}}}, {"$set": {"o": 1}}).modified_count == 1
    assert ids(shapes.find({"o": 1})) == [11]
    found = shapes.find_one_and_update({"a": {"$lte": {"x": 1}}, "_id": 8}, {"$set": {"f": 1}})
    assert found is not None and found["_id"] == 8
    assert shapes.delete_many({"a": {"$gte": {"x": 1}}}).deleted_count == 6
    assert ids(shapes.find()) == [5, 6, 7, 10, 11]


def test_an_array_bound_meets_arrays_whole_and_their_array_elements(arrays: Docs) -> None:
    assert ids(arrays.find({"v": {"$lt": [1, 2]}})) == [1, 3, 4, 7]
    assert ids(arrays.find({"v": {"$gte": [1, 2]}})) == [2, 4, 6]
    assert arrays.count_documents({"v": {"$lte": [1]}}) == 4
    assert arrays.delete_many({"v": {"$lt": [1, 2]}}).deleted_count == 4
    assert ids(arrays.find()) == [2, 5, 6, 8]


def test_ids_that_are_documents_in_a_range(db: Database[dict[str, Any]]) -> None:
    db.keyed.drop()
    db.keyed.insert_many([{"_id": {"x": 2}}, {"_id": {"x": 0}}, {"_id": 3}, {"_id": {"y": 0}}])
    assert list(db.keyed.find({"_id": {"$gt": {"x": 1}}}).sort("_id", 1)) == [
        {"_id": {"x": 2}},
        {"_id": {"y": 0}},
    ]
    assert db.keyed.delete_one({"_id": {"$lt": {"x": 1}}}).deleted_count == 1
    assert db.keyed.count_documents({}) == 3


def test_elem_match_with_a_document_bound(db: Database[dict[str, Any]]) -> None:
    db.nested.drop()
    db.nested.insert_many(
        [
            {"_id": 1, "arr": [{"d": {"x": 0}}, {"d": {"x": 3}}]},
            {"_id": 2, "arr": [{"d": {"x": 0}}]},
            {"_id": 3, "arr": [{"x": 0}]},
        ]
    )
    assert ids(db.nested.find({"arr.d": {"$gt": {"x": 1}}})) == [1]
    assert ids(db.nested.find({"arr": {"$elemMatch": {"d": {"$gt": {"x": 1}}}}})) == [1]
    # {d: ...} is above {x: 1}: its first value is a document, above a number
    assert ids(db.nested.find({"arr": {"$elemMatch": {"$gt": {"x": 1}}}})) == [1, 2]
