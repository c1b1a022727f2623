"""``$bucket`` and ``$unionWith`` through pymongo, as MongoDB answers them."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database


@pytest.fixture(scope="module")
def artists(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.artists
    coll.insert_many(
        [
            {"name": "a", "year": 1845, "price": 10},
            {"name": "b", "year": 1849, "price": 20},
            {"name": "c", "year": 1851, "price": 5},
            {"name": "d", "year": 1871},
            {"name": "e", "year": "unknown"},
            {"name": "f"},
        ]
    )
    return coll


def test_bucket_counts_by_default_in_boundary_order(artists: Collection[dict[str, Any]]) -> None:
    rows = artists.aggregate(
        [{"$bucket": {"groupBy": "$year", "boundaries": [1840, 1850, 1860], "default": "Other"}}]
    )
    assert list(rows) == [
        {"_id": 1840, "count": 2},
        {"_id": 1850, "count": 1},
        {"_id": "Other", "count": 3},  # past the last boundary, a string, missing
    ]


def test_bucket_output_accumulators(artists: Collection[dict[str, Any]]) -> None:
    rows = artists.aggregate(
        [
            {"$match": {"year": {"$type": "number"}}},
            {
                "$bucket": {
                    "groupBy": "$year",
                    "boundaries": [1800, 1850, 1900],
                    "output": {"names": {"$push": "$name"}, "total": {"$sum": "$price"}},
                }
            },
        ]
    )
    assert list(rows) == [
        {"_id": 1800, "names": ["a", "b"], "total": 30},
        {"_id": 1850, "names": ["c", "d"], "total": 5},
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {"groupBy": "$year", "boundaries": [1840, 1850, 1860]},  # values outside, no default
        {"groupBy": "$year", "boundaries": [1850, 1840]},
        {"groupBy": "$year", "boundaries": [1840]},
        {"groupBy": "$year", "boundaries": [1840, "x"]},
        {"groupBy": "$year", "boundaries": [1840, 1860], "default": 1850},
    ],
)
def test_bucket_errors(artists: Collection[dict[str, Any]], spec: dict[str, Any]) -> None:
    with pytest.raises(pymongo.errors.OperationFailure):
        list(artists.aggregate([{"$bucket": spec}]))


def test_union_with_appends_another_collection(
    db: Database[dict[str, Any]], artists: Collection[dict[str, Any]]
) -> None:
    db.sculptors.insert_many([{"name": "x", "year": 1900}, {"name": "y", "year": 1700}])
    names = [
        d["name"]
        for d in artists.aggregate(
            [
                {"$match": {"price": {"$gte": 10}}},
                {"$project": {"_id": 0, "name": 1}},
                {
                    "$unionWith": {
                        "coll": "sculptors",
                        "pipeline": [
                            {"$match": {"year": {"$gt": 1800}}},
                            {"$project": {"_id": 0, "name": 1}},
                        ],
                    }
                },
            ]
        )
    ]
    assert names == ["a", "b", "x"]
    everything = list(artists.aggregate([{"$unionWith": "sculptors"}, {"$count": "n"}]))
    assert everything == [{"n": 8}]
    assert list(
        artists.aggregate([{"$limit": 1}, {"$unionWith": "nothing_here"}, {"$count": "n"}])
    ) == [{"n": 1}]
