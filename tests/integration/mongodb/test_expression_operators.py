"""Aggregation expression operators through pymongo: dates (with time zones), arrays and
sets, strings, control flow and conversions, as MongoDB answers them; a ``$group`` key
that is an operator expression; ``$expr`` with operators the engine's SQL lacks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pymongo
import pytest
from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.database import Database

UTC = dt.UTC
WHEN = dt.datetime(2024, 1, 31, 23, 30, 15, 250000, tzinfo=UTC)  # a Wednesday


@pytest.fixture(scope="module")
def items(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    coll = db.expressions
    coll.insert_one(
        {
            "_id": 1,
            "d": WHEN,
            "s": "  Hello World  ",
            "a": [1, 2, 3, 2],
            "b": [2, 4],
            "n": 2.0,
            "t": "2021-03-04T05:06:07Z",
            "x": "42",
        }
    )
    return coll


def value_of(coll: Collection[dict[str, Any]], expr: Any) -> Any:
    (row,) = coll.aggregate([{"$project": {"_id": 0, "r": expr}}])
    return row.get("r", "missing")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"$dateToString": {"date": "$d"}}, "2024-01-31T23:30:15.250Z"),
        (
            {"$dateToString": {"date": "$d", "format": "%Y/%m/%d %j w%w u%u U%U V%V G%G %z %Z %%"}},
            "2024/01/31 031 w4 u3 U04 V05 G2024 +0000 +0 %",
        ),
        (
            {"$dateToString": {"date": "$d", "format": "%H:%M", "timezone": "America/New_York"}},
            "18:30",
        ),
        (
            {"$dateToString": {"date": "$d", "format": "%d %H:%M %z", "timezone": "+05:30"}},
            "01 05:00 +0530",
        ),
        ({"$dateToString": {"date": "$nothing", "onNull": "none"}}, "none"),
        ({"$month": {"date": "$d", "timezone": "Asia/Tokyo"}}, 2),
        ({"$month": "$d"}, 1),
        ({"$dayOfWeek": "$d"}, 4),
        ({"$dayOfYear": "$d"}, 31),
        ({"$week": "$d"}, 4),
        ({"$isoWeek": "$d"}, 5),
        ({"$isoDayOfWeek": "$d"}, 3),
        ({"$millisecond": "$d"}, 250),
        ({"$year": "$nothing"}, None),
        ({"$toDate": "$t"}, dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ({"$toDate": 86_400_000}, dt.datetime(1970, 1, 2, tzinfo=UTC)),
        (
            {"$dateFromString": {"dateString": "03/04/2021", "format": "%m/%d/%Y"}},
            dt.datetime(2021, 3, 4, tzinfo=UTC),
        ),
        (
            {"$dateFromString": {"dateString": "2021-03-04T10:00:00", "timezone": "+02:00"}},
            dt.datetime(2021, 3, 4, 8, tzinfo=UTC),
        ),
        ({"$dateFromString": {"dateString": "not a date", "onError": "bad"}}, "bad"),
        # the month's end when the day does not exist in the next month
        (
            {"$dateAdd": {"startDate": "$d", "unit": "month", "amount": 1}},
            dt.datetime(2024, 2, 29, 23, 30, 15, 250000, tzinfo=UTC),
        ),
        (
            {"$dateSubtract": {"startDate": "$d", "unit": "hour", "amount": 24}},
            dt.datetime(2024, 1, 30, 23, 30, 15, 250000, tzinfo=UTC),
        ),
        (
            {
                "$dateDiff": {
                    "startDate": "$d",
                    "endDate": dt.datetime(2025, 1, 1, tzinfo=UTC),
                    "unit": "month",
                }
            },
            12,
        ),
        (
            {
                "$dateDiff": {
                    "startDate": "$d",
                    "endDate": dt.datetime(2024, 2, 1, tzinfo=UTC),
                    "unit": "day",
                }
            },
            1,
        ),
        ({"$dateTrunc": {"date": "$d", "unit": "week"}}, dt.datetime(2024, 1, 28, tzinfo=UTC)),
        (
            {"$dateTrunc": {"date": "$d", "unit": "hour", "binSize": 6}},
            dt.datetime(2024, 1, 31, 18, tzinfo=UTC),
        ),
        (
            {"$dateTrunc": {"date": "$d", "unit": "day", "timezone": "America/New_York"}},
            dt.datetime(2024, 1, 31, 5, tzinfo=UTC),
        ),
    ],
)
def test_date_operators(items: Collection[dict[str, Any]], expr: Any, expected: Any) -> None:
    assert value_of(items, expr) == expected


def test_a_date_difference_is_a_long(items: Collection[dict[str, Any]]) -> None:
    diff = value_of(items, {"$dateDiff": {"startDate": "$d", "endDate": "$d", "unit": "year"}})
    assert diff == 0 and isinstance(diff, Int64)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"$isArray": "$a"}, True),
        ({"$slice": ["$a", -2]}, [3, 2]),
        ({"$slice": ["$a", 1, 2]}, [2, 3]),
        ({"$reverseArray": "$a"}, [2, 3, 2, 1]),
        ({"$indexOfArray": ["$a", 2.0]}, 1),
        ({"$range": [0, 10, 3]}, [0, 3, 6, 9]),
        ({"$reduce": {"input": "$a", "initialValue": 0, "in": {"$add": ["$$value", "$$this"]}}}, 8),
        ({"$setIntersection": ["$a", "$b"]}, [2]),
        ({"$setDifference": ["$a", "$b"]}, [1, 3]),
        ({"$setEquals": [[1, 2], [2, 1.0, 1]]}, True),
        ({"$setIsSubset": [[1], "$a"]}, True),
        ({"$anyElementTrue": [[0, False, 1]]}, True),
        ({"$allElementsTrue": [[1, None]]}, False),
        ({"$zip": {"inputs": ["$a", "$b"]}}, [[1, 2], [2, 4]]),
        ({"$trim": {"input": "$s"}}, "Hello World"),
        ({"$rtrim": {"input": "xxhixx", "chars": "x"}}, "xxhi"),
        ({"$regexMatch": {"input": "$s", "regex": "world", "options": "i"}}, True),
        (
            {"$regexFind": {"input": "$s", "regex": "(l+)o"}},
            {"match": "llo", "idx": 4, "captures": ["ll"]},
        ),
        ({"$replaceAll": {"input": "a-b-c", "find": "-", "replacement": "+"}}, "a+b+c"),
        ({"$replaceOne": {"input": "a-b-c", "find": "-", "replacement": "+"}}, "a+b-c"),
        ({"$strcasecmp": ["abc", "ABC"]}, 0),
        ({"$indexOfCP": ["$s", "World"]}, 8),
        (
            {
                "$switch": {
                    "branches": [{"case": {"$gt": ["$n", 5]}, "then": "big"}],
                    "default": "small",
                }
            },
            "small",
        ),
        ({"$let": {"vars": {"v": {"$multiply": ["$n", 3]}}, "in": {"$add": ["$$v", 1]}}}, 7.0),
        ({"$pow": [2, 10]}, 1024),
        ({"$trunc": [3.789, 1]}, 3.7),
        ({"$toInt": "$x"}, 42),
        ({"$toBool": "$x"}, True),
        ({"$toString": "$n"}, "2"),
        ({"$convert": {"input": "abc", "to": "int", "onError": -1}}, -1),
        ({"$convert": {"input": "$x", "to": "double"}}, 42.0),
        ({"$toLong": "$d"}, 1_706_743_815_250),
    ],
)
def test_array_string_and_other_operators(
    items: Collection[dict[str, Any]], expr: Any, expected: Any
) -> None:
    assert value_of(items, expr) == expected


@pytest.mark.parametrize(
    ("expr", "code"),
    [
        ({"$bogus": "$a"}, 168),
        ({"$toInt": "abc"}, 2),
        ({"$switch": {"branches": [{"case": False, "then": 1}]}}, 2),
        ({"$dateToString": {"date": "$s"}}, 14),
    ],
)
def test_bad_operands_are_errors(items: Collection[dict[str, Any]], expr: Any, code: int) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as raised:
        value_of(items, expr)
    assert raised.value.code == code


def test_a_group_key_that_is_an_operator_is_computed(db: Database[dict[str, Any]]) -> None:
    coll = db.group_keys
    coll.insert_many(
        [{"d": dt.datetime(2024, m, 3, tzinfo=UTC)} for m in (1, 1, 2)] + [{"other": 1}]
    )
    rows = coll.aggregate(
        [{"$group": {"_id": {"$month": "$d"}, "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    )
    assert list(rows) == [{"_id": None, "n": 1}, {"_id": 1, "n": 2}, {"_id": 2, "n": 1}]
    with pytest.raises(pymongo.errors.OperationFailure) as raised:
        list(coll.aggregate([{"$group": {"_id": {"$bogus": "$d"}}}]))
    assert raised.value.code == 168


def test_expr_with_operators_sql_lacks(db: Database[dict[str, Any]]) -> None:
    coll = db.expr_fallback
    coll.insert_many(
        [{"name": n, "k": i} for i, n in enumerate(["alpha", "Beta", "gamma", "beta"])]
    )
    beta = {"$expr": {"$regexMatch": {"input": "$name", "regex": "^beta$", "options": "i"}}}
    assert sorted(d["k"] for d in coll.find(beta)) == [1, 3]
    assert coll.count_documents({"$and": [beta, {"k": {"$gt": 1}}]}) == 1
    assert coll.count_documents({"$nor": [beta]}) == 2
    # a part the SQL form has ($gte) beside one it lacks: the whole $expr in the node
    mixed = {"$and": [{"$gte": ["$k", 1]}, {"$regexMatch": {"input": "$name", "regex": "a$"}}]}
    assert coll.count_documents({"$expr": mixed}) == 3
    after_group = coll.aggregate(
        [
            {"$group": {"_id": {"$toLower": "$name"}, "n": {"$sum": 1}}},
            {"$match": {"$expr": {"$gt": ["$n", 1]}}},
        ]
    )
    assert list(after_group) == [{"_id": "beta", "n": 2}]
