"""Finds by one scalar equality on an indexed field with a limit take two halves (the
index scan of the value, then the documents where the path meets an array:
filters.equality_branches). Their matches must be exactly the matches of the single
condition, which a sorted find (no limit shortcut) still uses: each limited find here
gets min(limit, matches) of them, documents where the field is the value first, and
a limit at least the count gets all of them; also after arrays appear in a field that
held only scalars, and the reverse (the engine's cached plan must not assume either)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.database import Database

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "k": ["a", "b"], "u": 1, "p": {"q": [1]}},
    {"_id": 2, "k": "a", "u": 2, "p": {"q": 1}},
    {"_id": 3, "k": [[5]], "u": 3, "p": [{"q": 1}]},
    {"_id": 4, "k": 5, "u": 4.5, "p": {"q": [[1]]}},
    {"_id": 5, "k": [None], "u": "5", "p": {"q": "1"}},
    {"_id": 6, "k": 5.0, "u": True, "p": {"q": 1.0}},
    {"_id": 7, "k": Int64(5), "u": 7, "p": {"r": 1}},
    {"_id": 8, "k": [5, 6], "u": Int64(8), "p": [{"q": [1]}]},
    {"_id": 9, "k": True, "u": 9, "p": {"q": True}},
    {"_id": 10, "k": 1, "u": 10, "p": 1},
    {"_id": 11, "other": "a", "u": 11},
    {"_id": 12, "k": "a", "u": 12, "p": {"q": 1}},
    {"_id": 13, "k": [True, "a", 2.5], "u": 13},
    {"_id": 14, "k": "", "u": ""},
    {"_id": 15, "k": 2.5, "u": 2.5},
    {"_id": 16, "k": {"x": 5}, "u": 16},
]  # fmt: skip
VALUES: list[Any] = ["a", "b", 5, 5.0, Int64(5), 6, True, 1, "", 2.5, "missing", False, 0, "5"]


@pytest.fixture(scope="module")
def items(db: Database[dict[str, Any]]) -> Iterator[Collection[dict[str, Any]]]:
    coll = db[f"eq_{uuid.uuid4().hex[:8]}"]
    coll.insert_many(DOCS)
    coll.create_index("k")
    coll.create_index("u", unique=True)
    coll.create_index("p.q")
    yield coll
    coll.drop()


def all_matches(coll: Collection[dict[str, Any]], spec: dict[str, Any]) -> list[Any]:
    """The ids ``spec`` matches, by the single condition (a sorted find)."""
    return [doc["_id"] for doc in coll.find(spec).sort("_id", 1)]


def limited(coll: Collection[dict[str, Any]], spec: dict[str, Any], limit: int) -> list[Any]:
    return [doc["_id"] for doc in coll.find(spec, limit=limit)]


def is_array_match(coll: Collection[dict[str, Any]], path: str, ident: Any) -> bool:
    doc: Any = coll.find_one({"_id": ident}, sort=[("_id", 1)])
    for part in path.split("."):
        if isinstance(doc, list):
            return True
        doc = doc.get(part) if isinstance(doc, dict) else None
    return isinstance(doc, list)


def check(coll: Collection[dict[str, Any]], path: str, value: Any) -> list[Any]:
    spec = {path: value}
    expected = all_matches(coll, spec)
    for limit in (1, 2, 3, len(DOCS) + 5):
        got = limited(coll, spec, limit)
        assert len(got) == min(limit, len(expected)), (spec, limit, got, expected)
        assert set(got) <= set(expected), (spec, limit, got, expected)
        assert len(set(got)) == len(got), (spec, limit, got)
        if type(value) in (str, int, float, bool) and "." not in path:
            # the two halves (plain values on top-level paths): the field's value first
            kinds = [is_array_match(coll, path, ident) for ident in got]
            assert kinds == sorted(kinds), (spec, limit, got)
        one = coll.find_one(spec)
        assert (one is None) == (not expected)
        assert one is None or one["_id"] in expected
    return expected


@pytest.mark.parametrize("path", ["k", "u", "p.q"])
def test_limited_equality_finds_match_exactly_what_the_single_condition_matches(
    items: Collection[dict[str, Any]], path: str
) -> None:
    for value in VALUES:
        check(items, path, value)
    # values MongoDB matches inside arrays, numbers equal across types, no nested arrays
    assert check(items, "k", "a") == [1, 2, 12, 13]
    assert check(items, "k", 5) == [4, 6, 7, 8]
    assert check(items, "k", True) == [9, 13]
    assert check(items, "k", 1) == [10]
    assert check(items, "u", 4.5) == [4]


def test_arrays_appearing_after_scalars_and_the_reverse_are_found(
    db: Database[dict[str, Any]],
) -> None:
    coll = db[f"flip_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": i, "k": f"s{i % 5}"} for i in range(40)])
    coll.create_index("k")
    for _ in range(8):  # the engine settles on its generic plan with scalars only
        assert check(coll, "k", "s1") == [1, 6, 11, 16, 21, 26, 31, 36]
        assert check(coll, "k", "x") == []
    # an array now holds a value no scalar has, and one a scalar has too
    coll.insert_many([{"_id": 100, "k": ["x", "s1"]}, {"_id": 101, "k": [["x"]]}])
    assert check(coll, "k", "x") == [100]
    assert check(coll, "k", "s1") == [1, 6, 11, 16, 21, 26, 31, 36, 100]
    assert limited(coll, {"k": "x"}, 1) == [100]
    # the scalars go away: only the array matches; then the array becomes a scalar
    coll.delete_many({"k": "s1", "_id": {"$lt": 100}})
    assert check(coll, "k", "s1") == [100]
    coll.update_one({"_id": 100}, {"$set": {"k": "x"}})
    assert check(coll, "k", "s1") == []
    assert check(coll, "k", "x") == [100]
    # and back to an array holding it, with no array left elsewhere
    coll.delete_one({"_id": 101})
    coll.update_one({"_id": 100}, {"$set": {"k": ["y", "x"]}})
    assert check(coll, "k", "x") == [100]
    coll.drop()
