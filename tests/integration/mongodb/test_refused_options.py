"""Options HeliosDB does not act on are refused with NotImplemented (238), not stored and
ignored: a collation other than ``simple`` (which would change what a filter matches) and
collection options that would check or shape writes (validators, capped collections).
Change streams answer as a standalone mongod answers them."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.operations import DeleteOne, UpdateOne

CASE_INSENSITIVE = {"locale": "en", "strength": 2}


@pytest.fixture(scope="module")
def names(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    db.names.insert_many([{"s": "abc"}, {"s": "ABC"}])
    return db.names


def refused(run: Any) -> pymongo.errors.OperationFailure:
    with pytest.raises(pymongo.errors.OperationFailure) as raised:
        run()
    assert raised.value.code == 238
    return raised.value


@pytest.mark.parametrize(
    "call",
    [
        lambda c: list(c.find({"s": "abc"}, collation=CASE_INSENSITIVE)),
        lambda c: c.count_documents({"s": "abc"}, collation=CASE_INSENSITIVE),
        lambda c: c.distinct("s", collation=CASE_INSENSITIVE),
        lambda c: list(c.aggregate([{"$match": {"s": "abc"}}], collation=CASE_INSENSITIVE)),
        lambda c: c.find_one_and_update(
            {"s": "abc"}, {"$set": {"t": 1}}, collation=CASE_INSENSITIVE
        ),
    ],
)
def test_a_locale_collation_is_refused(names: Collection[dict[str, Any]], call: Any) -> None:
    assert "collation" in str(refused(lambda: call(names)))


def test_writes_with_a_locale_collation_fail_and_change_nothing(
    names: Collection[dict[str, Any]],
) -> None:
    with pytest.raises(pymongo.errors.BulkWriteError) as raised:
        names.bulk_write([UpdateOne({"s": "abc"}, {"$set": {"t": 1}}, collation=CASE_INSENSITIVE)])
    assert raised.value.details["writeErrors"][0]["code"] == 238
    with pytest.raises(pymongo.errors.BulkWriteError) as raised:
        names.bulk_write([DeleteOne({"s": "abc"}, collation=CASE_INSENSITIVE)])
    assert raised.value.details["writeErrors"][0]["code"] == 238
    assert names.count_documents({}) == 2
    assert names.count_documents({"t": 1}) == 0


def test_the_simple_collation_is_what_queries_do(names: Collection[dict[str, Any]]) -> None:
    assert [d["s"] for d in names.find({"s": "abc"}, collation={"locale": "simple"})] == ["abc"]


@pytest.mark.parametrize(
    "options",
    [
        {"validator": {"s": {"$type": "string"}}},
        {"validator": {"$jsonSchema": {"required": ["s"]}}},
        {"capped": True, "size": 4096},
        {"timeseries": {"timeField": "t"}},
        {"collation": CASE_INSENSITIVE},
    ],
)
def test_collection_options_not_acted_on_are_refused(
    db: Database[dict[str, Any]], options: dict[str, Any]
) -> None:
    refused(lambda: db.create_collection("refused", **options))
    assert "refused" not in db.list_collection_names()


def test_harmless_create_options_still_work(db: Database[dict[str, Any]]) -> None:
    db.create_collection("plain_options", validator={}, capped=False)
    assert "plain_options" in db.list_collection_names()


def test_watch_answers_as_a_standalone_server(names: Collection[dict[str, Any]]) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as raised:
        names.watch()
    assert raised.value.code == 40573
    assert raised.value.details is not None
    assert raised.value.details["codeName"] == "Location40573"
