"""``$documents``: a database-level aggregate (``db.aggregate``, ``{aggregate: 1}``) whose
first stage gives literal documents (or an expression evaluating to an array of them),
which the later stages read as a collection's; and a ``$lookup`` or ``$unionWith``
whose pipeline starts with it, in place of a collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.integration.mongodb.test_node_clients import MONGOSH, mongosh_script

Db = Database[dict[str, Any]]


def test_documents_feed_the_later_stages(db: Db) -> None:
    found = db.aggregate(
        [
            {"$documents": [{"x": 10}, {"x": 2}, {"x": 5}]},
            {"$bucketAuto": {"groupBy": "$x", "buckets": 4}},
        ]
    )
    assert list(found) == [
        {"_id": {"min": 2, "max": 5}, "count": 1},
        {"_id": {"min": 5, "max": 10}, "count": 1},
        {"_id": {"min": 10, "max": 10}, "count": 1},
    ]
    found = db.aggregate(
        [{"$documents": [{"x": 1, "y": "a"}, {"x": 2}]}, {"$match": {"x": {"$gt": 1}}}]
    )
    assert list(found) == [{"x": 2}]


def test_documents_from_an_expression_and_let(db: Db) -> None:
    found = db.aggregate(
        [
            {"$documents": {"$map": {"input": {"$range": [0, 3]}, "in": {"n": "$$this"}}}},
            {"$group": {"_id": None, "total": {"$sum": "$n"}}},
        ]
    )
    assert list(found) == [{"_id": None, "total": 3}]
    found = db.aggregate([{"$documents": "$$given"}], let={"given": [{"a": 1}, {"a": 2}]})
    assert [d["a"] for d in found] == [1, 2]
    assert list(db.aggregate([{"$documents": []}])) == []


def test_documents_look_up_a_collection(db: Db) -> None:
    db.locations.insert_many(
        [{"zip": 94301, "name": "Palo Alto"}, {"zip": 10019, "name": "New York"}]
    )
    found = db.aggregate(
        [
            {"$documents": [{"zip": 94301}, {"zip": 10019}, {"zip": 1}]},
            {"$lookup": {"from": "locations", "localField": "zip", "foreignField": "zip",
                         "as": "city"}},
            {"$project": {"_id": 0, "zip": 1, "city": "$city.name"}},
        ]
    )  # fmt: skip
    assert list(found) == [
        {"zip": 94301, "city": ["Palo Alto"]},
        {"zip": 10019, "city": ["New York"]},
        {"zip": 1, "city": []},
    ]


@pytest.mark.parametrize(
    ("stages", "code"),
    [
        ([{"$documents": 5}], 5858203),  # not an array
        ([{"$documents": [1, 2]}], 40228),  # not documents
        ([{"$match": {}}, {"$documents": [{"a": 1}]}], 40602),  # not first
    ],
)
def test_bad_documents(db: Db, stages: list[dict[str, Any]], code: int) -> None:
    with pytest.raises(OperationFailure) as raised:
        list(db.aggregate(stages))
    assert raised.value.code == code


def test_documents_on_a_collection_is_refused(db: Db) -> None:
    with pytest.raises(OperationFailure) as raised:
        list(db.items.aggregate([{"$documents": [{"a": 1}]}]))
    assert raised.value.code == 73


@pytest.mark.skipif(not MONGOSH.exists(), reason="mongosh is installed by scripts/test-deps")
def test_mongosh_db_aggregate_with_documents(mongo_port: int, rw_key: str, tmp_path: Path) -> None:
    out = mongosh_script(mongo_port, rw_key, tmp_path, "mongosh_documents.js")
    assert out["buckets"] == [
        {"_id": {"min": 2, "max": 5}, "count": 1},
        {"_id": {"min": 5, "max": 10}, "count": 1},
        {"_id": {"min": 10, "max": 10}, "count": 1},
    ]
    assert out["sorted"] == [1, 2, 3]
    assert out["onCollection"] == 73


def test_a_lookup_joins_documents_of_its_own(db: Db) -> None:
    # MongoDB's example: no 'from', the pipeline's $documents matched on the fields
    db.zips.drop()
    db.zips.insert_many([{"_id": 1, "zip": 94301}, {"_id": 2, "zip": 10019}])
    cities = [{"zip_id": 94301, "name": "Palo Alto, CA"}, {"zip_id": 10019, "name": "NYC"}]
    found = db.zips.aggregate(
        [
            {"$match": {}},
            {"$lookup": {"localField": "zip", "foreignField": "zip_id", "as": "city",
                         "pipeline": [{"$documents": cities}, {"$project": {"_id": 0}}]}},
            {"$sort": {"_id": 1}},
        ]
    )  # fmt: skip
    assert [d["city"] for d in found] == [
        [{"zip_id": 94301, "name": "Palo Alto, CA"}],
        [{"zip_id": 10019, "name": "NYC"}],
    ]
    # let variables reach the $documents expression
    found = db.zips.aggregate(
        [
            {"$sort": {"_id": 1}},
            {"$lookup": {"let": {"z": "$zip"}, "as": "made",
                         "pipeline": [{"$documents": [{"twice": {"$multiply": ["$$z", 2]}}]}]}},
            {"$project": {"_id": 0, "made": 1}},
        ]
    )  # fmt: skip
    assert list(found) == [{"made": [{"twice": 188602}]}, {"made": [{"twice": 20038}]}]


def test_a_union_with_documents_of_its_own(db: Db) -> None:
    db.few.drop()
    db.few.insert_one({"_id": 1, "x": 1})
    found = db.few.aggregate(
        [{"$unionWith": {"pipeline": [{"$documents": [{"x": 2}, {"x": 3}]}, {"$match": {"x": 3}}]}}]
    )
    assert list(found) == [{"_id": 1, "x": 1}, {"x": 3}]
