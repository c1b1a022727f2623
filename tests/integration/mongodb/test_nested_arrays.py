"""MongoDB's array rule in filters: a path reaches a field's value and, when that value
is an array, its elements; never the elements of an array nested in it. ``{k: 5}``
matches ``{k: 5}`` and ``{k: [5]}`` but not ``{k: [[5]]}``; ``{"a.b": 1}`` matches
``{a: [{b: 1}]}`` and ``{a: [{b: [1]}]}`` but not ``{a: [[{b: 1}]]}``. Negations match
what the condition does not (``{k: {$ne: 5}}`` matches ``{k: [[5]]}``). $elemMatch
applies its operators to each element as one value: an element ``[5]`` is an array,
not 5, so ``{$elemMatch: {$eq: 5}}`` misses ``[[5]]`` and ``{$elemMatch: {$eq: [5]}}``
finds it.

Each filter runs on a collection without indexes and on one with indexes on ``k``,
``a.b`` and ``p.q`` (the index conditions only narrow: the exact condition decides),
as a sorted find, a limited find, a count and an aggregation ``$match``; the same
table also checks the Python evaluator (matcher.py: ``$match`` after ``$group``)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Decimal128, ObjectId, Timestamp
from bson.int64 import Int64
from bson.regex import Regex
from pymongo.collection import Collection
from pymongo.database import Database

from heliosdb.services.documents.matcher import matches

OID = ObjectId("65a1b2c3d4e5f60718293a4b")
DATE = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "k": 5},
    {"_id": 2, "k": [5]},
    {"_id": 3, "k": [[5]]},
    {"_id": 4, "k": [[[5]]]},
    {"_id": 5, "k": 6},
    {"_id": 6, "k": [[6]]},
    {"_id": 7, "k": None},
    {"_id": 8, "k": [None]},
    {"_id": 9, "k": [[None]]},
    {"_id": 10},
    {"_id": 11, "k": "abc"},
    {"_id": 12, "k": [["abc"]]},
    {"_id": 13, "k": [[5], 1]},
    {"_id": 14, "k": [OID]},
    {"_id": 15, "k": [[OID]]},
    {"_id": 16, "k": [[DATE]]},
    {"_id": 17, "k": DATE},
    {"_id": 18, "k": [{"b": 1}, 7]},
    {"_id": 20, "a": [{"b": 1}]},
    {"_id": 21, "a": [{"b": [1]}]},
    {"_id": 22, "a": [[{"b": 1}]]},
    {"_id": 23, "a": [{"b": [[1]]}]},
    {"_id": 24, "p": {"q": [[1]]}},
    {"_id": 25, "p": {"q": 1}},
    {"_id": 26, "m": [["x"]]},
    {"_id": 27, "m": [1]},
    {"_id": 28, "m": [[]]},
    {"_id": 29, "n": [{}, {"b": 1}]},
    {"_id": 30, "n": [5, {"b": 1}]},
    {"_id": 31, "e": [{"a": 1}]},
    {"_id": 32, "e": [{"a": 1, "b": 2}]},
    {"_id": 33, "e": [{"a": [1]}]},
    {"_id": 34, "e": [{"x": {"a": 1}}]},
    {"_id": 35, "e": [{"x": {"a": 1, "b": 2}}]},
    {"_id": 36, "e": [{"x": [{"a": 1}]}]},
    {"_id": 37, "e": [[{"a": 1}]]},
    {"_id": 38, "e": [{}, 1]},
    {"_id": 39, "e": [{"a": {"c": [1, {"d": None}]}}]},
    {"_id": 43, "e": [{"a": DATE, "t": Timestamp(1, 2), "o": [OID]}]},
    {"_id": 40, "g": [{"h": {}}, {"h": {"i": 1}}]},
    {"_id": 41, "g": [{"h": [{"i": 1}, {}]}]},
    {"_id": 42, "g": [{"h": [5, {"i": 1}]}]},
    {"_id": 44, "f": [{"x": [1]}]},
    {"_id": 45, "f": [{"x": [[1]]}]},
    {"_id": 46, "f": [{"x": [2]}]},
    {"_id": 47, "f": [{"x": [1, 2]}]},
    {"_id": 48, "f": [{"x": 1}]},
    {"_id": 49, "f": [{"y": [{"x": [2]}, {"x": [1, 3]}]}]},
    {"_id": 50, "f": [{"y": [{"x": [1]}]}, 5]},
]
ALL = {doc["_id"] for doc in DOCS}
NO_K = {doc["_id"] for doc in DOCS if "k" not in doc}
ARRAYS = {doc["_id"] for doc in DOCS if isinstance(doc.get("k"), list)}
E = {doc["_id"] for doc in DOCS if "e" in doc}
F = {doc["_id"] for doc in DOCS if "f" in doc}

# filter, the ids MongoDB matches (the rule that decides, where it is not the plain one)
CASES: list[tuple[dict[str, Any], set[int]]] = [
    # equality: the value, or an element of the array the field is; [5] is not 5
    ({"k": 5}, {1, 2}),
    ({"k": 5.0}, {1, 2}),
    ({"k": Int64(5)}, {1, 2}),
    ({"k": Decimal128("5")}, {1, 2}),
    ({"k": {"$eq": 5}}, {1, 2}),
    ({"k": {"$eq": Int64(5)}}, {1, 2}),
    ({"k": {"$in": [Int64(5), "x"]}}, {1, 2}),
    ({"k": {"$all": [Int64(5)]}}, {1, 2}),
    ({"k": OID}, {14}),
    ({"k": DATE}, {17}),
    ({"k": "abc"}, {11}),
    ({"k": Regex("^ab")}, {11}),
    ({"k": {"$regex": "^ab"}}, {11}),
    # negations match every document the condition does not
    ({"k": {"$ne": 5}}, ALL - {1, 2}),
    ({"k": {"$ne": Int64(5)}}, ALL - {1, 2}),
    ({"k": {"$nin": [Int64(5)]}}, ALL - {1, 2}),
    ({"k": {"$not": {"$gt": 5}}}, ALL - {5, 18}),
    ({"k": {"$not": Regex("^ab")}}, ALL - {11}),
    # ranges compare the value or its elements, within one type
    ({"k": {"$gt": 5}}, {5, 18}),
    ({"k": {"$gte": Int64(5)}}, {1, 2, 5, 18}),
    ({"k": {"$lt": 6}}, {1, 2, 13}),
    ({"k": {"$gt": ObjectId("000000000000000000000000")}}, {14}),
    ({"k": {"$lte": DATE}}, {17}),
    # null: null, an element null, or missing; [null] nested in an array is not null
    ({"k": None}, {7, 8} | NO_K),
    ({"k": {"$in": [None]}}, {7, 8} | NO_K),
    ({"k": {"$ne": None}}, ALL - ({7, 8} | NO_K)),
    # array equality: the field is the array, or has it as an element
    ({"k": [5]}, {2, 3, 13}),
    ({"k": {"$all": [[5]]}}, {2, 3, 13}),
    ({"k": {"$in": [[5], "x"]}}, {2, 3, 13}),
    ({"k": [OID]}, {14, 15}),
    # $elemMatch: each element as one value
    ({"k": {"$elemMatch": {"$eq": 5}}}, {2}),
    ({"k": {"$elemMatch": {"$eq": [5]}}}, {3, 13}),
    ({"k": {"$elemMatch": {"$in": [[5], 99]}}}, {3, 13}),
    ({"k": {"$elemMatch": {"$eq": [OID]}}}, {15}),
    ({"k": {"$elemMatch": {"$ne": [OID]}}}, ARRAYS - {15}),
    ({"k": {"$elemMatch": {"$gt": 5}}}, {18}),
    ({"k": {"$elemMatch": {"$ne": 5}}}, ARRAYS - {2}),
    ({"k": {"$elemMatch": {"$size": 1}}}, {3, 4, 6, 9, 12, 13, 15, 16}),
    ({"k": {"$elemMatch": {"$type": "array"}}}, {3, 4, 6, 9, 12, 13, 15, 16}),
    ({"k": {"$elemMatch": {"$elemMatch": {"$eq": 5}}}}, {3, 13}),
    ({"k": {"$elemMatch": {"b": 1}}}, {18}),
    ({"k": {"$elemMatch": {"$eq": None}}}, {8}),
    # the document form reads an array element as a document keyed by position, and
    # skips scalars (MongoDB's jstests/arrayfind9.js has the "0" and [] cases)
    ({"m": {"$elemMatch": {"0": "x"}}}, {26}),
    ({"m": {"$elemMatch": {"$not": {"$ne": 1}}}}, {27}),
    ({"m": {"$elemMatch": {"$in": [[]]}}}, {28}),
    # MongoDB's jstests/arrayfind5.js: $elemMatch's document form does not look at a
    # scalar element, and a null equality counts an element document lacking the field
    ({"n.b": 1}, {29, 30}),
    ({"n": {"$elemMatch": {"b": 1}}}, {29, 30}),
    ({"n": {"$elemMatch": {"b": None}}}, {29}),
    ({"n.b": None}, ALL - {30}),
    ({"g.h": None}, ALL - {40, 41, 42}),
    ({"g.h.i": None}, ALL - {42}),
    ({"g.h.i": {"$eq": None}}, ALL - {42}),
    ({"g.h.i": {"$in": [None, 7]}}, ALL - {42}),
    ({"g.h.i": {"$all": [None]}}, ALL - {42}),
    ({"g.h.i": {"$ne": None}}, {42}),
    ({"g.h.i": {"$nin": [None]}}, {42}),
    ({"g": {"$elemMatch": {"h.i": None}}}, {40, 41}),
    # an embedded document operand is equal only to the same keys and values (MongoDB:
    # "Equality matches on the whole embedded document require an exact match")
    ({"e": {"$elemMatch": {"$eq": {"a": 1}}}}, {31}),
    ({"e": {"$elemMatch": {"$in": [{"a": 1}, 5]}}}, {31}),
    ({"e": {"$elemMatch": {"$ne": {"a": 1}}}}, E - {31}),
    ({"e": {"$elemMatch": {"$eq": {}}}}, {38}),
    ({"e": {"$elemMatch": {"$eq": [{"a": 1}]}}}, {37}),
    ({"e": {"$elemMatch": {"$eq": {"a": {"c": [1, {"d": None}]}}}}}, {39}),
    ({"e": {"$elemMatch": {"$eq": {"a": {"c": [1, {}]}}}}}, set()),
    ({"e": {"$elemMatch": {"$eq": {"a": DATE, "t": Timestamp(1, 2), "o": [OID]}}}}, {43}),
    ({"e": {"$elemMatch": {"$eq": {"a": DATE, "t": Timestamp(1, 2)}}}}, set()),
    ({"e": {"$elemMatch": {"t": Timestamp(1, 2), "o": OID}}}, {43}),
    ({"e": {"$elemMatch": {"x": {"a": 1}}}}, {34, 36}),
    ({"e": {"$elemMatch": {"x": {"$eq": {"a": 1}}}}}, {34, 36}),
    ({"e": {"a": 1}}, {31}),
    # an array operand in the document form: the field is that array or holds it
    ({"f": {"$elemMatch": {"x": [1]}}}, {44, 45}),
    ({"f": {"$elemMatch": {"x": {"$in": [[1, 2], 7]}}}}, {47}),
    ({"f": {"$elemMatch": {"x": {"$ne": [1]}}}}, F - {44, 45}),
    ({"f": {"$elemMatch": {"y.x": [1]}}}, {50}),
    ({"f.x": [1]}, {44, 45}),
    ({"f.y.x": [1]}, {50}),
    ({"e.x": {"a": 1}}, {34, 36}),
    # $type, $exists, $size, $mod: of the value or its elements
    ({"k": {"$type": "array"}}, ARRAYS),
    ({"k": {"$type": "string"}}, {11}),
    ({"k": {"$type": "objectId"}}, {14}),
    ({"k": {"$type": "date"}}, {17}),
    ({"k": {"$type": "null"}}, {7, 8}),
    ({"k": {"$type": "number"}}, {1, 2, 5, 13, 18}),
    ({"k": {"$type": "object"}}, {18}),
    ({"k": {"$exists": True}}, ALL - NO_K),
    ({"k": {"$size": 1}}, {2, 3, 4, 6, 8, 9, 12, 14, 15, 16}),
    ({"k": {"$mod": [5, 0]}}, {1, 2}),
    # dotted paths step through arrays of documents, not arrays of arrays
    ({"a.b": 1}, {20, 21}),
    ({"a.b": Int64(1)}, {20, 21}),
    ({"a.b": {"$gt": 0}}, {20, 21}),
    ({"a.b": {"$ne": 1}}, ALL - {20, 21}),
    ({"a.b": [1]}, {21, 23}),
    ({"a.b": {"$exists": True}}, {20, 21, 23}),
    ({"a.b": {"$elemMatch": {"$eq": 1}}}, {21}),
    ({"a": {"$elemMatch": {"b": 1}}}, {20, 21}),
    ({"k.b": 1}, {18}),
    ({"p.q": 1}, {25}),
    ({"p.q": Int64(1)}, {25}),
    ({"p.q": {"$gte": 1}}, {25}),
    ({"p.q": {"$ne": 1}}, ALL - {25}),
    ({"p.q": [1]}, {24}),
]


@pytest.fixture(scope="module", params=["plain", "indexed"])
def coll(
    request: pytest.FixtureRequest, db: Database[dict[str, Any]]
) -> Iterator[Collection[dict[str, Any]]]:
    coll = db[f"nested_{uuid.uuid4().hex[:8]}"]
    coll.insert_many(DOCS)
    if request.param == "indexed":
        for path in ("k", "a.b", "p.q"):
            coll.create_index(path)
    yield coll
    coll.drop()


def _case_id(case: tuple[dict[str, Any], set[int]]) -> str:
    return repr(case[0])


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_filter_matches_mongodb(
    coll: Collection[dict[str, Any]], case: tuple[dict[str, Any], set[int]]
) -> None:
    spec, expected = case
    want = sorted(expected)
    assert [d["_id"] for d in coll.find(spec).sort("_id", 1)] == want
    assert sorted(d["_id"] for d in coll.find(spec, limit=len(DOCS))) == want
    assert coll.count_documents(spec) == len(want)
    piped = coll.aggregate([{"$match": spec}, {"$sort": {"_id": 1}}])
    assert [d["_id"] for d in piped] == want
    if want:
        assert coll.find_one(spec, {"_id": 1}) in [{"_id": i} for i in want]
    else:
        assert coll.find_one(spec) is None


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_python_evaluator_agrees(case: tuple[dict[str, Any], set[int]]) -> None:
    spec, expected = case
    assert {doc["_id"] for doc in DOCS if matches(doc, spec)} == expected
