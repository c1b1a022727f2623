"""Collection names up to the engine's 63 bytes, in characters of several bytes: finds take
the lone fast path and answer as the normal path; a longer name (MongoDB would take it)
answers InvalidNamespace (73) for reads and writes alike, and never reaches a
collection whose name is its first 63 bytes."""

from __future__ import annotations

import time
from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

LONGEST = "√" + "c" * 60  # 63 bytes in UTF-8
TOO_LONG = LONGEST + "x"


def _pipelined(client: pymongo.MongoClient[dict[str, Any]]) -> int:
    return int(client.admin.command("serverStatus")["heliosdb"]["pipelinedFinds"])


def _lone_find_one(
    client: pymongo.MongoClient[dict[str, Any]], coll: Collection[dict[str, Any]], spec: Any
) -> Any:
    """``find_one(spec)`` once the lone path answered it (the pool path answers first and
    teaches it)."""
    for _ in range(200):
        before = _pipelined(client)
        document = coll.find_one(spec)
        if _pipelined(client) == before + 1:
            return document
        time.sleep(0.01)
    raise AssertionError(f"the lone path never answered {spec}")


def test_longest_name_takes_the_lone_path(
    client: pymongo.MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    coll = db[LONGEST]
    assert len(LONGEST.encode()) == 63
    coll.create_index("k")
    coll.insert_many([{"_id": i, "k": f"k{i}", "n": i} for i in range(5)])
    for spec in ({"_id": 3}, {"k": "k2"}, {"n": 4}, {"_id": 9}):
        assert _lone_find_one(client, coll, spec) == coll.find_one(spec, comment="normal")
    assert _lone_find_one(client, coll, {"k": "k1"}) == {"_id": 1, "k": "k1", "n": 1}
    assert LONGEST in db.list_collection_names()


def test_longer_name_answers_invalid_namespace(db: Database[dict[str, Any]]) -> None:
    db[LONGEST].insert_one({"_id": 100, "here": True})
    coll = db[TOO_LONG]
    attempts = (
        lambda: coll.find_one({"_id": 100}),  # the lone path's kind of find
        lambda: coll.find_one({"here": True}),
        lambda: list(coll.find({})),
        lambda: coll.count_documents({}),
        lambda: coll.distinct("here"),
        lambda: list(coll.aggregate([{"$match": {}}])),
        lambda: coll.insert_one({"_id": 2}),
        lambda: coll.update_one({"_id": 1}, {"$set": {"x": 1}}),
        lambda: coll.delete_one({"_id": 1}),
    )
    for attempt in attempts:
        with pytest.raises(OperationFailure) as caught:
            attempt()
        assert caught.value.code == 73, caught.value
        assert "longer than 63 bytes" in str(caught.value)
    assert db[LONGEST].find_one({"_id": 100}) == {"_id": 100, "here": True}
