"""A collection's catalog row records whether it may hold an Int64 or a Decimal128
(``wide``), so an engine-run $group over a collection that never held one reads no
BSON for their types. Every way a document gets into the collection sets the record
in the write's own transaction: the node's inserts, updates (in place or not),
replacements, upserts, findAndModify, bulk writes, $merge and $out, another node on
the same engine, and SQL. A collection dropped and made again starts clear."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest
from bson import Decimal128, Int64
from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from tests.integration.mongodb.conftest import connect
from tests.nodeproc import NodeProcess

Coll = Collection[dict[str, Any]]
Db = Database[dict[str, Any]]

SUM = [{"$group": {"_id": "$k", "sum": {"$sum": "$v"}, "max": {"$max": "$v"}}}]


def fresh(db: Db) -> Coll:
    coll = db[f"w_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": 1, "k": "a", "v": 1}, {"_id": 2, "k": "a", "v": 2}])
    return coll


def grouped(coll: Coll, path: str = "$v") -> dict[str, Any]:
    (found,) = coll.aggregate([{"$group": {"_id": "$k", "sum": {"$sum": path}}}])
    return found


async def wide(api: httpx.AsyncClient, coll: Coll) -> bool:
    sql = "SELECT wide FROM helios_documents.collections WHERE db = $1 AND name = $2"
    response = await api.post(
        "/query", json={"sql": sql, "params": [coll.database.name, coll.name]}
    )
    assert response.status_code == 200, response.text
    ((flag,),) = response.json()["rows"]
    return bool(flag)


async def test_ints_and_doubles_leave_a_collection_narrow(db: Db, api: httpx.AsyncClient) -> None:
    coll = fresh(db)
    coll.insert_one({"k": "b", "v": 0.5})
    coll.update_one({"_id": 1}, {"$inc": {"v": 10}})  # in place
    coll.update_many({"k": "a"}, {"$set": {"w": [1, 2.5]}})  # the general path
    coll.replace_one({"_id": 2}, {"k": "a", "v": 2}, upsert=True)
    assert not await wide(api, coll)
    sums = {g["_id"]: g["sum"] for g in coll.aggregate(SUM)}
    assert (type(sums["a"]), sums["a"]) == (int, 13)
    assert (type(sums["b"]), sums["b"]) == (float, 0.5)


# Each write puts a long into a narrow collection (the one fresh() makes), at "v"
# unless PATHS says where.
PATHS = {"insert, a long _id": "$_id", "update, a nested long": "$x.y"}
LONG_WRITES: dict[str, Callable[[Coll], Any]] = {
    "insert_one": lambda c: c.insert_one({"k": "a", "v": Int64(3)}),
    "insert_many, a big int": lambda c: c.insert_many([{"k": "a", "v": 2**40}]),
    "insert, a long _id": lambda c: c.insert_one({"_id": Int64(7), "k": "a", "v": 3}),
    "update in place, $set": lambda c: c.update_one({"_id": 1}, {"$set": {"v": Int64(1)}}),
    "update in place, $inc": lambda c: c.update_one({"_id": 1}, {"$inc": {"v": Int64(1)}}),
    "update in place, $inc past int32": lambda c: c.update_one(
        {"_id": 1}, {"$inc": {"v": 2**31 - 1}}
    ),
    "update, general path": lambda c: c.update_many({}, {"$mul": {"v": Int64(1)}}),
    "update, a nested long": lambda c: c.update_one({"_id": 1}, {"$set": {"x.y": Int64(1)}}),
    "replace": lambda c: c.replace_one({"_id": 1}, {"k": "a", "v": Int64(1)}),
    "upsert": lambda c: c.update_one(
        {"_id": 9}, {"$set": {"k": "a"}, "$setOnInsert": {"v": Int64(4)}}, upsert=True
    ),
    "findAndModify": lambda c: c.find_one_and_update({"_id": 2}, {"$inc": {"v": Int64(5)}}),
    "bulk write": lambda c: c.bulk_write(
        [InsertOne({"k": "a", "v": 0}), UpdateOne({"_id": 2}, {"$set": {"v": Int64(2)}})]
    ),
}


@pytest.mark.parametrize("write", list(LONG_WRITES), ids=list(LONG_WRITES))
async def test_a_long_written_makes_the_next_sum_a_long(
    db: Db, api: httpx.AsyncClient, write: str
) -> None:
    coll = fresh(db)
    path = PATHS.get(write, "$v")
    assert type(grouped(coll, path)["sum"]) is int
    LONG_WRITES[write](coll)
    assert await wide(api, coll)
    assert type(grouped(coll, path)["sum"]) is Int64


async def test_a_decimal_written_still_sums_exactly(db: Db, api: httpx.AsyncClient) -> None:
    coll = fresh(db)
    coll.update_one({"_id": 1}, {"$set": {"v": Decimal128("0.10")}})
    assert await wide(api, coll)
    found = grouped(coll)
    assert (type(found["sum"]), found["sum"].to_decimal()) == (Decimal128, Decimal("2.10"))


@pytest.mark.parametrize("stage", ["$merge", "$out"])
async def test_merge_and_out_carry_longs_into_a_collection(
    db: Db, api: httpx.AsyncClient, stage: str
) -> None:
    coll = fresh(db)
    source = db[f"src_{uuid.uuid4().hex[:8]}"]
    source.insert_many([{"_id": 5, "k": "a", "v": Int64(6)}])
    spec: Any = {"into": coll.name} if stage == "$merge" else coll.name
    list(source.aggregate([{stage: spec}]))
    assert await wide(api, coll)
    assert type(grouped(coll)["sum"]) is Int64


async def test_a_sql_write_makes_a_collection_wide(db: Db, api: httpx.AsyncClient) -> None:
    # A row SQL copies from a collection that holds a long: the engine's trigger
    # records it, as it does for any write through SQL.
    coll, source = fresh(db), fresh(db)
    source.update_one({"_id": 1}, {"$set": {"v": Int64(8)}})
    sql = (
        f'INSERT INTO "{db.name}"."{coll.name}" (_id, bson, doc) '
        f'SELECT to_jsonb(3), bson, doc FROM "{db.name}"."{source.name}" WHERE _id = \'1\''
    )
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    assert await wide(api, coll)
    assert type(grouped(coll)["sum"]) is Int64


@pytest.fixture(scope="module")
def beside(
    node: NodeProcess, rw_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A client of another node on the same engine."""
    data: Path = tmp_path_factory.mktemp("group_wide") / "data"
    other = node.beside(data)
    try:
        client = connect(other.ports["mongodb"], rw_key)
        yield client
        client.close()
    finally:
        other.stop()


def test_a_long_from_another_node(db: Db, beside: pymongo.MongoClient[dict[str, Any]]) -> None:
    coll = fresh(db)
    assert type(grouped(coll)["sum"]) is int
    beside[db.name][coll.name].insert_one({"k": "a", "v": Int64(1)})
    assert type(grouped(coll)["sum"]) is Int64


def test_a_read_only_key_reads_the_record(db: Db, node: NodeProcess, ro_key: str) -> None:
    coll = fresh(db)
    reader = connect(node.ports["mongodb"], ro_key)
    try:
        (found,) = reader[db.name][coll.name].aggregate(SUM)
        assert (type(found["sum"]), found["sum"]) == (int, 3)
        coll.insert_one({"k": "a", "v": Int64(1)})
        (found,) = reader[db.name][coll.name].aggregate(SUM)
        assert (type(found["sum"]), found["sum"]) == (Int64, 4)
    finally:
        reader.close()


async def test_a_collection_made_again_starts_narrow(db: Db, api: httpx.AsyncClient) -> None:
    coll = fresh(db)
    coll.insert_one({"k": "a", "v": Int64(1)})
    assert await wide(api, coll)
    coll.drop()
    coll.insert_many([{"k": "a", "v": 1}, {"k": "a", "v": 2}])
    assert not await wide(api, coll)
    found = grouped(coll)
    assert (type(found["sum"]), found["sum"]) == (int, 3)
