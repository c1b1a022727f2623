"""A number in a dotted path after a name (``"v.0"``) reads MongoDB's way: the array's
element at that position where the value is an array, the field of that name where it
is a document, and nothing where it is anything else (a scalar is no one-element array,
as jsonpath's lax mode would read it). The node's own matcher (matcher.py) agrees."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database

from heliosdb.services.documents.matcher import matches

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "v": 1},
    {"_id": 2, "v": [3]},
    {"_id": 3, "v": {"a": 1}},
    {"_id": 4, "v": []},
    {"_id": 5, "v": {"0": "x"}},
    {"_id": 6},
    {"_id": 7, "v": [[1]]},
    {"_id": 8, "v": [{"a": 1}]},
]

CASES: list[tuple[dict[str, Any], list[int]]] = [
    ({"v.0": {"$exists": True}}, [2, 5, 7, 8]),
    ({"v.0": {"$exists": False}}, [1, 3, 4, 6]),
    ({"v.0": 3}, [2]),
    ({"v.0": {"$gt": 0}}, [2, 7]),
    ({"v.0.a": {"$exists": True}}, [8]),
    ({"v.0": "x"}, [5]),
    ({"v.0": None}, [1, 3, 4, 6]),
    ({"v.0": {"$ne": 3}}, [1, 3, 4, 5, 6, 7, 8]),
    ({"v.1": {"$exists": True}}, []),
    ({"$or": [{"v.0": 3}, {"v.0": "x"}]}, [2, 5]),
]


@pytest.fixture(scope="module")
def coll(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    db.positions.insert_many(DOCS)
    return db.positions


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[str(q) for q, _ in CASES])
def test_a_position_reads_an_element_or_a_field(
    coll: Collection[dict[str, Any]], query: dict[str, Any], expected: list[int]
) -> None:
    assert sorted(d["_id"] for d in coll.find(query)) == expected
    assert coll.count_documents(query) == len(expected)
    assert [d["_id"] for d in DOCS if matches(d, query)] == expected


def test_a_field_named_by_a_number_at_the_top_is_a_field(
    db: Database[dict[str, Any]],
) -> None:
    db.numbered.insert_many([{"_id": 1, "0": "a"}, {"_id": 2, "x": 1}])
    assert [d["_id"] for d in db.numbered.find({"0": {"$exists": True}})] == [1]
    assert [d["_id"] for d in db.numbered.find({"0": "a"})] == [1]
