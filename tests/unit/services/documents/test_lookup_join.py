"""Which $lookup sub-pipelines the engine runs (pushdown.lookup_join), and which values
keep a chunk of input documents on the per-document path."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from bson.regex import Regex

from heliosdb.services.documents.pushdown import lookup_join
from heliosdb.services.documents.values import MISSING

EQ = {"$match": {"$expr": {"$eq": ["$k", "$$v"]}}}


@pytest.mark.parametrize(
    "stages",
    [
        [EQ],
        [EQ, {"$sort": {"n": -1}}, {"$skip": 2}, {"$limit": 5}, {"$project": {"n": 1}}],
        [{"$match": {"$expr": {"$and": [{"$gte": ["$n", {"$add": ["$$v", 1]}]}]}, "x": 1}}],
        [{"$match": {"$expr": {"$in": ["$k", "$$list"]}}}],
        [{"$match": {"$expr": {"$or": [{"$not": [{"$lt": ["$$v", 3]}]}, {"$eq": [1, "$k"]}]}}}],
        [{"$match": {"status": "A"}}],
        [],
    ],
)
def test_lookup_join_compiles(stages: list[dict[str, Any]]) -> None:
    assert lookup_join(stages) is not None


@pytest.mark.parametrize(
    "expr",
    [
        {"$eq": ["$a", "$b"]},  # two fields: embedded documents compare in field order
        {"$eq": ["$a.b", "$$v"]},  # a dotted path maps over arrays
        {"$eq": ["$$ROOT", "$$v"]},
        {"$in": ["$$v", "$list"]},  # the array is a field
        {"$gt": [{"$add": ["$n", 1]}, "$$v"]},  # an expression of a field
        {"$regexMatch": {"input": "$k", "regex": "$$v"}},
    ],
)
def test_lookup_join_leaves_to_python(expr: Any) -> None:
    assert lookup_join([{"$match": {"$expr": expr}}]) is None


def test_lookup_join_stages_after_its_part_run_in_python() -> None:
    later: list[dict[str, Any]] = [
        {"$project": {"n": 1}},
        {"$match": {"$expr": {"$eq": ["$n", "$$v"]}}},
    ]
    join = lookup_join([EQ, *later])
    assert join is not None and join.rest == later


@pytest.mark.parametrize(
    "value",
    [
        None,
        MISSING,
        True,
        5,
        Int64(5),
        2.5,
        Decimal128("1.1"),
        "s",
        ObjectId(),
        dt.datetime(2024, 1, 1),
    ],
)
def test_lookup_join_takes_scalars_that_compare_in_sql(value: Any) -> None:
    join = lookup_join([EQ])
    assert join is not None
    assert join.values([value]) is not None


@pytest.mark.parametrize("value", [{"a": 1}, [1], b"x", Regex("a")])
def test_lookup_join_leaves_other_values_to_python(value: Any) -> None:
    join = lookup_join([EQ])
    assert join is not None
    assert join.values([value]) is None


def test_lookup_join_in_takes_arrays_of_scalars_and_null() -> None:
    join = lookup_join([{"$match": {"$expr": {"$in": ["$k", "$$list"]}}}])
    assert join is not None
    assert join.values([[1, "a"]]) == [[1, "a"]]
    assert join.values([None]) == [[]]
    assert join.values([[{"a": 1}]]) is None
    assert join.values(["abc"]) is None


def test_lookup_join_statement_binds_values_never_text() -> None:
    join = lookup_join([EQ, {"$sort": {"n": 1}}, {"$limit": 2}])
    assert join is not None
    sql, values = join.statement('"d"."c"', {}, [["x'; DROP TABLE t; --"]], 1000)
    assert "DROP" not in sql
    assert values[0] == [["x'; DROP TABLE t; --"]]
    assert values[-1] == 1000
