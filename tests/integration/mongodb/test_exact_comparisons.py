"""Comparisons the JSONB query form cannot make on its own, made as MongoDB makes them.

MongoDB compares embedded documents field by field in order: ``{a: {x: 1, y: 2}}``
does not match ``{a: {y: 2, x: 1}}``, wherever a document is an equality's operand
($eq, $ne, $in, $nin, $all, $elemMatch, an array holding documents). ``$type`` names
one BSON number type (``"double"``, ``"int"``, ``"long"``, ``"decimal"``; codes 1, 16,
18, 19), ``"number"`` all four. JSONB keeps neither field order nor number types, so
such a filter's SQL selects a superset and the node checks each row again against the
stored BSON, before skip and limit.

Each filter runs on a collection without indexes and on one with indexes on ``a`` and
``n``, as a sorted find, a limited and a skipped find, a count (with skip and limit),
an aggregation ``$match``, a distinct, and as the filter of an update and a delete on
a copy; the same table checks the Python evaluator (matcher.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from bson import Decimal128
from bson.int64 import Int64
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from heliosdb.engine.codecs import register_codecs
from heliosdb.services.documents import bsonform, catalog
from heliosdb.services.documents.matcher import matches
from tests.nodeproc import NodeProcess

XY = {"x": 1, "y": 2}
DEC = Decimal128("0.1")
YX = {"y": 2, "x": 1}

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "a": {"x": 1, "y": 2}},
    {"_id": 2, "a": {"y": 2, "x": 1}},
    {"_id": 3, "a": [{"x": 1, "y": 2}]},
    {"_id": 4, "a": [{"y": 2, "x": 1}]},
    {"_id": 5, "a": {"x": 1}},
    {"_id": 6, "b": [{"p": {"x": 1, "y": 2}}]},
    {"_id": 7, "b": [{"p": {"y": 2, "x": 1}}]},
    {"_id": 8, "d": {"o": {"x": 1, "y": 2}}},
    {"_id": 9, "d": {"o": {"y": 2, "x": 1}}},
    {"_id": 10, "a": [{"x": 1, "y": 2}, {"y": 2, "x": 1}]},
    {"_id": 20, "n": 1.0},
    {"_id": 21, "n": 1},
    {"_id": 22, "n": Int64(1)},
    {"_id": 23, "n": Decimal128("1")},
    {"_id": 24, "n": [2.5, Int64(3)]},
    {"_id": 25, "n": Decimal128("2.5")},
    {"_id": 26, "n": "1"},
    {"_id": 27, "n": [0.5]},
    {"_id": 30, "m": Decimal128("0.1")},
    {"_id": 31, "m": 0.1},
    {"_id": 32, "m": Decimal128("0.10")},
    {"_id": 33, "m": Decimal128("2.3")},
    {"_id": 34, "m": [2.3]},
    {"_id": 35, "m": Decimal128("1E+400")},
    {"_id": 36, "m": 1e308},
]
ALL = {doc["_id"] for doc in DOCS}
DOUBLES = {20, 24, 27}

# filter, the ids MongoDB matches
CASES: list[tuple[dict[str, Any], set[int]]] = [
    # an embedded document equals one with the same fields in the same order
    ({"a": XY}, {1, 3, 10}),
    ({"a": YX}, {2, 4, 10}),
    ({"a": {"$eq": XY}}, {1, 3, 10}),
    ({"a": {"$ne": XY}}, ALL - {1, 3, 10}),
    ({"a": {"$in": [YX, {"x": 1}]}}, {2, 4, 5, 10}),
    ({"a": {"$nin": [XY]}}, ALL - {1, 3, 10}),
    ({"a": {"$all": [YX]}}, {2, 4, 10}),
    ({"a": {"$all": [XY, YX]}}, {10}),
    ({"a": {"$elemMatch": {"$eq": XY}}}, {3, 10}),
    ({"a": {"$elemMatch": {"$ne": XY}}}, {4, 10}),
    ({"a": {"$not": {"$eq": YX}}}, ALL - {2, 4, 10}),
    ({"$nor": [{"a": XY}]}, ALL - {1, 3, 10}),
    ({"$or": [{"a": YX}, {"n": 2.5}]}, {2, 4, 10, 24, 25}),
    # an array holding documents: the same elements, each in order
    ({"a": [XY]}, {3}),
    ({"a": [YX]}, {4}),
    ({"a": [XY, YX]}, {10}),
    ({"a": [YX, XY]}, set()),
    # nested: through arrays of documents, in $elemMatch, inside a one-field document
    ({"b.p": YX}, {7}),
    ({"b": {"$elemMatch": {"p": XY}}}, {6}),
    ({"d": {"o": YX}}, {9}),
    ({"d.o": {"$in": [XY]}}, {8}),
    # $type: one number width each, "number" every width
    ({"n": {"$type": "double"}}, DOUBLES),
    ({"n": {"$type": 1}}, DOUBLES),
    ({"n": {"$type": "int"}}, {21}),
    ({"n": {"$type": 16}}, {21}),
    ({"n": {"$type": "long"}}, {22, 24}),
    ({"n": {"$type": 18}}, {22, 24}),
    ({"n": {"$type": "decimal"}}, {23, 25}),
    ({"n": {"$type": 19}}, {23, 25}),
    ({"n": {"$type": "number"}}, {20, 21, 22, 23, 24, 25, 27}),
    ({"n": {"$type": ["int", "long"]}}, {21, 22, 24}),
    ({"n": {"$type": ["int", "string"]}}, {21, 26}),
    ({"n": {"$not": {"$type": "double"}}}, ALL - DOUBLES),
    ({"n": {"$elemMatch": {"$type": "long"}}}, {24}),
    ({"$and": [{"n": 1}, {"n": {"$type": "long"}}]}, {22}),
    # a Decimal128 equals a double only where their values are equal: 0.1 is not the
    # double 0.1 (0.1000000000000000055...), and sits below it; 2.3 sits above 2.3
    ({"m": Decimal128("0.1")}, {30, 32}),
    ({"m": 0.1}, {31}),
    ({"m": {"$ne": Decimal128("0.1")}}, ALL - {30, 32}),
    ({"m": {"$in": [0.1, 2.3]}}, {31, 34}),
    ({"m": {"$lt": 0.1}}, {30, 32}),
    ({"m": {"$gt": Decimal128("0.1"), "$lt": 1}}, {31}),
    ({"m": {"$gt": 2.3, "$lt": 3}}, {33}),
    ({"m": {"$lte": Decimal128("2.3")}}, {30, 31, 32, 33, 34}),
    ({"m": {"$gt": 1e300}}, {35, 36}),
    ({"m": {"$gt": 1e308}}, {35}),
    ({"m": {"$elemMatch": {"$lt": Decimal128("2.3")}}}, {34}),
    ({"m": {"$in": [Decimal128("0.1"), 7]}}, {30, 32}),
    ({"m": {"$gte": Decimal128("2.3")}}, {33, 35, 36}),
    ({"m": {"$type": "decimal"}}, {30, 32, 33, 35}),
]


@pytest.fixture(scope="module", params=[(), ("a", "n", "m")], ids=["plain", "indexed"])
def coll(
    request: pytest.FixtureRequest, db: Database[dict[str, Any]]
) -> Iterator[Collection[dict[str, Any]]]:
    coll = db[f"exact_{uuid.uuid4().hex[:8]}"]
    coll.insert_many(DOCS)
    for path in request.param:
        coll.create_index(path)
    yield coll
    coll.drop()


BY_FILTER = pytest.mark.parametrize(("spec", "expected"), CASES, ids=[repr(c[0]) for c in CASES])


@BY_FILTER
def test_filter_matches_mongodb(
    coll: Collection[dict[str, Any]], spec: dict[str, Any], expected: set[int]
) -> None:
    want = sorted(expected)
    assert [d["_id"] for d in coll.find(spec).sort("_id", 1)] == want
    assert [d["_id"] for d in coll.find(spec, sort=[("_id", 1)], limit=1)] == want[:1]
    assert [d["_id"] for d in coll.find(spec, sort=[("_id", 1)], skip=1, limit=2)] == want[1:3]
    assert [d["_id"] for d in coll.find(spec, sort=[("_id", 1)], batch_size=2)] == want
    assert coll.count_documents(spec) == len(want)
    assert coll.count_documents(spec, skip=1, limit=2) == len(want[1:3])
    piped = coll.aggregate([{"$match": spec}, {"$sort": {"_id": 1}}, {"$limit": 3}])
    assert [d["_id"] for d in piped] == want[:3]
    assert sorted(coll.distinct("_id", spec)) == want
    if want:
        assert coll.find_one(spec, {"_id": 1}) in [{"_id": i} for i in want]
    else:
        assert coll.find_one(spec) is None


@BY_FILTER
def test_writes_take_the_same_documents(
    db: Database[dict[str, Any]], spec: dict[str, Any], expected: set[int]
) -> None:
    copy = db[f"exact_w_{uuid.uuid4().hex[:8]}"]
    copy.insert_many(DOCS)
    try:
        before = copy.find_one_and_update(spec, {"$set": {"hit": 1}}, sort=[("_id", 1)])
        assert (before or {}).get("_id") == (min(expected) if expected else None)
        assert [d["_id"] for d in copy.find({"hit": 1})] == sorted(expected)[:1]
        assert copy.update_one(spec, {"$set": {"hit": 1}}).matched_count == min(len(expected), 1)
        assert copy.update_many(spec, {"$set": {"hit": 1}}).matched_count == len(expected)
        assert {d["_id"] for d in copy.find({"hit": 1})} == expected
        deleted = copy.find_one_and_delete(spec, sort=[("_id", -1)])
        assert (deleted or {}).get("_id") == (max(expected) if expected else None)
        assert copy.delete_many(spec).deleted_count == len(expected) - (1 if expected else 0)
        assert {d["_id"] for d in copy.find({})} == ALL - expected
    finally:
        copy.drop()


@BY_FILTER
def test_python_evaluator_agrees(spec: dict[str, Any], expected: set[int]) -> None:
    assert {doc["_id"] for doc in DOCS if matches(doc, spec)} == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # documents (and arrays of them) with their fields in order, each its own group
        ("$a", [[1, XY], [2, YX], [3, [XY]], [4, [YX]], [5, {"x": 1}], [6, None], [10, [XY, YX]]]),
        ({"k": "$d"}, [[1, {}], [8, {"k": {"o": XY}}], [9, {"k": {"o": YX}}]]),
    ],
    ids=["path", "document of paths"],
)
def test_group_keys_keep_field_order(
    coll: Collection[dict[str, Any]], key: Any, expected: list[list[Any]]
) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lte": 10}}},
        {"$group": {"_id": key, "first": {"$min": "$_id"}}},
    ]
    groups = [[g["first"], g["_id"]] for g in coll.aggregate(stages)]
    # repr shows field order, which dict equality ignores
    assert sorted(map(repr, groups)) == sorted(map(repr, expected))


def test_group_min_and_max_compare_documents_field_by_field(
    coll: Collection[dict[str, Any]],
) -> None:
    # {y: 2, x: 1} is above {x: 1, y: 2}: MongoDB compares the first field names
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$in": [1, 2]}}},
        {"$group": {"_id": None, "lo": {"$min": "$a"}, "hi": {"$max": "$a"}}},
    ]
    (group,) = coll.aggregate(stages)
    assert [list(group["lo"].items()), list(group["hi"].items())] == [
        list(XY.items()),
        list(YX.items()),
    ]


def test_distinct_tells_field_orders_apart(coll: Collection[dict[str, Any]]) -> None:
    values = coll.distinct("a", {"_id": {"$lte": 5}})  # arrays give their elements
    assert sorted(map(repr, values)) == sorted(map(repr, [XY, YX, {"x": 1}]))


def test_decimals_sort_among_doubles_by_value(coll: Collection[dict[str, Any]]) -> None:
    found = coll.find({"m": {"$exists": True}, "_id": {"$ne": 34}}, sort=[("m", 1), ("_id", 1)])
    assert [d["_id"] for d in found] == [30, 32, 31, 33, 36, 35]


def test_a_missing_collection_answers_as_empty(db: Database[dict[str, Any]]) -> None:
    missing = db[f"exact_none_{uuid.uuid4().hex[:8]}"]
    assert missing.find_one({"a": XY}) is None
    assert missing.count_documents({"n": {"$type": "int"}}) == 0
    assert missing.distinct("a", {"a": XY}) == []
    assert missing.update_one({"a": XY}, {"$set": {"v": 1}}).matched_count == 0
    assert missing.delete_many({"a": {"$ne": XY}}).deleted_count == 0


def test_rechecked_writes_in_a_transaction(
    client: MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    coll = db[f"exact_tx_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": 1, "a": XY}, {"_id": 2, "a": YX}, {"_id": 3, "a": XY}])
    with client.start_session() as session, session.start_transaction():
        assert coll.update_many({"a": YX}, {"$set": {"v": 1}}, session=session).matched_count == 1
        assert coll.delete_one({"a": XY}, session=session).deleted_count == 1
        assert coll.count_documents({"a": XY}, session=session) == 1
    assert sorted((d["_id"], d.get("v")) for d in coll.find({})) == [(2, 1), (3, None)]
    with client.start_session() as session:
        session.start_transaction()
        coll.delete_many({"a": {"$ne": XY}}, session=session)
        session.abort_transaction()
    assert coll.count_documents({}) == 2
    coll.drop()


def test_ids_differing_only_in_field_order_are_two_documents(
    db: Database[dict[str, Any]],
) -> None:
    coll = db[f"exact_id_{uuid.uuid4().hex[:8]}"]
    coll.insert_one({"_id": {"a": 1, "b": 2}, "v": "ab"})
    coll.insert_one({"_id": {"b": 2, "a": 1}, "v": "ba"})
    coll.insert_many([{"_id": {"a": {"x": 1, "y": 2}}, "v": "xy"}, {"_id": {"a": YX}, "v": "yx"}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": {"a": 1, "b": 2}})
    assert coll.find_one({"_id": {"b": 2, "a": 1}}) == {"_id": {"b": 2, "a": 1}, "v": "ba"}
    assert coll.find_one({"_id": {"a": YX}}) == {"_id": {"a": YX}, "v": "yx"}
    found = coll.find({"_id": {"$in": [{"a": 1, "b": 2}, {"a": XY}]}})
    assert sorted(d["v"] for d in found) == ["ab", "xy"]
    assert coll.count_documents({"_id.a": 1}) == 2
    coll.update_one({"_id": {"a": 1, "b": 2}}, {"$set": {"w": 1}})
    assert [d["v"] for d in coll.find({"w": 1})] == ["ab"]
    coll.replace_one({"_id": {"b": 2, "a": 1}}, {"v": "BA"})
    assert coll.find_one({"_id": {"b": 2, "a": 1}}) == {"_id": {"b": 2, "a": 1}, "v": "BA"}
    assert coll.delete_one({"_id": {"a": XY}}).deleted_count == 1
    assert sorted(d["v"] for d in coll.find({})) == ["BA", "ab", "yx"]
    coll.drop()


async def test_collections_from_before_get_ordered_ids(
    node: NodeProcess, db: Database[dict[str, Any]]
) -> None:
    # Before FORM_VERSION 4 the _id column held such an _id's unordered query form.
    coll = db[f"exact_old_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": {"a": 1, "b": 2}}, {"_id": {"a": 1}}, {"_id": 3, "m": DEC}])
    conn = await asyncpg.connect(node.engine_url)
    try:
        await register_codecs(conn)
        target = catalog.table(db.name, coll.name)
        # ... and a Decimal128 its nearest double
        await conn.execute(
            f"UPDATE {target} SET _id = doc -> '_id', "
            "doc = CASE WHEN doc ? 'm' THEN jsonb_set(doc, '{m}', '0.1') ELSE doc END"
        )
        await conn.execute(
            "UPDATE helios_documents.collections SET form = NULL WHERE db = $1 AND name = $2",
            db.name,
            coll.name,
        )
        assert coll.find_one({"_id": {"a": 1, "b": 2}}) is None  # not found until upgraded
        assert coll.find_one({"m": 0.1}) == {"_id": 3, "m": DEC}
        async with conn.transaction():
            assert await catalog.upgrade_forms(conn) == 2
        ids = await conn.fetch(f"SELECT _id FROM {target}")
        ordered = bsonform.id_form({"a": 1, "b": 2})
        assert sorted(map(repr, (r["_id"] for r in ids))) == sorted(
            map(repr, [3, {"a": 1}, ordered])
        )
    finally:
        await conn.close()
    assert coll.find_one({"_id": {"a": 1, "b": 2}}) == {"_id": {"a": 1, "b": 2}}
    coll.insert_one({"_id": {"b": 2, "a": 1}})
    assert coll.count_documents({}) == 4
    assert coll.find_one({"m": 0.1}) is None
    assert coll.find_one({"m": DEC}) == {"_id": 3, "m": DEC}
