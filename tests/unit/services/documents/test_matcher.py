"""The node's own MongoDB matcher (recheck, arrayFilters, $elemMatch projection) agrees
with the engine's SQL on what the SQL form covers."""

from __future__ import annotations

from typing import Any

import pytest

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
        ({}, {"a": {"$lt": None}}, False),
    ],
)
def test_null_bounds_are_equalities(
    document: dict[str, Any], spec: dict[str, Any], expected: bool
) -> None:
    assert matches(document, spec) is expected
