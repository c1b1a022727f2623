"""A document whose ``_id`` is null: stored once per collection (JSON null in the ``_id``
column, never SQL NULL), found, changed and removed by ``{_id: null}``, as in MongoDB."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.integration.mongodb.conftest import found


@pytest.fixture
def coll(db: Database[dict[str, Any]], coll_name: str) -> Collection[dict[str, Any]]:
    return db[coll_name]


def test_insert_and_find_null_id(coll: Collection[dict[str, Any]]) -> None:
    coll.insert_many([{"_id": 1, "n": 1}, {"_id": "x", "n": 2}])
    assert coll.insert_one({"_id": None, "n": 0}).inserted_id is None
    assert coll.find_one({"_id": None}) == {"_id": None, "n": 0}
    assert list(coll.find({"_id": {"$in": [None, 1]}}, sort=[("n", 1)])) == [
        {"_id": None, "n": 0},
        {"_id": 1, "n": 1},
    ]
    assert list(coll.find({"_id": {"$eq": None}})) == [{"_id": None, "n": 0}]
    assert sorted(d["n"] for d in coll.find({"_id": {"$ne": None}})) == [1, 2]
    assert coll.count_documents({"_id": None}) == 1
    # Other _id types are untouched by the null one.
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_second_null_id_is_a_duplicate_key(coll: Collection[dict[str, Any]]) -> None:
    coll.insert_one({"_id": None, "v": 1})
    with pytest.raises(DuplicateKeyError) as caught:
        coll.insert_one({"_id": None, "v": 2})
    assert caught.value.code == 11000
    assert caught.value.details is not None
    assert caught.value.details["keyValue"] == {"_id": None}
    assert "dup key: { _id: null }" in str(caught.value)
    # In a batch: the other documents go in, the null one is reported.
    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 5}, {"_id": None}, {"_id": 6}], ordered=False)
    errors = bulk.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(1, 11000)]
    assert coll.count_documents({}) == 3
    assert coll.find_one({"_id": None}) == {"_id": None, "v": 1}


def test_update_replace_delete_by_null_id(coll: Collection[dict[str, Any]]) -> None:
    coll.insert_many([{"_id": None, "n": 1}, {"_id": 0, "n": 1}])
    result = coll.update_one({"_id": None}, {"$inc": {"n": 1}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    result = coll.update_one({"_id": None}, {"$set": {"tag": "a"}, "$push": {"l": 1}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert coll.find_one({"_id": None}) == {"_id": None, "n": 2, "tag": "a", "l": [1]}
    assert coll.update_many({"_id": {"$in": [None]}}, {"$set": {"m": True}}).modified_count == 1
    result = coll.replace_one({"_id": None}, {"r": 1})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert coll.find_one({"_id": None}) == {"_id": None, "r": 1}
    assert coll.find_one_and_update({"_id": None}, {"$set": {"r": 2}}) == {"_id": None, "r": 1}
    # Several rows written back in one statement, the null _id among them.
    assert coll.update_many({}, {"$inc": {"n": 1}}).modified_count == 2
    assert coll.find_one({"_id": None}) == {"_id": None, "r": 2, "n": 1}
    assert coll.find_one({"_id": 0}) == {"_id": 0, "n": 2}
    assert coll.delete_one({"_id": None}).deleted_count == 1
    assert coll.find_one({"_id": None}) is None
    assert coll.delete_one({"_id": None}).deleted_count == 0
    assert list(coll.find()) == [{"_id": 0, "n": 2}]


def test_upsert_with_null_id(coll: Collection[dict[str, Any]]) -> None:
    result = coll.update_one({"_id": None}, {"$set": {"a": 1}}, upsert=True)
    assert result.upserted_id is None and found(result.raw_result)["upserted"] is None
    assert coll.find_one({"_id": None}) == {"_id": None, "a": 1}
    result = coll.update_one({"_id": None}, {"$set": {"a": 2}}, upsert=True)
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert "upserted" not in found(result.raw_result)
    coll.delete_one({"_id": None})
    result = coll.replace_one({"_id": None}, {"b": 1}, upsert=True)
    assert found(result.raw_result)["upserted"] is None
    assert list(coll.find()) == [{"_id": None, "b": 1}]


async def test_null_id_through_sql(
    db: Database[dict[str, Any]], coll_name: str, api: httpx.AsyncClient
) -> None:
    db[coll_name].insert_many([{"_id": None, "k": "n"}, {"_id": "s", "k": "s"}])
    sql = (
        f'SELECT _id, _id IS NULL AS sql_null, doc FROM "{db.name}"."{coll_name}" '
        "WHERE _id = 'null'::jsonb"
    )
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [[None, False, {"_id": None, "k": "n"}]]
