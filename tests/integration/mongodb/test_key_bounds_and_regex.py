"""MinKey and MaxKey as bounds: every value lies above MinKey and below MaxKey, but the
key itself (``{$gt: MinKey()}`` matches all but MinKey, ``{$gte: MinKey()}`` all,
``{$lte: MinKey()}`` MinKey alone). A regex as an equality matches the strings it
matches and the same regex stored (pattern and flags). The node's matcher agrees."""

from __future__ import annotations

from typing import Any

import pytest
from bson import MaxKey, MinKey, Regex
from pymongo.collection import Collection
from pymongo.database import Database

from heliosdb.services.documents.matcher import matches

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "v": MinKey()},
    {"_id": 2, "v": 5},
    {"_id": 3, "v": "x"},
    {"_id": 4, "v": None},
    {"_id": 5},
    {"_id": 6, "v": MaxKey()},
    {"_id": 7, "v": Regex("x", "i")},
    {"_id": 8, "v": Regex("x")},
    {"_id": 9, "v": "aXb"},
]
EVERY = [d["_id"] for d in DOCS]

CASES: list[tuple[dict[str, Any], list[int]]] = [
    ({"v": {"$gt": MinKey()}}, [i for i in EVERY if i != 1]),
    ({"v": {"$gte": MinKey()}}, EVERY),
    ({"v": {"$lte": MinKey()}}, [1]),
    ({"v": {"$lt": MinKey()}}, []),
    ({"v": {"$lt": MaxKey()}}, [i for i in EVERY if i != 6]),
    ({"v": {"$lte": MaxKey()}}, EVERY),
    ({"v": {"$gte": MaxKey()}}, [6]),
    ({"v": {"$gt": MaxKey()}}, []),
    ({"v": Regex("x", "i")}, [3, 7, 9]),
    ({"v": Regex("x")}, [3, 8]),
    ({"v": {"$in": [Regex("^x$", "i")]}}, [3]),
]


@pytest.fixture(scope="module")
def coll(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    db.bounds.insert_many(DOCS)
    return db.bounds


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[str(q) for q, _ in CASES])
def test_bounds_and_regexes_match_as_in_mongodb(
    coll: Collection[dict[str, Any]], query: dict[str, Any], expected: list[int]
) -> None:
    assert sorted(d["_id"] for d in coll.find(query)) == expected
    assert [d["_id"] for d in DOCS if matches(d, query)] == expected
