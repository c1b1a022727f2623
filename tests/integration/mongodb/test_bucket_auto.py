"""``$bucketAuto`` through pymongo: about equal buckets with MongoDB's boundaries, the
granularity series, and its option errors with MongoDB's codes."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from bson.decimal128 import Decimal128
from pymongo.collection import Collection
from pymongo.database import Database

PRICES = [199.99, 280.00, 76.04, 167.30, 483.00, 385.00, 159.00, 118.42]


@pytest.fixture(scope="module")
def artwork(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    db.artwork.insert_many([{"_id": i, "price": p, "year": 1900 + i} for i, p in enumerate(PRICES)])
    return db.artwork


@pytest.fixture(scope="module")
def hundred(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    db.hundred.insert_many([{"_id": i, "n": i} for i in range(100)])
    return db.hundred


def buckets(coll: Collection[dict[str, Any]], **spec: Any) -> list[Any]:
    return list(coll.aggregate([{"$bucketAuto": spec}]))


def test_bucket_auto_even_buckets(artwork: Collection[dict[str, Any]]) -> None:
    # MongoDB's manual: a max is the next bucket's min, the last one's the largest value
    assert buckets(artwork, groupBy="$price", buckets=4) == [
        {"_id": {"min": 76.04, "max": 159.0}, "count": 2},
        {"_id": {"min": 159.0, "max": 199.99}, "count": 2},
        {"_id": {"min": 199.99, "max": 385.0}, "count": 2},
        {"_id": {"min": 385.0, "max": 483.0}, "count": 2},
    ]


def test_bucket_auto_output_accumulators(artwork: Collection[dict[str, Any]]) -> None:
    rows = buckets(
        artwork,
        groupBy="$price",
        buckets=2,
        output={"n": {"$sum": 1}, "years": {"$push": "$year"}, "top": {"$max": "$price"}},
    )
    assert rows == [
        {
            "_id": {"min": 76.04, "max": 199.99},
            "n": 4,
            "years": [1902, 1907, 1906, 1903],
            "top": 167.3,
        },
        {
            "_id": {"min": 199.99, "max": 483.0},
            "n": 4,
            "years": [1900, 1901, 1905, 1904],
            "top": 483.0,
        },
    ]


def test_bucket_auto_equal_values_stay_together(db: Database[dict[str, Any]]) -> None:
    db.same.insert_many([{"v": v} for v in [1, 1, 1, 1, 2, 3]])
    assert buckets(db.same, groupBy="$v", buckets=3) == [
        {"_id": {"min": 1, "max": 2}, "count": 4},
        {"_id": {"min": 2, "max": 3}, "count": 2},
    ]


def test_bucket_auto_more_buckets_than_documents(artwork: Collection[dict[str, Any]]) -> None:
    rows = buckets(artwork, groupBy="$year", buckets=20)
    assert [r["count"] for r in rows] == [1] * 8
    assert rows[-1]["_id"] == {"min": 1907, "max": 1907}


def test_bucket_auto_missing_values_are_null(db: Database[dict[str, Any]]) -> None:
    db.holes.insert_many([{"v": 5}, {}, {"v": None}, {"v": 7}])
    assert buckets(db.holes, groupBy="$v", buckets=2) == [
        {"_id": {"min": None, "max": 5}, "count": 2},
        {"_id": {"min": 5, "max": 7}, "count": 2},
    ]


def test_bucket_auto_empty_collection(db: Database[dict[str, Any]]) -> None:
    assert buckets(db.nothing, groupBy="$v", buckets=3) == []


@pytest.mark.parametrize(
    ("granularity", "count", "expected"),
    [
        # R20: ... 18, 20, 22.4 ... 35.5, 40 ... 56, 63, 71 ... 80, 90, 100; a bucket
        # takes every value below its rounded-up max
        (
            "R20",
            5,
            [
                (0, 20.0, 20),
                (20.0, 40.0, 20),
                (40.0, 63.0, 23),
                (63.0, 90.0, 27),
                (90.0, 100.0, 10),
            ],
        ),
        ("POWERSOF2", 4, [(0, 32, 32), (32, 64, 32), (64, 128, 36)]),
    ],
)
def test_bucket_auto_granularity(
    hundred: Collection[dict[str, Any]], granularity: str, count: int, expected: list[Any]
) -> None:
    rows = buckets(hundred, groupBy="$n", buckets=count, granularity=granularity)
    assert [(r["_id"]["min"], r["_id"]["max"], r["count"]) for r in rows] == expected


def test_bucket_auto_granularity_e_series_on_decimals(db: Database[dict[str, Any]]) -> None:
    db.decimals.insert_many([{"v": Decimal128(v)} for v in ("0.5", "1.3", "2.9", "7")])
    rows = buckets(db.decimals, groupBy="$v", buckets=2, granularity="E6")
    assert [(str(r["_id"]["min"]), str(r["_id"]["max"]), r["count"]) for r in rows] == [
        ("0.47", "1.5", 2),
        ("1.5", "10", 2),
    ]


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"groupBy": "$price"}, 40246),
        ({"buckets": 2}, 40246),
        ({"groupBy": "price", "buckets": 2}, 40239),
        ({"groupBy": "$price", "buckets": "2"}, 40241),
        ({"groupBy": "$price", "buckets": 2.5}, 40242),
        ({"groupBy": "$price", "buckets": 2**40}, 40242),
        ({"groupBy": "$price", "buckets": 0}, 40243),
        ({"groupBy": "$price", "buckets": 2, "output": 1}, 40244),
        ({"groupBy": "$price", "buckets": 2, "bogus": 1}, 40245),
        ({"groupBy": "$price", "buckets": 2, "granularity": 5}, 40261),
        ({"groupBy": "$price", "buckets": 2, "granularity": "R7"}, 40257),
    ],
)
def test_bucket_auto_bad_options(
    artwork: Collection[dict[str, Any]], spec: dict[str, Any], code: int
) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        buckets(artwork, **spec)
    assert failure.value.code == code


def test_bucket_auto_granularity_needs_non_negative_numbers(db: Database[dict[str, Any]]) -> None:
    db.words.insert_many([{"v": "a"}, {"v": 3}])
    db.negative.insert_many([{"v": -1}, {"v": 3}])
    for coll, code in ((db.words, 40258), (db.negative, 40260)):
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            buckets(coll, groupBy="$v", buckets=2, granularity="R5")
        assert failure.value.code == code
    assert buckets(db.words, groupBy="$v", buckets=2) == [
        {"_id": {"min": 3, "max": "a"}, "count": 1},
        {"_id": {"min": "a", "max": "a"}, "count": 1},
    ]
