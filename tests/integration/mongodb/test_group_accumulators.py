"""``$group`` accumulators beyond sums and lists, through pymongo: standard deviations,
``$mergeObjects`` and the n-element ones, with MongoDB's orders and null rules."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database

SCORES = [("a", 31), ("b", 33), ("c", 1), ("d", 99), ("e", 80), ("f", None)]


@pytest.fixture(scope="module")
def games(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.games
    coll.insert_many(
        [{"player": p, "score": s, "game": 1, "info": {p: s}} for p, s in SCORES]
        + [{"player": "z", "game": 2}]
    )
    return coll


def one_group(coll: Collection[dict[str, Any]], accumulator: dict[str, Any]) -> Any:
    rows = list(
        coll.aggregate(
            [
                {"$match": {"game": 1}},
                {"$sort": {"player": 1}},
                {"$group": {"_id": "$game", "r": accumulator}},
            ]
        )
    )
    assert len(rows) == 1
    return rows[0]["r"]


@pytest.mark.parametrize(
    ("accumulator", "expected"),
    [
        ({"$firstN": {"input": "$score", "n": 2}}, [31, 33]),
        ({"$lastN": {"input": "$score", "n": 2}}, [80, None]),  # nulls kept
        ({"$maxN": {"input": "$score", "n": 3}}, [99, 80, 33]),
        ({"$minN": {"input": "$score", "n": 2}}, [1, 31]),  # nulls left out
        ({"$top": {"sortBy": {"score": -1}, "output": "$player"}}, "d"),
        ({"$bottom": {"sortBy": {"score": -1}, "output": "$player"}}, "f"),
        (
            {"$topN": {"sortBy": {"score": -1}, "output": ["$player", "$score"], "n": 2}},
            [["d", 99], ["e", 80]],
        ),
        ({"$bottomN": {"sortBy": {"score": -1}, "output": "$score", "n": 3}}, [31, 1, None]),
        ({"$mergeObjects": "$info"}, {"a": 31, "b": 33, "c": 1, "d": 99, "e": 80, "f": None}),
    ],
)
def test_accumulators(games: Collection[dict[str, Any]], accumulator: Any, expected: Any) -> None:
    assert one_group(games, accumulator) == expected


def test_standard_deviations(games: Collection[dict[str, Any]]) -> None:
    numbers = [31, 33, 1, 99, 80]
    mean = sum(numbers) / len(numbers)
    population = (sum((x - mean) ** 2 for x in numbers) / len(numbers)) ** 0.5
    sample = (sum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1)) ** 0.5
    assert one_group(games, {"$stdDevPop": "$score"}) == pytest.approx(population)
    assert one_group(games, {"$stdDevSamp": "$score"}) == pytest.approx(sample)
    rows = games.aggregate(
        [{"$match": {"game": 2}}, {"$group": {"_id": 1, "s": {"$stdDevSamp": "$score"}}}]
    )
    assert list(rows) == [{"_id": 1, "s": None}]  # no numbers


@pytest.mark.parametrize(
    "accumulator",
    [
        {"$firstN": {"input": "$score", "n": 0}},
        {"$topN": {"sortBy": {"score": 2}, "output": "$score", "n": 1}},
        {"$top": {"output": "$score"}},
        {"$mergeObjects": "$score"},
    ],
)
def test_bad_arguments_are_errors(games: Collection[dict[str, Any]], accumulator: Any) -> None:
    with pytest.raises(pymongo.errors.OperationFailure):
        one_group(games, accumulator)
