"""A command's ``let`` variables (``$$name`` in its expressions) through pymongo, and
other find options drivers send: ``$natural`` order."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database


@pytest.fixture(scope="module")
def items(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.let_items
    coll.insert_many([{"_id": i, "a": i, "s": "$$x"} for i in range(10)])
    return coll


def ids(docs: Any) -> list[Any]:
    return [d["_id"] for d in docs]


def test_find_and_aggregate_read_let(items: Collection[dict[str, Any]]) -> None:
    assert ids(items.find({"$expr": {"$eq": ["$a", "$$x"]}}, let={"x": 3})) == [3]
    over = {"$and": [{"$expr": {"$gt": ["$a", "$$low"]}}, {"a": {"$lt": 6}}]}
    assert ids(items.find(over, let={"low": {"$add": [1, 2]}})) == [4, 5]
    pipeline = [
        {"$match": {"$expr": {"$lte": ["$a", "$$top"]}}},
        {"$project": {"doubled": {"$multiply": ["$a", "$$factor"]}}},
    ]
    rows = items.aggregate(pipeline, let={"top": 2, "factor": 10})
    assert [(d["_id"], d["doubled"]) for d in rows] == [(0, 0), (1, 10), (2, 20)]


def test_a_plain_filter_string_is_not_a_variable(items: Collection[dict[str, Any]]) -> None:
    assert len(list(items.find({"s": "$$x"}, let={"x": 1}))) == 10


def test_inner_bindings_hide_the_commands(items: Collection[dict[str, Any]]) -> None:
    expr = {"$map": {"input": [1, 2], "as": "x", "in": {"$add": ["$$x", "$$y"]}}}
    rows = items.aggregate(
        [{"$match": {"_id": 0}}, {"$project": {"m": expr}}], let={"x": 100, "y": 1}
    )
    assert [d["m"] for d in rows] == [[2, 3]]


def test_writes_read_let(items: Collection[dict[str, Any]]) -> None:
    hit = items.update_one({"$expr": {"$eq": ["$a", "$$x"]}}, {"$set": {"hit": True}}, let={"x": 7})
    assert hit.modified_count == 1 and ids(items.find({"hit": True})) == [7]
    piped = items.update_one({"_id": 8}, [{"$set": {"b": "$$v"}}], let={"v": "set"})
    assert piped.modified_count == 1 and items.find_one({"_id": 8}, {"b": 1}) == {
        "_id": 8,
        "b": "set",
    }
    found = items.find_one_and_delete({"$expr": {"$eq": ["$a", "$$x"]}}, let={"x": 9})
    assert found is not None and found["_id"] == 9
    assert items.delete_many({"$expr": {"$eq": ["$a", "$$x"]}}, let={"x": 1}).deleted_count == 1


def test_natural_order_is_storage_order(db: Database[dict[str, Any]]) -> None:
    coll = db.natural
    coll.insert_many([{"_id": k} for k in ("m", "a", "z")])
    assert ids(coll.find().sort("$natural", 1)) == ["m", "a", "z"]
    assert ids(coll.find().sort("$natural", -1)) == ["z", "a", "m"]
