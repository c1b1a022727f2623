"""The node's own MongoDB matcher (recheck, arrayFilters, $elemMatch projection) agrees
with the engine's SQL on what the SQL form covers."""

from __future__ import annotations

from typing import Any

import pytest
from bson import MaxKey, MinKey, Regex

from heliosdb.services.documents.matcher import matches


@pytest.mark.parametrize(
    ("document", "spec", "expected"),
    [
        # {$gte: null} and {$lte: null} are {$eq: null}: null, or missing
        ({"a": None}, {"a": {"$gte": None}}, True),
        ({}, {"a": {"$lte": None}}, True),
        ({"a": 1}, {"a": {"$gte": None}}, False),
        ({"a": [1, None]}, {"a": {"$lte": None}}, True),
        ({"a": 4}, {"a.b": {"$lte": None}}, True),  # a scalar on the way: b is missing
        ({"a": {"b": 2}}, {"a.b": {"$gte": None}}, False),
        # {$gt: null} and {$lt: null} match nothing
        ({"a": None}, {"a": {"$gt": None}}, False),
        ({"a": 1}, {"a": {"$gt": None}}, False),
        ({"a": "s"}, {"a": {"$lt": None}}, False),
        ({}, {"a": {"$lt": None}}, False),
    ],
)
def test_null_bounds_are_equalities(
    document: dict[str, Any], spec: dict[str, Any], expected: bool
) -> None:
    assert matches(document, spec) is expected


@pytest.mark.parametrize(
    ("document", "spec", "expected"),
    [
        # every value lies above MinKey and below MaxKey, but the key itself
        ({"a": MinKey()}, {"a": {"$gt": MinKey()}}, False),
        ({"a": 1}, {"a": {"$gt": MinKey()}}, True),
        ({}, {"a": {"$gt": MinKey()}}, True),
        ({"a": MinKey()}, {"a": {"$gte": MinKey()}}, True),
        ({"a": MinKey()}, {"a": {"$lte": MinKey()}}, True),
        ({"a": None}, {"a": {"$lte": MinKey()}}, False),
        ({"a": "s"}, {"a": {"$lt": MaxKey()}}, True),
        ({"a": MaxKey()}, {"a": {"$lt": MaxKey()}}, False),
        ({"a": MaxKey()}, {"a": {"$gte": MaxKey()}}, True),
        ({"a": 1}, {"a": {"$gt": MaxKey()}}, False),
    ],
)
def test_min_and_max_keys_bound_every_value(
    document: dict[str, Any], spec: dict[str, Any], expected: bool
) -> None:
    assert matches(document, spec) is expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"a": Regex("x", "i")}, True),  # the same regex stored
        ({"a": "X"}, True),  # a string it matches
        ({"a": Regex("x")}, False),  # other flags
        ({"a": Regex("y", "i")}, False),
        ({"a": [Regex("x", "i")]}, True),
    ],
)
def test_a_regex_equals_the_same_regex_stored(document: dict[str, Any], expected: bool) -> None:
    assert matches(document, {"a": Regex("x", "i")}) is expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"v": [3]}, True),
        ({"v": {"0": "x"}}, True),
        ({"v": 1}, False),
        ({"v": {"a": 1}}, False),
        ({"v": []}, False),
    ],
)
def test_a_position_reads_an_element_or_a_field(document: dict[str, Any], expected: bool) -> None:
    assert matches(document, {"v.0": {"$exists": True}}) is expected
