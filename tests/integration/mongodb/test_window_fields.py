"""``$setWindowFields`` through pymongo: ranks, shifts and accumulators over document
and range windows, per partition, as MongoDB answers them."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database

SALES = [
    ("east", 1, 10),
    ("east", 2, 30),
    ("east", 3, 30),
    ("east", 5, 5),
    ("west", 1, 7),
    ("west", 4, 9),
]


@pytest.fixture(scope="module")
def sales(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.sales
    coll.insert_many([{"region": r, "day": d, "amount": a} for r, d, a in SALES])
    return coll


def window(coll: Collection[dict[str, Any]], output: dict[str, Any], **options: Any) -> list[Any]:
    stage = {"partitionBy": "$region", "sortBy": {"day": 1}, "output": {"w": output}, **options}
    rows = coll.aggregate(
        [{"$setWindowFields": stage}, {"$project": {"_id": 0, "region": 1, "day": 1, "w": 1}}]
    )
    return [(d["region"], d["day"], d["w"]) for d in rows]


def test_running_total_per_partition(sales: Collection[dict[str, Any]]) -> None:
    total = {"$sum": "$amount", "window": {"documents": ["unbounded", "current"]}}
    assert window(sales, total) == [
        ("east", 1, 10),
        ("east", 2, 40),
        ("east", 3, 70),
        ("east", 5, 75),
        ("west", 1, 7),
        ("west", 4, 16),
    ]


def test_moving_average_and_whole_partition(sales: Collection[dict[str, Any]]) -> None:
    moving = {"$avg": "$amount", "window": {"documents": [-1, 1]}}
    assert [w for _, _, w in window(sales, moving)] == [20.0, 70 / 3, 65 / 3, 17.5, 8.0, 8.0]
    assert [w for _, _, w in window(sales, {"$max": "$amount"})] == [30, 30, 30, 30, 9, 9]
    assert [w for _, _, w in window(sales, {"$count": {}})] == [4, 4, 4, 4, 2, 2]


def test_range_window(sales: Collection[dict[str, Any]]) -> None:
    near = {"$push": "$amount", "window": {"range": [-1, 0]}}  # days within one before
    assert [w for _, _, w in window(sales, near)] == [[10], [10, 30], [30, 30], [5], [7], [9]]


def test_ranks_and_shift(sales: Collection[dict[str, Any]]) -> None:
    by_amount = {"partitionBy": "$region", "sortBy": {"amount": -1}}

    def ranked(op: str) -> list[Any]:
        rows = sales.aggregate(
            [
                {"$setWindowFields": {**by_amount, "output": {"r": {op: {}}}}},
                {"$project": {"_id": 0, "amount": 1, "r": 1}},
            ]
        )
        return [(d["amount"], d["r"]) for d in rows]

    assert ranked("$rank") == [(30, 1), (30, 1), (10, 3), (5, 4), (9, 1), (7, 2)]
    assert ranked("$denseRank") == [(30, 1), (30, 1), (10, 2), (5, 3), (9, 1), (7, 2)]
    assert ranked("$documentNumber") == [(30, 1), (30, 2), (10, 3), (5, 4), (9, 1), (7, 2)]
    previous = {"$shift": {"output": "$amount", "by": -1, "default": "none"}}
    assert [w for _, _, w in window(sales, previous)] == ["none", 10, 30, 30, "none", 7]


@pytest.mark.parametrize(
    ("stage"),
    [
        {"sortBy": {"day": 1}, "output": {"r": {"$rank": {}, "window": {"documents": [0, 1]}}}},
        {"output": {"r": {"$rank": {}}}},
        {
            "sortBy": {"day": 1},
            "output": {"r": {"$sum": "$amount", "window": {"documents": [1, -1]}}},
        },
        {"sortBy": {"day": 1}, "output": {"r": {"$bogus": "$amount"}}},
        {
            "sortBy": {"day": 1},
            "output": {"r": {"$sum": "$amount", "window": {"range": [-1, 0], "unit": "day"}}},
        },
    ],
)
def test_bad_specifications_are_errors(
    sales: Collection[dict[str, Any]], stage: dict[str, Any]
) -> None:
    with pytest.raises(pymongo.errors.OperationFailure):
        list(sales.aggregate([{"$setWindowFields": stage}]))
