"""Embedded documents in unique indexes and sorts, in MongoDB's order of fields.

MongoDB compares two embedded documents field by field in the order they were written:
``{a: 1, b: 2}`` and ``{b: 2, a: 1}`` are two values. The JSONB query form keeps no
field order, so a unique index also indexes the field order of the documents in its
value (catalog.order_expression): both documents go in, an exact duplicate (numbers
compared by value, as MongoDB compares them) answers 11000 with ``keyPattern`` and
``keyValue``; compound indexes and arrays holding documents alike. Finds on the
indexed field still use the index.

Sorts order embedded documents as MongoDB does (ASCENDING below): in the engine
(find, a leading ``$sort``, findAndModify), in the node (a later ``$sort``), and for
``$min``/``$max`` of a ``$group``.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from bson.int64 import Int64
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from heliosdb.engine.codecs import register_codecs
from heliosdb.engine.quoting import qualified
from heliosdb.services.documents import catalog
from tests.integration.mongodb.conftest import connect, found
from tests.nodeproc import NodeProcess

AB = {"a": 1, "b": 2}
BA = {"b": 2, "a": 1}


def fresh(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    return db[f"order_{uuid.uuid4().hex[:8]}"]


def refused(coll: Collection[dict[str, Any]], document: dict[str, Any]) -> dict[str, Any]:
    """The details of the duplicate key error inserting ``document`` answers."""
    with pytest.raises(DuplicateKeyError) as failure:
        coll.insert_one(document)
    details = dict(found(failure.value.details))
    assert details["code"] == 11000
    return details


def test_unique_index_tells_field_orders_apart(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.create_index("k", unique=True)
    coll.insert_many(
        [
            {"_id": 1, "k": AB},
            {"_id": 2, "k": BA},
            {"_id": 3, "k": {"x": AB}},
            {"_id": 4, "k": {"x": BA}},
            {"_id": 5, "k": {"a": 1}},
        ]
    )
    details = refused(coll, {"_id": 6, "k": {"a": 1, "b": 2}})
    assert details["keyPattern"] == {"k": 1}
    assert details["keyValue"] == {"k": AB}
    # numbers compare by value across types, as MongoDB's index keys do
    refused(coll, {"_id": 7, "k": {"b": Int64(2), "a": 1.0}})
    refused(coll, {"_id": 8, "k": {"x": {"a": 1.0, "b": 2}}})
    assert coll.count_documents({}) == 5
    # an update into the other order is no duplicate; into an existing value it is
    coll.update_one({"_id": 5}, {"$set": {"k": {"x": 1, "a": 1}}})
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 5}, {"$set": {"k": BA}})
    assert found(coll.find_one({"_id": 5}))["k"] == {"x": 1, "a": 1}
    coll.drop()


def test_unique_index_scalars_as_before(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.create_index("k", unique=True)
    coll.insert_many([{"_id": 1, "k": 5}, {"_id": 2, "k": "5"}, {"_id": 3}])
    refused(coll, {"_id": 4, "k": 5.0})
    details = refused(coll, {"_id": 5, "k": None})  # a missing field counts as null
    assert details["keyValue"] == {"k": None}
    assert [d["_id"] for d in coll.find({"k": 5})] == [1]
    plan = str(coll.find({"k": 5}).explain()["queryPlanner"]["winningPlan"]["enginePlan"])
    assert "Index" in plan
    coll.drop()


def test_compound_unique_index_with_documents(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.create_index([("n", 1), ("k", -1)], unique=True)
    coll.insert_many(
        [
            {"_id": 1, "n": 1, "k": AB},
            {"_id": 2, "n": 1, "k": BA},
            {"_id": 3, "n": 2, "k": AB},
        ]
    )
    details = refused(coll, {"_id": 4, "k": AB, "n": 1})
    assert details["keyPattern"] == {"n": 1, "k": -1}
    assert details["keyValue"] == {"n": 1, "k": AB}
    plan = str(coll.find({"n": 2}).explain()["queryPlanner"]["winningPlan"]["enginePlan"])
    assert "Index" in plan
    assert [d["_id"] for d in coll.find({"n": 2})] == [3]
    coll.drop()


def test_unique_index_over_arrays_of_documents(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.create_index("k", unique=True)
    coll.insert_many(
        [
            {"_id": 1, "k": [AB]},
            {"_id": 2, "k": [BA]},
            {"_id": 3, "k": [{"p": [AB]}]},
            {"_id": 4, "k": [{"p": [BA]}]},
        ]
    )
    refused(coll, {"_id": 5, "k": [{"a": 1, "b": 2}]})
    refused(coll, {"_id": 6, "k": [{"p": [{"b": 2, "a": 1}]}]})
    assert coll.count_documents({}) == 4
    coll.drop()


def test_unique_index_built_over_both_orders(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    # (an array's elements are its keys: [[BA]] keys the array [BA], not BA)
    coll.insert_many([{"_id": 1, "k": AB}, {"_id": 2, "k": BA}, {"_id": 3, "k": [[BA]]}])
    coll.create_index("k", unique=True)
    refused(coll, {"_id": 4, "k": BA})
    refused(coll, {"_id": 7, "k": [BA]})
    coll.insert_one({"_id": 5, "k": [[AB]]})
    coll.insert_one({"_id": 6, "k": {"a": 1, "b": 2, "c": 3}})
    assert coll.count_documents({}) == 5
    coll.drop()
    # exact duplicates (numbers equal by value) refuse the index
    other = fresh(db)
    other.insert_many([{"_id": 1, "j": AB}, {"_id": 2, "j": {"a": 1, "b": Int64(2)}}])
    with pytest.raises(OperationFailure) as failure:
        other.create_index("j", unique=True)
    assert failure.value.code == 11000
    other.drop()


async def test_unique_indexes_from_before_are_made_again(
    node: NodeProcess, db: Database[dict[str, Any]]
) -> None:
    # Before FORM_VERSION 5 a unique index held the query form alone.
    coll = fresh(db)
    coll.insert_one({"_id": 1, "k": AB})
    coll.create_index("k", unique=True)
    engine_name = catalog.engine_index_name(db.name, coll.name, "k_1")
    conn = await asyncpg.connect(node.engine_url)
    try:
        await register_codecs(conn)
        target = catalog.table(db.name, coll.name)
        await conn.execute(f"DROP INDEX {qualified(db.name, engine_name)}")
        await conn.execute(
            f'CREATE UNIQUE INDEX "{engine_name}" ON {target} '
            f"({catalog.index_expression('k', True)})"
        )
        await conn.execute(
            "UPDATE helios_documents.collections SET form = 4 WHERE db = $1 AND name = $2",
            db.name,
            coll.name,
        )
        refused(coll, {"_id": 2, "k": BA})  # the old index: refused until upgraded
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE helios_readwrite")  # as the node runs it
            assert await catalog.upgrade_forms(conn) == 0
        form = await conn.fetchval(
            "SELECT form FROM helios_documents.collections WHERE db = $1 AND name = $2",
            db.name,
            coll.name,
        )
        assert form == catalog.FORM_VERSION
    finally:
        await conn.close()
    coll.insert_one({"_id": 2, "k": BA})
    refused(coll, {"_id": 3, "k": AB})
    assert coll.count_documents({}) == 2


# MongoDB's sort order (docs: "Comparison/Sort Order"): types first (null, numbers,
# strings, objects, arrays, ...), and two embedded documents compared field by field
# in their stored order: for each pair of fields the canonical type of the values, then
# the field name, then the value; a document that is a prefix of the other sorts first.
# Arrays inside a document compare element by element the same way (a prefix first).
ASCENDING: list[Any] = [
    None,  # a missing field sorts as null
    5,
    "str",
    {},
    {"a": None},  # null below every number
    {"a": float("nan")},  # NaN below the other numbers
    {"a": 1},
    {"a": 1, "b": 1},  # {a: 1} is its prefix
    {"a": 2},  # first fields: same type and name, 1 < 2
    {"b": 0},  # first fields: both numbers, "a" < "b"
    {"b": 1, "a": 1},
    {"a": "x"},  # first field a string: above every number
    {"a": {"x": 1}},  # an object above a string
    {"a": {"x": 1, "y": 2}},
    {"a": {"y": 1}},
    {"a": [1, 5]},  # an array above an object; then element by element
    {"a": [2]},
]


def sorted_ids(coll: Collection[dict[str, Any]], pipeline: list[dict[str, Any]]) -> list[int]:
    return [d["_id"] for d in coll.aggregate(pipeline)]


def test_sorts_compare_documents_field_by_field(
    db: Database[dict[str, Any]], ro_client: MongoClient[dict[str, Any]]
) -> None:
    coll = fresh(db)
    order = list(range(len(ASCENDING)))
    rows = [{"_id": i} if v is None else {"_id": i, "s": v} for i, v in enumerate(ASCENDING)]
    coll.insert_many([rows[i] for i in (5, 12, 0, 9, 3, 16, 7, 1, 14, 10, 2, 8, 15, 4, 6, 11, 13)])
    assert [d["_id"] for d in coll.find().sort("s", 1)] == order
    assert [d["_id"] for d in coll.find().sort("s", -1)] == order[::-1]
    reader = ro_client[db.name][coll.name]  # a read-only key sorts the same
    assert [d["_id"] for d in reader.find().sort("s", 1)] == order
    assert [d["_id"] for d in coll.find().sort([("s", 1)]).skip(4).limit(5)] == order[4:9]
    assert sorted_ids(coll, [{"$sort": {"s": 1}}]) == order
    assert sorted_ids(coll, [{"$match": {"s": {"$type": "object"}}}, {"$sort": {"s": -1}}]) == [
        i for i in order[::-1] if isinstance(ASCENDING[i], dict)
    ]
    # a $sort after a stage the engine does not run sorts in the node, in the same order
    assert sorted_ids(coll, [{"$project": {"s": 1}}, {"$sort": {"s": 1}}]) == order
    # a path into the documents, and findAndModify's sort
    inner = coll.find({"_id": {"$in": [4, 5, 6, 7, 8, 10, 11, 12, 13, 14]}})
    assert [d["_id"] for d in inner.sort([("s.a", 1), ("_id", 1)])] == [
        4, 5, 6, 7, 10, 8, 11, 12, 13, 14
    ]  # fmt: skip
    first = coll.find_one_and_update(
        {"s": {"$type": "object"}}, {"$set": {"t": 1}}, sort=[("s", -1)]
    )
    assert found(first)["_id"] == 16
    last = coll.find_one_and_delete({"s": {"$type": "object"}}, sort=[("s", 1)])
    assert found(last)["_id"] == 3


def test_group_min_max_of_documents(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db)
    coll.insert_many(
        [
            {"_id": 1, "g": 1, "v": {"b": 0}},
            {"_id": 2, "g": 1, "v": {"a": "x"}},
            {"_id": 3, "g": 2, "v": {"a": 1, "b": 1}},
            {"_id": 4, "g": 2, "v": {"a": 2}},
            {"_id": 5, "g": 3, "v": {"a": 2, "z": 0}},
            {"_id": 6, "g": 3, "v": {"b": 1}},
            {"_id": 7, "g": 3, "v": 7},
        ]
    )
    # by MongoDB's order (above): {b: 0} < {a: "x"} (a number below a string),
    # {a: 1, b: 1} < {a: 2}, 7 < {a: 2, z: 0} < {b: 1} (same types: "a" < "b")
    groups = coll.aggregate(
        [
            {"$group": {"_id": "$g", "lo": {"$min": "$v"}, "hi": {"$max": "$v"}}},
            {"$sort": {"_id": 1}},
        ]
    )
    assert list(groups) == [
        {"_id": 1, "lo": {"b": 0}, "hi": {"a": "x"}},
        {"_id": 2, "lo": {"a": 1, "b": 1}, "hi": {"a": 2}},
        {"_id": 3, "lo": 7, "hi": {"b": 1}},
    ]
    exact = coll.aggregate([{"$match": {"g": 3, "v": {"$type": "object"}}}, {"$sort": {"v": 1}}])
    assert [d["_id"] for d in exact] == [5, 6]


async def test_read_only_key_sorts_before_any_write(
    node: NodeProcess,
    db: Database[dict[str, Any]],
    ro_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The sort's engine function comes with the catalog, which a node makes ready
    # before its first statement, a read-only key's too (an upgraded node's first).
    coll = fresh(db)
    coll.insert_many([{"_id": 1, "s": {"b": 0}}, {"_id": 2, "s": {"a": "x"}}])
    conn = await asyncpg.connect(node.engine_url)
    try:
        await conn.execute("DROP FUNCTION helios_documents.sort_key(jsonb, bytea, text[])")
    finally:
        await conn.close()
    second = node.beside(tmp_path_factory.mktemp("document_order") / "data")
    try:
        reader = connect(second.ports["mongodb"], ro_key)
        try:
            assert [d["_id"] for d in reader[db.name][coll.name].find().sort("s", 1)] == [1, 2]
        finally:
            reader.close()
    finally:
        second.stop()
