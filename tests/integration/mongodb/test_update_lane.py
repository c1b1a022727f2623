"""The lone update (interfaces/mongodb/loneupdate.py, services/documents/updatelane.py)
answers byte for byte as the normal path and leaves the same document.

Each update is sent twice on a raw connection to two equal documents: once in the plain
form the lane takes, once with a ``comment`` (which it leaves to the command table).
The replies are compared as bytes, and so are the stored documents, through find and
through SQL. serverStatus ``heliosdb.pipelinedUpdates`` counts the updates the lane
answered itself, so each case also says whether it went there or was handed back."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import bson
import httpx
import pymongo
import pytest
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern

from heliosdb.interfaces.mongodb import loneupdate
from heliosdb.services.documents import updatelane
from tests.integration.mongodb.conftest import found, mongo_uri
from tests.integration.mongodb.test_hotpath import RawClient
from tests.nodeproc import NodeProcess

BASE: dict[str, Any] = {
    "a": 1,
    "big": Int64(7),
    "near": 2**31 - 2,
    "d": 1.5,
    "s": "text",
    "arr": [1, {"x": 2}],
    "sub": {"y": "z"},
    "ключ": 1,
}

# (update, whether the lane answers it itself)
CASES: list[tuple[dict[str, Any], bool]] = [
    ({"$inc": {"a": 1}}, True),
    ({"$set": {"s": "other", "new": {"k": [1, 2]}}}, True),
    ({"$set": {"a": 1}}, True),  # no change: nModified 0
    ({"$inc": {"big": -10}, "$set": {"x": None}}, True),
    # an int32 overflow makes a long the statement did not declare: the general path
    ({"$inc": {"near": 5}}, False),
    ({"$inc": {"ключ": 2, "missing": Int64(3)}}, True),  # appended
    ({"$inc": {"d": 1}}, False),  # a double: the engine function leaves it
    ({"$inc": {"s": 1}}, False),  # TypeMismatch (14), from the general path
    ({"$set": {"sub.y": 1}}, False),  # a path: the general path
    ({"$unset": {"s": ""}}, False),
]


@pytest.fixture
async def raw(mongo_port: int, rw_key: str) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(mongo_port, rw_key)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def reader(mongo_port: int, rw_key: str) -> Iterator[pymongo.MongoClient[RawBSONDocument]]:
    """A client that reads documents as their stored bytes."""
    with pymongo.MongoClient(
        mongo_uri(mongo_port, rw_key), document_class=RawBSONDocument
    ) as client:
        yield client


async def answered(raw: RawClient) -> int:
    status = bson.decode(await raw.command({"serverStatus": 1}, "admin"))
    return int(status["heliosdb"]["pipelinedUpdates"])


def update_body(coll: str, q: dict[str, Any], u: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"update": coll, "updates": [{"q": q, "u": u, **more}], "ordered": True}


async def warm(raw: RawClient, db: str, coll: str) -> None:
    """Update a document by ``_id`` until the lane answers: the pool path answers first
    and teaches it, the pipelined connection opens and prepares in the background."""
    await raw.command({"insert": coll, "documents": [{"_id": "warm", "w": 0}]}, db)
    for _ in range(300):
        before = await answered(raw)
        await raw.command(update_body(coll, {"_id": "warm"}, {"$inc": {"w": 1}}), db)
        if await answered(raw) == before + 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the lane never answered")


def stored(reader: pymongo.MongoClient[RawBSONDocument], db: str, coll: str, _id: str) -> bytes:
    """The stored BSON after its ``_id`` element."""
    document = found(reader[db][coll].find_one({"_id": _id}))
    return bytes(document.raw)[4 + len(bson.encode({"_id": _id})) - 5 :]


async def sql_doc(api: httpx.AsyncClient, db: str, coll: str, _id: str) -> Any:
    sql = f'SELECT doc - \'_id\' FROM "{db}"."{coll}" WHERE _id = to_jsonb($1::text)'
    rows = (await api.post("/query", json={"sql": sql, "params": [_id]})).json()["rows"]
    return rows[0][0] if rows else None


async def test_lone_updates_answer_as_the_normal_path(
    raw: RawClient, reader: pymongo.MongoClient[RawBSONDocument], api: httpx.AsyncClient
) -> None:
    db, coll = f"ul_{uuid.uuid4().hex[:8]}", "items"
    await warm(raw, db, coll)
    for number, (update, lane) in enumerate(CASES):
        # a fresh pair per attempt: the lane may pass (its index map is refreshed by the
        # pool path every few seconds), and an attempt changes its documents
        for attempt in range(20):
            fast, slow = f"a{number:02}{attempt:02}", f"b{number:02}{attempt:02}"
            docs = [{"_id": fast, **BASE}, {"_id": slow, **BASE}]
            await raw.command({"insert": coll, "documents": docs}, db)
            before = await answered(raw)
            hot = await raw.command(update_body(coll, {"_id": fast}, update), db)
            went = await answered(raw) - before
            normal = await raw.command(
                {**update_body(coll, {"_id": slow}, update), "comment": "normal path"}, db
            )
            assert hot == normal, (update, bson.decode(hot), bson.decode(normal))
            assert stored(reader, db, coll, fast) == stored(reader, db, coll, slow), update
            assert await sql_doc(api, db, coll, fast) == await sql_doc(api, db, coll, slow)
            if not lane:
                assert went == 0, update  # handed back or never taken
                break
            if went == 1:
                break
        else:
            raise AssertionError(f"the lane never answered {update}")
    # no document matches: n 0 from the lane
    for _ in range(20):
        before = await answered(raw)
        hot = await raw.command(update_body(coll, {"_id": "none"}, {"$inc": {"a": 1}}), db)
        went = await answered(raw) - before
        normal = await raw.command(
            {**update_body(coll, {"_id": "none"}, {"$inc": {"a": 1}}), "comment": "x"}, db
        )
        assert hot == normal == bson.encode({"n": 0, "nModified": 0, "ok": 1.0})
        if went == 1:
            break
    else:
        raise AssertionError("the lane never answered a no-match")


async def test_lone_update_upsert_and_duplicate_key_as_the_normal_path(
    raw: RawClient, reader: pymongo.MongoClient[RawBSONDocument]
) -> None:
    db, coll = f"ul_{uuid.uuid4().hex[:8]}", "items"
    await warm(raw, db, coll)
    # An upsert that matches nothing is handed back: the command table inserts.
    before = await answered(raw)
    hot = bson.decode(
        await raw.command(update_body(coll, {"_id": "u1"}, {"$inc": {"n": 2}}, upsert=True), db)
    )
    normal = bson.decode(
        await raw.command(
            {**update_body(coll, {"_id": "u2"}, {"$inc": {"n": 2}}, upsert=True), "comment": "x"},
            db,
        )
    )
    assert await answered(raw) == before
    assert hot == {"n": 1, "nModified": 0, "upserted": [{"index": 0, "_id": "u1"}], "ok": 1.0}
    assert normal == {**hot, "upserted": [{"index": 0, "_id": "u2"}]}
    assert stored(reader, db, coll, "u1") == stored(reader, db, coll, "u2")
    # An upsert that matches is answered by the lane.
    for _ in range(20):
        before = await answered(raw)
        reply = await raw.command(
            update_body(coll, {"_id": "u1"}, {"$inc": {"n": 1}}, upsert=True), db
        )
        assert reply == bson.encode({"n": 1, "nModified": 1, "ok": 1.0})
        if await answered(raw) == before + 1:
            break
    else:
        raise AssertionError("the lane never answered a matching upsert")
    # A duplicate key: the engine refuses the lane's statement, the command table reports
    # 11000 with keyPattern/keyValue, as for the same update on the normal path.
    coll = "dups"
    await warm(raw, db, coll)
    unique = {"key": {"u": 1}, "name": "u_1", "unique": True}
    await raw.command({"createIndexes": coll, "indexes": [unique]}, db)
    docs = [{"_id": "d1", "u": "x1"}, {"_id": "d2", "u": "x2"}, {"_id": "d3", "u": "taken"}]
    await raw.command({"insert": coll, "documents": docs}, db)
    for _ in range(3):  # each time the engine refuses the lane's statement
        lane = await raw.command(update_body(coll, {"_id": "d1"}, {"$set": {"u": "taken"}}), db)
        table = await raw.command(
            {**update_body(coll, {"_id": "d2"}, {"$set": {"u": "taken"}}), "comment": "x"}, db
        )
        assert lane == table
        error = bson.decode(lane)["writeErrors"][0]
        assert (error["code"], error["keyValue"]) == (11000, {"u": "taken"})
    assert found(reader[db][coll].find_one({"_id": "d1"}))["u"] == "x1"


def pymongo_lane(client: pymongo.MongoClient[dict[str, Any]]) -> int:
    return int(client.admin.command("serverStatus")["heliosdb"]["pipelinedUpdates"])


def test_pymongo_update_one_takes_the_lane(
    client: pymongo.MongoClient[dict[str, Any]], reader: pymongo.MongoClient[RawBSONDocument]
) -> None:
    # pymongo sends the statement as a document sequence (OP_MSG kind 1).
    coll = client[f"ul_{uuid.uuid4().hex[:8]}"]["items"]
    coll.insert_many([{"_id": i, "n": 0, "s": "x"} for i in range(5)])
    before = pymongo_lane(client)
    for i in range(200):
        result = coll.update_one({"_id": i % 5}, {"$inc": {"n": 1}, "$set": {"s": "y"}})
        assert (result.matched_count, result.modified_count) == (1, 1)
    assert pymongo_lane(client) > before
    assert [d["n"] for d in coll.find().sort("_id", 1)] == [40] * 5
    raw_doc = found(reader[coll.database.name]["items"].find_one({"_id": 3}))
    assert bytes(raw_doc.raw) == bson.encode({"_id": 3, "n": 40, "s": "y"})
    miss = coll.update_one({"_id": 99}, {"$inc": {"n": 1}})
    assert (miss.matched_count, miss.modified_count, miss.upserted_id) == (0, 0, None)
    up = coll.update_one({"_id": 99}, {"$inc": {"n": 1}}, upsert=True)
    assert up.upserted_id == 99 and coll.find_one({"_id": 99}) == {"_id": 99, "n": 1}


def test_updates_the_lane_leaves_to_the_command_table(
    client: pymongo.MongoClient[dict[str, Any]],
    ro_client: pymongo.MongoClient[dict[str, Any]],
) -> None:
    name = f"ul_{uuid.uuid4().hex[:8]}"
    coll: Collection[dict[str, Any]] = client[name]["items"]
    coll.insert_many([{"_id": 1, "n": 1, "arr": [1, 2, 3]}, {"_id": 2, "n": 1}])
    for _ in range(50):  # teach the lane this collection's statement
        coll.update_one({"_id": 2}, {"$inc": {"n": 1}})
    before = pymongo_lane(client)
    # read-only key: Unauthorized (13) from the command table, nothing written
    with pytest.raises(OperationFailure) as denied:
        ro_client[name]["items"].update_one({"_id": 1}, {"$inc": {"n": 1}})
    assert denied.value.code == 13
    # arrayFilters, update_many, several statements, unacknowledged (moreToCome)
    coll.update_one({"_id": 1}, {"$set": {"arr.$[x]": 0}}, array_filters=[{"x": {"$gt": 1}}])
    assert coll.update_many({"_id": 1}, {"$inc": {"n": 1}}).modified_count == 1
    bulk = coll.bulk_write(
        [
            pymongo.UpdateOne({"_id": 1}, {"$inc": {"n": 1}}),
            pymongo.UpdateOne({"_id": 1}, {"$inc": {"n": 1}}),
        ]
    )
    assert bulk.modified_count == 2
    coll.with_options(write_concern=WriteConcern(w=0)).update_one({"_id": 1}, {"$inc": {"n": 1}})
    for _ in range(500):  # unacknowledged: applied when the node gets to it
        if found(coll.find_one({"_id": 1}))["n"] == 5:
            break
        time.sleep(0.01)
    # inside a transaction: on the transaction's connection, invisible until commit
    with client.start_session() as session:
        session.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=session)
        assert found(coll.find_one({"_id": 1}, session=session))["n"] == 15
        assert found(coll.find_one({"_id": 1}))["n"] == 5
        session.abort_transaction()
    with client.start_session() as session:
        session.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 100}}, session=session)
        session.commit_transaction()
    assert pymongo_lane(client) == before
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 105, "arr": [1, 0, 0]}


def test_sequence_forms_the_lane_refuses() -> None:
    def message(body: dict[str, Any], *sequence: bytes, name: bytes = b"updates") -> bytes:
        payload = b"\x00\x00\x00\x00\x00" + bson.encode({**body, "$db": "d"})
        if sequence:
            section = name + b"\x00" + b"".join(sequence)
            payload += b"\x01" + struct.pack("<i", 4 + len(section)) + section
        return struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload

    one = bson.encode({"q": {"_id": 1}, "u": {"$inc": {"n": 1}}, "multi": False})
    body, statement = found(loneupdate._statement(message({"update": "c"}, one)))
    assert body == {"update": "c", "$db": "d"} and statement == bson.decode(one)
    inline = message({"update": "c", "updates": [bson.decode(one)]})
    assert found(loneupdate._statement(inline))[1] == bson.decode(one)
    for refused in (
        message({"update": "c"}, one, one),  # two statements
        message({"update": "c"}, one, name=b"deletes"),
        message({"update": "c", "updates": []}, one),  # in the body and a sequence
        message({"update": "c", "updates": [bson.decode(one)] * 2}),
        message({"update": "c", "let": {}}, one),
        message({"update": "c", "txnNumber": Int64(1)}, one),
        message({"update": "c"}, bson.encode({"q": {}, "u": {"$set": {"a": 1}}, "multi": True})),
        message({"update": "c"}, bson.encode({"q": {}, "u": {"$set": {"a": 1}}, "upsert": 1})),
        message({"update": "c"}, bson.encode({"q": {}, "u": {"a": 1}, "hint": "x"})),
        message({"update": "c"}, bson.encode({"q": 5, "u": {"$set": {"a": 1}}})),
        message({"update": "c"}, bson.encode({"q": {}, "u": [{"$set": {"a": 1}}]})),
    ):
        assert loneupdate._statement(refused) is None
    counts = ((0, 0), (1, 1), (1, 0), (2**31 - 1, 2**31 - 1))
    for matched, modified in counts:
        expected = bson.encode({"n": matched, "nModified": modified, "ok": 1.0})
        assert loneupdate._counts(matched, modified) == expected


async def test_concurrent_increments_of_one_document_all_count(
    mongo_port: int, rw_key: str, raw: RawClient
) -> None:
    # Many clients increment one document at once: each update rewrites the row's newest
    # version (the plain UPDATE's recheck, the locking statement's lock), none is lost.
    db, coll = f"ul_{uuid.uuid4().hex[:8]}", "items"
    await warm(raw, db, coll)
    await raw.command({"insert": coll, "documents": [{"_id": "c", "n": 0, "m": Int64(0)}]}, db)
    clients = [await RawClient.connect(mongo_port, rw_key) for _ in range(4)]
    before = await answered(raw)

    async def bump(client: RawClient) -> None:
        for _ in range(50):
            reply = bson.decode(
                await client.command(
                    update_body(coll, {"_id": "c"}, {"$inc": {"n": 1, "m": 2}}), db
                )
            )
            assert reply == {"n": 1, "nModified": 1, "ok": 1.0}

    try:
        await asyncio.gather(*(bump(c) for c in clients))
    finally:
        for client in clients:
            await client.close()
    assert await answered(raw) > before
    find = {"find": coll, "filter": {"_id": "c"}, "limit": 1, "singleBatch": True}
    document = bson.decode(await raw.command(find, db))["cursor"]["firstBatch"][0]
    assert document == {"_id": "c", "n": 200, "m": 400}


async def test_a_document_the_engine_function_leaves_goes_the_general_path(
    raw: RawClient, reader: pymongo.MongoClient[RawBSONDocument]
) -> None:
    # An increment of a double fails the one-statement UPDATE's NOT NULL column: nothing
    # is written, the general path applies it; the collection then takes the locking
    # statement, whose answers (and the lane's) stay right.
    db, coll = f"ul_{uuid.uuid4().hex[:8]}", "items"
    await warm(raw, db, coll)
    docs = [{"_id": "x", "d": 1.5, "n": 1}, {"_id": "y", "d": 1.5, "n": 1}]
    await raw.command({"insert": coll, "documents": docs}, db)
    for _ in range(3):
        reply = await raw.command(update_body(coll, {"_id": "x"}, {"$inc": {"d": 1}}), db)
        assert reply == bson.encode({"n": 1, "nModified": 1, "ok": 1.0})
    bumped = 0
    for _ in range(20):
        before = await answered(raw)
        reply = await raw.command(update_body(coll, {"_id": "x"}, {"$inc": {"n": 1}}), db)
        bumped += 1
        assert reply == bson.encode({"n": 1, "nModified": 1, "ok": 1.0})
        if await answered(raw) == before + 1:
            break
    else:
        raise AssertionError("the lane never answered after the general path")
    done = found(reader[db][coll].find_one({"_id": "x"}))
    assert bson.decode(done.raw) == {"_id": "x", "d": 4.5, "n": 1 + bumped}
    assert type(bson.decode(done.raw)["n"]) is int


async def test_clients_updating_at_once_each_get_a_connection_of_the_lane(
    node: NodeProcess, mongo_port: int, rw_key: str, raw: RawClient
) -> None:
    # An update never queues behind another on the lane, so the principal's lane opens
    # another connection whenever all of its are busy, up to the engine pool's size:
    # eight clients at once end up with more than the four it had at most before.
    db, coll = f"ul_{uuid.uuid4().hex[:8]}", "items"
    await warm(raw, db, coll)
    documents = [{"_id": i, "n": 0} for i in range(8)]
    await raw.command({"insert": coll, "documents": documents}, db)
    clients = [await RawClient.connect(mongo_port, rw_key) for _ in range(8)]
    engine = await asyncpg.connect(node.engine_url)

    async def lane_connections() -> int:
        count = await engine.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            updatelane.APPLICATION_NAME,
        )
        return int(count)

    async def bump(client: RawClient, i: int) -> None:
        for _ in range(20):
            reply = bson.decode(
                await client.command(update_body(coll, {"_id": i}, {"$inc": {"n": 1}}), db)
            )
            assert reply == {"n": 1, "nModified": 1, "ok": 1.0}

    try:
        for _ in range(100):
            await asyncio.gather(*(bump(c, i) for i, c in enumerate(clients)))
            if await lane_connections() > 4:
                break
        grown = await lane_connections()
        find = {"find": coll, "filter": {"n": {"$exists": True}}, "sort": {"_id": 1}}
        counts = bson.decode(await raw.command(find, db))["cursor"]["firstBatch"]
    finally:
        await engine.close()
        for client in clients:
            await client.close()
    assert 4 < grown <= 16  # the engine pool's size (engine.pool_size) is the bound
    rounds = counts[0]["n"] // 20
    assert counts == [{"_id": i, "n": 20 * rounds} for i in range(8)]
