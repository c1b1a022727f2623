"""values.compare: MongoDB's order of BSON values, documents field by field."""

from __future__ import annotations

from typing import Any

from bson.int64 import Int64

from heliosdb.services.documents.values import compare, sort_key

# MongoDB compares two documents field by field in their stored order: for each pair of
# fields the canonical type of the values, then the field name, then the value; a
# document that is a prefix of the other first.
ASCENDING: list[Any] = [
    {},
    {"a": None},
    {"a": float("nan")},
    {"a": 1},
    {"a": 1, "b": 1},
    {"a": Int64(2)},
    {"b": 0},
    {"b": 1, "a": 1},
    {"a": "x"},
    {"a": {"x": 1}},
    {"a": {"x": 1, "y": 2}},
    {"a": {"y": 1}},
    {"a": [1, 5]},
    {"a": [2]},
]


def test_compare_documents_field_by_field() -> None:
    assert sorted(reversed(ASCENDING), key=sort_key) == ASCENDING
    for i, a in enumerate(ASCENDING):
        for j, b in enumerate(ASCENDING):
            assert compare(a, b) == (i > j) - (i < j), (a, b)


def test_compare_documents_numbers_by_value() -> None:
    assert compare({"a": 2.0, "b": 1}, {"a": Int64(2), "b": 1}) == 0
    assert compare({"a": 2.5}, {"a": Int64(2), "b": 1}) == 1
