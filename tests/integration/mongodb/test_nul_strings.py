"""Strings holding NUL (U+0000, which JSONB cannot hold) and its look-alikes: the query
form encodes NUL and U+0001 injectively and in order (bsonform.query_string), so a
NUL string never meets the same string with U+FFFD or U+0001 in a filter, a sort, a
group or a unique index, on the normal path and on the fast ones (lone finds, batched
equality finds, the update lane)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from bson import Decimal128, Int64
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from heliosdb.engine.codecs import register_codecs
from heliosdb.services.documents import bsonform, catalog
from tests.integration.mongodb.conftest import connect, found
from tests.nodeproc import NodeProcess

NUL = "a\x00b"
FFFD = "a\ufffdb"
SOH = "a\x01b"
# Every string here, in MongoDB's (binary, code point) order.
ORDERED = sorted(["a", "a\x00", NUL, "a\x00\x01", "a\x01", SOH, "a\x01\x00", "ab", "a\ufffd", FFFD])


@pytest.fixture
def coll(db: Database[dict[str, Any]], coll_name: str) -> Collection[dict[str, Any]]:
    c = db[coll_name]
    c.insert_many([{"_id": i, "k": k} for i, k in enumerate(ORDERED)])
    return c


def _ids(cursor: Any) -> list[Any]:
    return [d["_id"] for d in cursor]


def _of(*strings: str) -> list[int]:
    return sorted(ORDERED.index(s) for s in strings)


@pytest.mark.parametrize("indexed", [False, True])
def test_equality_tells_nul_from_look_alikes(
    coll: Collection[dict[str, Any]], indexed: bool
) -> None:
    if indexed:
        coll.create_index("k")
    for value in ORDERED:
        want = _of(value)
        assert _ids(coll.find({"k": value})) == want, repr(value)
        assert _ids(coll.find({"k": {"$eq": value}})) == want, repr(value)
        # find_one: a limit, so the lone find and batched equality paths
        assert found(coll.find_one({"k": value}))["_id"] == want[0], repr(value)
        assert coll.count_documents({"k": value}) == 1
    assert coll.find_one({"k": "a\x00\x00b"}) is None
    assert coll.find_one({"k": "a\x01\x01b"}) is None
    assert coll.find_one({"k": "a\x01\x02b"}) is None


def test_in_nin_ne_all(coll: Collection[dict[str, Any]]) -> None:
    assert _ids(coll.find({"k": {"$in": [NUL, SOH]}}).sort("_id")) == _of(NUL, SOH)
    everyone_else = [s for s in ORDERED if s not in (NUL, FFFD)]
    assert _ids(coll.find({"k": {"$nin": [NUL, FFFD]}}).sort("_id")) == _of(*everyone_else)
    assert _ids(coll.find({"k": {"$ne": NUL}}).sort("_id")) == _of(
        *[s for s in ORDERED if s != NUL]
    )
    coll.insert_one({"_id": 100, "k": [NUL, "z"]})
    coll.insert_one({"_id": 101, "k": [FFFD, "z"]})
    assert _ids(coll.find({"k": {"$all": [NUL, "z"]}})) == [100]
    assert _ids(coll.find({"k": {"$elemMatch": {"$eq": FFFD}}})) == [101]
    assert _ids(coll.find({"k": {"$elemMatch": {"$gte": "a\x00", "$lt": "a\x01"}}})) == [100]


def test_ranges_follow_code_points(coll: Collection[dict[str, Any]]) -> None:
    for bound in ORDERED:
        assert _ids(coll.find({"k": {"$lt": bound}}).sort("_id")) == _of(
            *[s for s in ORDERED if s < bound]
        ), repr(bound)
        assert _ids(coll.find({"k": {"$gte": bound}}).sort("_id")) == _of(
            *[s for s in ORDERED if s >= bound]
        ), repr(bound)


def test_sort_distinct_group(coll: Collection[dict[str, Any]]) -> None:
    assert [d["k"] for d in coll.find({}, sort=[("k", 1)])] == ORDERED
    assert [d["k"] for d in coll.find({}, sort=[("k", -1)])] == ORDERED[::-1]
    assert sorted(coll.distinct("k")) == ORDERED
    coll.insert_many([{"_id": 50, "k": NUL}, {"_id": 51, "k": FFFD}])
    groups = coll.aggregate([{"$group": {"_id": "$k", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}])
    assert [(g["_id"], g["n"]) for g in groups] == [
        (s, 2 if s in (NUL, FFFD) else 1) for s in ORDERED
    ]
    low = list(
        coll.aggregate([{"$group": {"_id": None, "lo": {"$min": "$k"}, "hi": {"$max": "$k"}}}])
    )
    assert (low[0]["lo"], low[0]["hi"]) == (ORDERED[0], ORDERED[-1])


def test_regex_on_strings_with_nul(coll: Collection[dict[str, Any]]) -> None:
    assert _ids(coll.find({"k": {"$regex": "^a\ufffd"}}).sort("_id")) == _of("a\ufffd", FFFD)
    assert _ids(coll.find({"k": {"$regex": "^a\x01b"}})) == _of(SOH)
    assert _ids(coll.find({"k": {"$regex": "b$"}}).sort("_id")) == _of(NUL, SOH, "ab", FFFD)


def test_ids_with_nul_are_their_own_keys(db: Database[dict[str, Any]], coll_name: str) -> None:
    coll = db[coll_name]
    coll.insert_many([{"_id": s, "n": i} for i, s in enumerate([NUL, FFFD, SOH, "a\x01\x01b"])])
    for i, s in enumerate([NUL, FFFD, SOH, "a\x01\x01b"]):
        assert coll.find_one({"_id": s}) == {"_id": s, "n": i}
        assert _ids(coll.find({"_id": {"$in": [s, "zz"]}})) == [s]
    with pytest.raises(DuplicateKeyError) as caught:
        coll.insert_one({"_id": NUL})
    assert found(caught.value.details)["keyValue"] == {"_id": NUL}
    assert [d["_id"] for d in coll.find({}, sort=[("_id", 1)])] == sorted(
        [NUL, FFFD, SOH, "a\x01\x01b"]
    )


def test_unique_index_keeps_look_alikes_apart(db: Database[dict[str, Any]], coll_name: str) -> None:
    coll = db[coll_name]
    coll.create_index("k", unique=True)
    coll.insert_many([{"_id": i, "k": s} for i, s in enumerate([NUL, FFFD, SOH, "a\x01\x01b"])])
    with pytest.raises(DuplicateKeyError) as caught:
        coll.insert_one({"_id": 9, "k": NUL})
    assert found(caught.value.details)["keyValue"] == {"k": NUL}
    # and a unique index built over documents already there
    other = db[coll_name + "_later"]
    other.insert_many([{"k": NUL}, {"k": FFFD}])
    other.create_index("k", unique=True)


def test_updates_compare_exactly(coll: Collection[dict[str, Any]]) -> None:
    result = coll.update_one({"k": NUL}, {"$set": {"hit": 1}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert _ids(coll.find({"hit": 1})) == _of(NUL)
    coll.update_one({"k": FFFD}, {"$inc": {"n": 1}})
    assert _ids(coll.find({"n": 1})) == _of(FFFD)
    coll.insert_one({"_id": 200, "l": [FFFD], "m": NUL})
    coll.update_one({"_id": 200}, {"$addToSet": {"l": NUL}})
    coll.update_one({"_id": 200}, {"$max": {"m": "a\x01"}})
    assert coll.find_one({"_id": 200}) == {"_id": 200, "l": [FFFD, NUL], "m": "a\x01"}
    coll.update_one({"_id": 200}, {"$pull": {"l": FFFD}, "$set": {"s": SOH}})
    assert coll.find_one({"_id": 200}) == {"_id": 200, "l": [NUL], "m": "a\x01", "s": SOH}
    assert _ids(coll.find({"l": NUL, "s": SOH})) == [200]
    assert coll.find_one({"l": FFFD}) is None


def _old_form(value: Any) -> Any:
    """The query form before FORM_VERSION 3 (see catalog.FORM_VERSION)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {k: _old_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_old_form(v) for v in value]
    if isinstance(value, Decimal128) and not value.to_decimal().is_finite():
        return {"$numberDecimal": str(value.to_decimal())}
    if isinstance(value, float):
        return value  # past 2**53 too (JSON text such as 1.152921504606847e+18)
    return bsonform.query_form(value)


async def _age(conn: asyncpg.Connection, db: str, coll: str, docs: list[dict[str, Any]]) -> None:
    """Make a collection look as a node before FORM_VERSION 3 left it."""
    target = catalog.table(db, coll)
    for doc in docs:
        await conn.execute(
            f"UPDATE {target} SET _id = $2::jsonb, doc = $3::jsonb WHERE _id = $1::jsonb",
            bsonform.id_form(doc["_id"]),
            _old_form(doc["_id"]),
            _old_form(doc),
        )
    await conn.execute(
        "UPDATE helios_documents.collections SET form = NULL WHERE db = $1 AND name = $2",
        db,
        coll,
    )


async def _form(conn: asyncpg.Connection, db: str, coll: str) -> Any:
    return await conn.fetchval(
        "SELECT form FROM helios_documents.collections WHERE db = $1 AND name = $2", db, coll
    )


async def test_collections_from_before_are_upgraded(
    node: NodeProcess, db: Database[dict[str, Any]], coll_name: str
) -> None:
    coll = db[coll_name]
    coll.create_index("k")
    docs: list[dict[str, Any]] = [
        {"_id": NUL, "k": NUL, "l": [SOH, 1]},
        {"_id": 2, "k": SOH, "sub": {"s": "a\x01\x00"}},
        {"_id": 3, "k": "plain"},
        {"_id": 4, "k": 2.0**60 + 256, "d": Decimal128("-Infinity")},
        {"_id": 5, "k": 7.5, "d": Decimal128("1.5")},
        {"_id": 6, "k": Int64(2**62)},  # looked at (past 2**53), its form right already
    ]
    coll.insert_many(docs)
    conn = await asyncpg.connect(node.engine_url)
    try:
        await register_codecs(conn)
        await _age(conn, db.name, coll_name, docs)
        assert coll.find_one({"k": NUL}) is None  # the old form: not found until upgraded
        async with conn.transaction():
            assert await catalog.upgrade_forms(conn) == 3
        async with conn.transaction():
            assert await catalog.upgrade_forms(conn) == 0  # once
        assert await _form(conn, db.name, coll_name) == catalog.FORM_VERSION
    finally:
        await conn.close()
    assert coll.find_one({"k": NUL}) == docs[0]
    assert coll.find_one({"_id": NUL}) == docs[0]
    assert coll.find_one({"k": FFFD}) is None
    assert coll.find_one({"sub.s": "a\x01\x00"}) == docs[1]
    assert coll.find_one({"k": Int64(2**60 + 256)}) == docs[3]
    assert coll.find_one({"d": float("-inf")}) == docs[3]
    assert [d["_id"] for d in coll.find({}, sort=[("k", 1)])] == [5, 4, 6, NUL, 2, 3]
    coll.update_one({"_id": NUL}, {"$set": {"k": FFFD}})
    assert coll.find_one({"k": FFFD}) == {**docs[0], "k": FFFD}


async def test_a_node_upgrades_even_when_its_first_transaction_aborts(
    node: NodeProcess,
    second_node: NodeProcess,
    rw_key: str,
    db: Database[dict[str, Any]],
    coll_name: str,
) -> None:
    # A node's first statement by a read-write key ensures the catalog and upgrades old
    # forms in a transaction of its own, even when that statement opens a client
    # transaction the client then aborts.
    docs: list[dict[str, Any]] = [{"_id": NUL, "k": NUL}, {"_id": 2, "k": 2.0**60 + 256}]
    db[coll_name].insert_many(docs)
    conn = await asyncpg.connect(node.engine_url)
    try:
        await register_codecs(conn)
        await _age(conn, db.name, coll_name, docs)
        second_node.stop()
        second_node.start()  # a fresh process: its catalog not yet ensured
        other = connect(second_node.ports["mongodb"], rw_key)
        try:
            with other.start_session() as session:
                session.start_transaction()
                other[db.name]["scratch"].insert_one({"_id": 1}, session=session)
                session.abort_transaction()
            assert await _form(conn, db.name, coll_name) == catalog.FORM_VERSION
            assert other[db.name][coll_name].find_one({"k": NUL}) == docs[0]
            assert other[db.name][coll_name].find_one({"k": Int64(2**60 + 256)}) == docs[1]
            assert other[db.name]["scratch"].find_one({}) is None
        finally:
            other.close()
    finally:
        await conn.close()


def test_field_names_with_look_alikes(db: Database[dict[str, Any]], coll_name: str) -> None:
    # BSON names cannot hold NUL; U+FFFD and U+0001 in names are names like any other
    # (the query form escapes values only).
    coll = db[coll_name]
    coll.insert_many(
        [
            {"_id": 1, "a\ufffdb": 1, "a\x01": "x", "sub": {"\x01": NUL}},
            {"_id": 2, "ab": 1, "a\x01\x01": "x", "sub": {"\x01\x01": NUL}},
        ]
    )
    coll.create_index("a\x01")
    assert _ids(coll.find({"a\ufffdb": 1})) == [1]
    assert _ids(coll.find({"a\x01": "x"})) == [1]
    assert _ids(coll.find({"a\x01\x01": {"$exists": True}})) == [2]
    assert _ids(coll.find({"sub.\x01": NUL})) == [1]
    assert _ids(coll.find({"sub.\x01\x01": {"$gte": NUL}})) == [2]
    assert [d["_id"] for d in coll.find({}, sort=[("a\x01", -1), ("_id", 1)])] == [1, 2]
    coll.update_one({"_id": 2}, {"$set": {"a\x01": "y"}})
    assert _ids(coll.find({"a\x01": "y"})) == [2]
