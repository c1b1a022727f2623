"""``hint`` through pymongo: the engine plans for itself, but a hint must name an index
that exists (by name or key pattern) or be ``$natural``, as MongoDB requires."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.operations import DeleteOne, UpdateOne


@pytest.fixture(scope="module")
def hinted(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.hinted
    coll.insert_many([{"_id": i, "a": i} for i in range(5)])
    coll.create_index("a", name="by_a")
    return coll


@pytest.mark.parametrize("hint", ["by_a", [("a", 1)], "_id_", [("$natural", -1)]])
def test_hints_that_exist_are_taken(hinted: Collection[dict[str, Any]], hint: Any) -> None:
    assert [d["_id"] for d in hinted.find({"a": {"$gte": 3}}).hint(hint).sort("a", 1)] == [3, 4]
    assert hinted.count_documents({"a": 1}, hint=hint) == 1


@pytest.mark.parametrize("hint", ["no_such_index", [("a", -1)], [("b", 1)]])
def test_hints_that_do_not_exist_fail(hinted: Collection[dict[str, Any]], hint: Any) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as raised:
        list(hinted.find({"a": 1}).hint(hint))
    assert raised.value.code == 2
    with pytest.raises(pymongo.errors.OperationFailure):
        hinted.count_documents({"a": 1}, hint=hint)
    with pytest.raises(pymongo.errors.OperationFailure):
        list(hinted.aggregate([{"$match": {"a": 1}}], hint=hint))
    with pytest.raises(pymongo.errors.BulkWriteError) as bulk:
        hinted.bulk_write(
            [UpdateOne({"a": 1}, {"$set": {"b": 1}}, hint=hint), DeleteOne({"a": 2}, hint=hint)]
        )
    assert bulk.value.details["writeErrors"][0]["code"] == 2
    assert hinted.count_documents({"b": 1}) == 0 and hinted.count_documents({}) == 5
