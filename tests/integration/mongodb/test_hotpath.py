"""The find hot path (interfaces/mongodb/hotpath.py) answers byte for byte as the normal
path: each find is sent twice on a raw connection, once in the plain form the hot path
takes and once with a ``comment`` (which it leaves to the normal path), and the reply
documents are compared as bytes."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import asyncpg
import bson
import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId

from heliosdb.interfaces.mongodb import codec, hotpath
from heliosdb.security.scram import ClientExchange
from tests.nodeproc import NodeProcess


class RawClient:
    """OP_MSG commands on one connection; replies as their raw BSON document."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.request_id = reader, writer, 0
        self.lsid = {"id": Binary(uuid.uuid4().bytes, 4)}

    @classmethod
    async def connect(cls, port: int, key: str | None) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        if key is not None:
            exchange = ClientExchange(key)
            exchange._client_first_bare = exchange._client_first_bare.replace("n=,", "n=apikey,")
            first = bson.decode(
                await client.command(
                    {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": exchange.first()},
                    "admin",
                )
            )
            final = bson.decode(
                await client.command(
                    {
                        "saslContinue": 1,
                        "conversationId": first["conversationId"],
                        "payload": exchange.final(first["payload"]),
                    },
                    "admin",
                )
            )
            exchange.verify(final["payload"])
        return client

    async def command(self, body: dict[str, Any], db: str) -> bytes:
        self.send(body, db)
        return await self.reply()

    def send(self, body: dict[str, Any], db: str) -> None:
        """Write the command as one OP_MSG, in one write (as the drivers do)."""
        self.request_id += 1
        payload = b"\x00\x00\x00\x00\x00" + bson.encode({**body, "lsid": self.lsid, "$db": db})
        header = struct.pack("<iiii", 16 + len(payload), self.request_id, 0, 2013)
        self.writer.write(header + payload)

    async def reply(self) -> bytes:
        """The reply to the last command sent, its body section's document."""
        (length,) = struct.unpack("<i", await self.reader.readexactly(4))
        data = await self.reader.readexactly(length - 4)
        _, response_to, op_code = struct.unpack_from("<iii", data)
        assert (response_to, op_code) == (self.request_id, 2013)
        assert data[12:17] == b"\x00\x00\x00\x00\x00"  # flags 0, one body section
        return data[17:]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def raw(mongo_port: int, rw_key: str) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(mongo_port, rw_key)
    yield client
    await client.close()


async def both(client: RawClient, body: dict[str, Any], db: str) -> tuple[bytes, bytes]:
    """The reply through the hot path and through the normal path."""
    assert body.keys() <= hotpath.FIND_KEYS - {"lsid", "$db"}
    return await client.command(body, db), await client.command({**body, "comment": "x"}, db)


DOCS: list[dict[str, Any]] = [
    {"_id": 1, "k": "a", "n": 1, "tags": ["x", "y"]},
    {"_id": "s", "k": "b", "n": Int64(2), "d": Decimal128("2.5")},
    {"_id": ObjectId(), "k": "a", "n": 3.5, "when": datetime.datetime(2024, 5, 1, tzinfo=UTC)},
    {"_id": {"x": 1}, "k": ["a", "c"], "n": 4, "bin": Binary(b"\x01\x02", 5)},
    {"_id": 5.0, "z": None, "k": "d", "nested": {"b": 1, "a": [1, {"c": 2}]}},
]  # fmt: skip


async def loaded(raw: RawClient) -> str:
    """A new database whose collection ``items`` holds DOCS, indexed on ``k``."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": DOCS}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    return db


async def test_plain_finds_answer_as_the_normal_path(raw: RawClient) -> None:
    db = await loaded(raw)
    finds: list[dict[str, Any]] = [
        {"filter": {"_id": 1}, "limit": 1, "singleBatch": True},  # find_one by _id
        {"filter": {"_id": "s"}},
        {"filter": {"_id": DOCS[2]["_id"]}},
        {"filter": {"_id": {"x": 1}}, "limit": 1, "singleBatch": True},
        {"filter": {"_id": 5}},  # numerically equal to the stored 5.0
        {"filter": {"_id": "missing"}, "limit": 1, "singleBatch": True},
        {"filter": {"k": "a"}},  # indexed, one of them an array element
        {"filter": {"k": "a"}, "limit": 1},
        {"filter": {"k": "a"}, "limit": -1},
        {"filter": {"n": {"$gt": 1}}},
        {"filter": {"nested.a.c": 2}},
        {"filter": {}},
        {},
        {"filter": {"k": "a"}, "batchSize": 5, "singleBatch": False},
        {"filter": {"n": {"$bad": 1}}},  # the same error document
        {"filter": {"k": "a"}, "limit": Int64(1)},  # not the hot path's types: normal path
    ]
    for body in finds:
        hot, normal = await both(raw, {"find": "items", **body}, db)
        assert hot == normal, body
        assert bson.decode(hot)["ok"] == (0.0 if "$bad" in str(body) else 1.0)
    # No such collection, no such database, an invalid database name.
    for name, database in (("nothing", db), ("items", f"none_{db}"), ("items", "bad.db")):
        hot, normal = await both(raw, {"find": name, "filter": {"_id": 1}}, database)
        assert hot == normal
    await raw.command({"dropDatabase": 1}, db)


async def test_a_result_beyond_the_first_batch_opens_the_same_cursor(raw: RawClient) -> None:
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": [{"_id": i} for i in range(7)]}, db)
    replies = await both(raw, {"find": "items", "filter": {}, "batchSize": 3}, db)
    rest = []
    for reply in replies:
        cursor = bson.decode(reply)["cursor"]
        assert [d["_id"] for d in cursor["firstBatch"]] == [0, 1, 2]
        assert cursor["id"] != 0 and cursor["ns"] == f"{db}.items"
        more = await raw.command({"getMore": cursor["id"], "collection": "items"}, db)
        rest.append(bson.decode(more)["cursor"]["nextBatch"])
    assert rest[0] == rest[1] == [{"_id": i} for i in range(3, 7)]
    # singleBatch with more than batchSize: the first batch only, no cursor.
    hot, normal = await both(raw, {"find": "items", "batchSize": 2, "singleBatch": True}, db)
    assert hot == normal and bson.decode(hot)["cursor"]["id"] == 0
    await raw.command({"dropDatabase": 1}, db)


async def test_unauthenticated_find_is_refused_alike(mongo_port: int) -> None:
    client = await RawClient.connect(mongo_port, None)
    try:
        hot, normal = await both(client, {"find": "items", "filter": {"_id": 1}}, "admin")
        assert hot == normal and bson.decode(hot)["code"] == 13
    finally:
        await client.close()


def test_which_finds_take_the_hot_path() -> None:
    class Session:
        principal = object()

    def message(body: dict[str, Any], **extra: Any) -> codec.Message:
        return codec.Message(1, codec.OP_MSG, {**body, "$db": "d"}, **extra)

    take = {"find": "c", "filter": {"a": 1}, "limit": 1, "singleBatch": True, "lsid": {}}
    assert hotpath.eligible(Session(), message(take))  # type: ignore[arg-type]
    for other in (
        message({**take, "sort": {"a": 1}}),
        message({**take, "comment": "x"}),
        message({**take, "txnNumber": Int64(1)}),
        message({"filter": {}, "find": "c"}),
        message(take, compressor=codec.ZLIB),
        message(take, sequences={"x": []}),
    ):
        assert not hotpath.eligible(Session(), other)  # type: ignore[arg-type]
    Session.principal = None  # type: ignore[assignment]
    assert not hotpath.eligible(Session(), message(take))  # type: ignore[arg-type]


# -- the lone path (hotpath.take_lone): a find answered from the read callback ---------


async def pipelined(client: RawClient) -> int:
    status = bson.decode(await client.command({"serverStatus": 1}, "admin"))
    return int(status["heliosdb"]["pipelinedFinds"])


async def lone(client: RawClient, body: dict[str, Any], db: str) -> bytes:
    """``body``'s reply once the lone path answered it: the find runs until it does (the
    pool path answers first and teaches it; the pipelined connection opens and prepares
    the statement in the background)."""
    for _ in range(200):
        before = await pipelined(client)
        reply = await client.command(body, db)
        if await pipelined(client) == before + 1:
            return reply
        await asyncio.sleep(0.01)
    raise AssertionError(f"the lone path never answered {body}")


async def test_lone_finds_answer_as_the_normal_path(raw: RawClient) -> None:
    db = await loaded(raw)
    finds: list[dict[str, Any]] = [
        {"filter": {"_id": 1}, "limit": 1, "singleBatch": True},  # find_one by _id
        {"filter": {"_id": "s"}},  # a plain _id needs no limit: one row at most
        {"filter": {"_id": DOCS[2]["_id"]}, "batchSize": 1},
        {"filter": {"_id": {"x": 1}}, "limit": 1, "singleBatch": True},
        {"filter": {"_id": 5}},  # numerically equal to the stored 5.0
        {"filter": {"_id": "missing"}, "limit": 1, "singleBatch": True},  # no document
        {"filter": {"k": "a"}, "limit": 1},  # indexed
        {"filter": {"k": "a"}, "limit": -2},  # two rows, one of them an array element
        {"filter": {"k": "a", "n": 1}, "limit": 3, "batchSize": 3},
    ]
    for body in finds:
        hot = await lone(raw, {"find": "items", **body}, db)
        normal = await raw.command({"find": "items", **body, "comment": "x"}, db)
        assert hot == normal, body
        assert bson.decode(hot)["ok"] == 1.0
    # Finds by _id of other values of a type seen before reuse its statement (ObjectId,
    # documents, null, Int64 equal to a stored double).
    for value in (ObjectId(), DOCS[2]["_id"], {"x": 2}, {"x": 1}, None, Int64(5), 1.0):
        body = {"find": "items", "filter": {"_id": value}, "limit": 1}
        hot = await lone(raw, body, db)
        assert hot == await raw.command({**body, "comment": "x"}, db), value
    # Finds the lone path leaves to the loop (a result that may need a cursor, a filter
    # whose statement takes a jsonpath) still answer as the normal path.
    for body in (
        {"filter": {"k": "a"}},
        {"filter": {"_id": {"$gt": 1}}},
        {"filter": {"n": {"$gt": 1}}, "limit": 2},
        {"filter": {"z": None}, "limit": 1},
        {"filter": {"k": "a"}, "limit": 200},  # beyond the default first batch
    ):
        before = await pipelined(raw)
        for _ in range(3):
            hot, normal = await both(raw, {"find": "items", **body}, db)
            assert hot == normal, body
        assert await pipelined(raw) == before, body
    # The collection goes away after the lone path learned its statement: the engine's
    # error hands the find back to the loop, which answers as before (an empty batch).
    await lone(raw, {"find": "items", "filter": {"_id": 1}}, db)
    await raw.command({"drop": "items"}, db)
    hot, normal = await both(raw, {"find": "items", "filter": {"_id": 1}}, db)
    assert hot == normal and bson.decode(hot)["cursor"]["firstBatch"] == []
    # ... and when it comes back with other documents, the lone path reads those.
    await raw.command({"insert": "items", "documents": [{"_id": 1, "again": True}]}, db)
    hot = await lone(raw, {"find": "items", "filter": {"_id": 1}}, db)
    assert bson.decode(hot)["cursor"]["firstBatch"] == [{"_id": 1, "again": True}]
    await raw.command({"dropDatabase": 1}, db)


async def test_lone_find_replies_name_their_namespace_as_the_normal_path(
    raw: RawClient,
) -> None:
    """One document's reply is assembled from a tail kept per namespace: names of several
    bytes per character and longer ones answer as the normal path, each its own."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    for coll in ("itémś", "√" + "c" * 40, "items"):
        await raw.command({"insert": coll, "documents": [{"_id": 1, "k": "a", "c": coll}]}, db)
        index = {"key": {"k": 1}, "name": "k"}
        await raw.command({"createIndexes": coll, "indexes": [index]}, db)
        for body in ({"filter": {"_id": 1}, "limit": 1}, {"filter": {"k": "a"}, "limit": 1}):
            hot = await lone(raw, {"find": coll, **body}, db)
            assert hot == await raw.command({"find": coll, **body, "comment": "x"}, db)
            assert bson.decode(hot)["cursor"]["firstBatch"] == [{"_id": 1, "k": "a", "c": coll}]
    await raw.command({"dropDatabase": 1}, db)


async def test_lone_finds_keep_the_order_of_replies(raw: RawClient) -> None:
    """Messages that arrive while a lone find is out wait for its reply: a client that
    writes several commands without waiting reads their replies in order."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": [{"_id": i} for i in range(20)]}, db)
    await lone(raw, {"find": "items", "filter": {"_id": 1}}, db)
    frames = []
    for i in range(20):
        body: dict[str, Any] = {"find": "items", "filter": {"_id": i}, "lsid": raw.lsid, "$db": db}
        if i % 3 == 2:
            body = {"ping": 1, "lsid": raw.lsid, "$db": db}
        payload = b"\x00\x00\x00\x00\x00" + bson.encode(body)
        frames.append(struct.pack("<iiii", 16 + len(payload), 1000 + i, 0, 2013) + payload)
    for chunk in (frames[:1], frames[1:4], frames[4:5], frames[5:]):
        for frame in chunk:
            raw.writer.write(frame)
        await raw.writer.drain()
        await asyncio.sleep(0)
    for i in range(20):
        (length,) = struct.unpack("<i", await raw.reader.readexactly(4))
        data = await raw.reader.readexactly(length - 4)
        assert struct.unpack_from("<i", data, 4)[0] == 1000 + i
        reply = bson.decode(data[17:])
        if i % 3 != 2:
            assert reply["cursor"]["firstBatch"] == [{"_id": i}]
    await raw.command({"dropDatabase": 1}, db)


async def test_a_lone_find_sees_the_clients_last_write(raw: RawClient) -> None:
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": [{"_id": 1, "n": 0}]}, db)
    await lone(raw, {"find": "items", "filter": {"_id": 1}, "limit": 1}, db)
    before = await pipelined(raw)
    for n in range(1, 30):
        update = {"q": {"_id": 1}, "u": {"$set": {"n": n}}}
        await raw.command({"update": "items", "updates": [update]}, db)
        reply = await raw.command({"find": "items", "filter": {"_id": 1}, "limit": 1}, db)
        assert bson.decode(reply)["cursor"]["firstBatch"] == [{"_id": 1, "n": n}]
    assert await pipelined(raw) > before
    await raw.command({"dropDatabase": 1}, db)


async def shared_statements_answer_as_alone(
    raw: RawClient,
    node: NodeProcess,
    key: str,
    db: str,
    ids: list[Any],
    odd: bool = False,
    finds: list[dict[str, Any]] | None = None,
    counter: str = "pipelinedIdBatches",
    together: bool = False,
) -> None:
    """Finds by each of ``ids`` (or the ``finds``, bodies of finds on ``items``) from as
    many clients at once until some went out in one statement on the pipelined
    connection (``counter`` of serverStatus; ``odd``: a round's shared finds add up to
    an odd number, so one statement answered an odd number of finds, padded;
    ``together``: all of them in one statement); every reply is the normal path's.
    "At once": written while the node is stopped (SIGSTOP), as when it is busy, so that
    they reach it in one loop step however quiet the machine."""
    mongo_port = node.ports["mongodb"]
    assert node.process is not None
    if finds is None:
        finds = [{"filter": {"_id": i}} for i in ids]
    bodies = [{"find": "items", **body} for body in finds]
    clients = [await RawClient.connect(mongo_port, key) for _ in bodies]
    try:
        for client, body in zip(clients, bodies, strict=True):
            await lone(client, body, db)
        normal = [await raw.command({**body, "comment": "x"}, db) for body in bodies]
        for _ in range(100):
            status = bson.decode(await raw.command({"serverStatus": 1}, "admin"))
            before = status["heliosdb"][counter]["batched"]
            os.kill(node.process.pid, signal.SIGSTOP)
            try:
                for c, body in zip(clients, bodies, strict=True):
                    c.send(body, db)
            finally:
                os.kill(node.process.pid, signal.SIGCONT)
            replies = [await c.reply() for c in clients]
            assert replies == normal
            status = bson.decode(await raw.command({"serverStatus": 1}, "admin"))
            shared = status["heliosdb"][counter]["batched"] - before
            if (
                shared > 0
                and (shared % 2 == 1 or not odd)
                and (not together or shared == len(bodies))
            ):
                break
        else:
            raise AssertionError(f"no finds shared a statement ({counter})")
    finally:
        for client in clients:
            await client.close()


async def test_lone_finds_by_id_of_one_loop_step_share_a_statement(
    raw: RawClient, node: NodeProcess, rw_key: str
) -> None:
    """Finds by _id from several clients at once go out in one statement on the
    pipelined connection; each gets its own document, as the normal path answers it."""
    db = await loaded(raw)
    ids = [d["_id"] for d in DOCS] + ["missing", 5]  # 5 matches the stored 5.0
    await shared_statements_answer_as_alone(raw, node, rw_key, db, ids)
    await raw.command({"dropDatabase": 1}, db)


@pytest.mark.parametrize("count", [2, 3, 5, 40])
async def test_lone_finds_by_id_batched_by_any_count_answer_as_the_normal_path(
    raw: RawClient, node: NodeProcess, rw_key: str, count: int
) -> None:
    """Batches of every size: 3 and 5 finds take the 4- and 8-parameter statements with
    NULL padding (which must match nothing, not even the stored document whose _id is
    null), 40 the unnest statement; each find still gets exactly the normal path's reply.
    """
    db = await loaded(raw)
    await raw.command({"insert": "items", "documents": [{"_id": None, "null": True}]}, db)
    await raw.command({"insert": "items", "documents": [{"_id": i} for i in range(100, 140)]}, db)
    ids = [[1, None, "missing", 5, *range(100, 140)][i] for i in range(count)]
    await shared_statements_answer_as_alone(raw, node, rw_key, db, ids, count in (3, 5))
    await raw.command({"dropDatabase": 1}, db)


# Documents for finds by one equality on the indexed field k: scalars of every plain
# type, numbers equal across types, arrays holding the value (and [null], which the
# batch statement's NULL padding must not match), a missing k, a null k, duplicates.
EQUAL_DOCS: list[dict[str, Any]] = [
    {"_id": 1, "k": "a", "n": 1},
    {"_id": 2, "k": ["a", "b"]},
    {"_id": 3, "k": "b"},
    {"_id": 4, "other": "a"},
    {"_id": 5, "k": None},
    {"_id": 6, "k": 5},
    {"_id": 7, "k": 5.0},
    {"_id": 8, "k": Int64(5)},
    {"_id": 9, "k": True},
    {"_id": 10, "k": 1},
    {"_id": 11, "k": "1"},
    {"_id": 12, "k": [[5]]},
    {"_id": 13, "k": [None]},
    {"_id": 14, "k": {"x": 1}},
    {"_id": 15, "k": 2.5},
    {"_id": 16, "k": [True, 2.5, "a"]},
    {"_id": 17, "k": "a", "n": 2},
    {"_id": 18, "k": False},
    {"_id": 19, "k": ""},
    *({"_id": 100 + i, "k": f"v{i % 7}", "i": i} for i in range(40)),
]  # fmt: skip
EQUAL_VALUES: list[Any] = [
    "a", 5, "missing", True, 2.5, "a", 1, "1", False, "", 5.0, "b", 3,
    *(f"v{i}" for i in range(7)), *range(20),
]  # fmt: skip


@pytest.mark.parametrize("limit", [1, 3])
@pytest.mark.parametrize("count", [2, 3, 5, 40])
async def test_lone_finds_by_one_indexed_equality_share_a_statement_as_the_normal_path(
    raw: RawClient, node: NodeProcess, rw_key: str, count: int, limit: int
) -> None:
    """Finds ``{k: <scalar>}`` with a limit on the indexed k from clients at once go out
    in one statement per limit (3 and 5 finds padded with NULLs that match nothing, not
    even ``k: [null]``; 40 in two statements); each gets exactly the documents, in the
    order, of its own statement: arrays holding the value, numbers equal across types,
    duplicates of one value, no match."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": EQUAL_DOCS}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    finds = [{"filter": {"k": value}, "limit": limit} for value in EQUAL_VALUES[:count]]
    await shared_statements_answer_as_alone(
        raw, node, rw_key, db, [], count in (3, 5), finds, "pipelinedEqualityBatches"
    )
    await raw.command({"dropDatabase": 1}, db)


async def test_lone_equality_finds_of_other_limits_and_fields_answer_as_the_normal_path(
    raw: RawClient, node: NodeProcess, rw_key: str
) -> None:
    """One step's finds on the indexed k with different limits (each limit its own
    statement), on a field without an index (each alone), by _id and by k at once: every
    reply is the normal path's."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    await raw.command({"insert": "items", "documents": EQUAL_DOCS}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    finds: list[dict[str, Any]] = [
        {"filter": {"k": "a"}, "limit": 1},
        {"filter": {"k": "a"}, "limit": 2},
        {"filter": {"k": "a"}, "limit": -3},
        {"filter": {"k": 5}, "limit": 1},
        {"filter": {"k": "v1"}, "limit": 2},
        {"filter": {"n": 1}, "limit": 1},
        {"filter": {"other": "a"}, "limit": 1},
        {"filter": {"_id": 3}},
        {"filter": {"k": "b"}, "limit": 1},
    ]
    await shared_statements_answer_as_alone(
        raw, node, rw_key, db, [], False, finds, "pipelinedEqualityBatches"
    )
    await raw.command({"dropDatabase": 1}, db)


async def test_a_failing_find_of_a_shared_sync_leaves_the_others_to_the_normal_path(
    raw: RawClient, node: NodeProcess, rw_key: str
) -> None:
    """Lone finds of one loop step share a Sync on the pipelined connection: when the
    first fails in the engine (its collection was dropped under its learned statement),
    the engine skips the others, and each still gets the normal path's reply. (The
    finds are written while the node is stopped, so that they reach it in one step.)"""
    mongo_port = node.ports["mongodb"]
    assert node.process is not None
    db = await loaded(raw)
    await raw.command({"insert": "gone", "documents": [{"_id": 1, "k": "a"}]}, db)
    finds: list[tuple[str, dict[str, Any]]] = [
        ("gone", {"k": "a"}),
        ("items", {"k": "a"}),
        ("gone", {"k": "b"}),
        ("items", {"k": "b"}),
        ("items", {"k": "missing"}),
    ]
    clients = [await RawClient.connect(mongo_port, rw_key) for _ in finds]
    try:
        for client, (coll, spec) in zip(clients, finds, strict=True):
            await lone(client, {"find": coll, "filter": spec, "limit": 1}, db)
        await raw.command({"drop": "gone"}, db)
        normal = [
            await raw.command({"find": c, "filter": f, "limit": 1, "comment": "x"}, db)
            for c, f in finds
        ]
        for _ in range(5):
            os.kill(node.process.pid, signal.SIGSTOP)
            try:
                for client, (coll, spec) in zip(clients, finds, strict=True):
                    client.send({"find": coll, "filter": spec, "limit": 1}, db)
            finally:
                os.kill(node.process.pid, signal.SIGCONT)
            replies = [await client.reply() for client in clients]
            assert replies == normal
    finally:
        for client in clients:
            await client.close()
    await raw.command({"dropDatabase": 1}, db)


async def test_a_read_only_keys_lone_finds_answer_as_the_normal_path(
    raw: RawClient, mongo_port: int, ro_key: str
) -> None:
    db = await loaded(raw)
    reader = await RawClient.connect(mongo_port, ro_key)
    try:
        for body in ({"filter": {"_id": "s"}}, {"filter": {"k": "a"}, "limit": 2}):
            hot = await lone(reader, {"find": "items", **body}, db)
            assert hot == await reader.command({"find": "items", **body, "comment": "x"}, db)
        # ... and it still may not write.
        refused = await reader.command({"insert": "items", "documents": [{"_id": 9}]}, db)
        assert bson.decode(refused)["ok"] == 0.0
    finally:
        await reader.close()
    await raw.command({"dropDatabase": 1}, db)


async def test_finds_of_one_connection_read_around_their_filters_answer_alike(
    raw: RawClient,
) -> None:
    """After its first find, a connection's finds of the same surroundings are read by
    decoding their filter alone (hotpath._known): filters of every plain type, strings
    of several bytes per character, empty, holding NUL, on ``_id`` and on an indexed
    field, one after another on one connection, answer byte for byte as the normal
    path."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    strings = ["a", "", "é√x", "a\x00b", "x" * 300, "d1"]
    docs: list[dict[str, Any]] = [{"_id": s, "k": s} for s in strings]
    docs += [{"_id": 7, "k": 7}, {"_id": ObjectId(), "k": 2.5}, {"_id": {"x": 1}, "k": True}]
    await raw.command({"insert": "items", "documents": docs}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    for field in ("_id", "k"):
        for body in ({"limit": 1, "singleBatch": True}, {"limit": 2}):
            await lone(raw, {"find": "items", "filter": {field: "d1"}, **body}, db)
            before = await pipelined(raw)
            for doc in [*docs, {"_id": "missing", "k": "missing"}]:
                find = {"find": "items", "filter": {field: doc[field]}, **body}
                hot = await raw.command(find, db)
                assert hot == await raw.command({**find, "comment": "x"}, db), find
                if doc["_id"] != "missing":
                    assert bson.decode(hot)["cursor"]["firstBatch"] == [doc]
            # the plain strings' finds (the statement learned above) went the lone way
            assert await pipelined(raw) >= before + len(strings) - 1, (field, body)
    await raw.command({"dropDatabase": 1}, db)


async def test_a_lone_indexed_find_one_runs_its_scalar_half_first(
    raw: RawClient, node: NodeProcess
) -> None:
    """A find_one by one indexed equality, alone in its loop step: the scalar half of its
    union first (lookups.scalar_first), the whole union only when that found nothing (a
    value only an array holds, or no document); every reply is the normal path's. Once
    most of them find nothing it goes to the union at once, and back to the scalar half
    when they find again. (Which statement ran: the query of the pipelined backend.)"""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    docs = [{"_id": 1, "k": "a"}, {"_id": 2, "k": ["x", "a"]}, {"_id": 3, "k": [["y"]]}]
    await raw.command({"insert": "items", "documents": docs}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    engine = await asyncpg.connect(node.engine_url)

    async def find_one(value: Any) -> tuple[list[Any], bool]:
        """The documents of a lone find_one of ``value``, and whether the engine's last
        statement for it was the union."""
        body = {"find": "items", "filter": {"k": value}, "limit": 1, "singleBatch": True}
        hot = await lone(raw, body, db)
        assert hot == await raw.command({**body, "comment": "x"}, db), value
        ran = await engine.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = "
            "'heliosdb-documents' AND strpos(query, $1) > 0",
            f'"{db}"."items"',
        )
        assert len(ran) == 1  # one client, one find at a time: the first pipeline
        return bson.decode(hot)["cursor"]["firstBatch"], " UNION ALL " in ran[0]["query"]

    async def until_scalar_half(tries: int) -> None:
        """find_one of "a" until the scalar half alone answers it."""
        for _ in range(tries):
            found, union = await find_one("a")
            assert found == [docs[0]]
            if not union:
                return
        raise AssertionError("the scalar half never ran first")

    try:
        await until_scalar_half(50)  # prepared on the pipeline meanwhile
        assert await find_one("x") == ([docs[1]], True)  # only an array holds it
        assert await find_one("y") == ([], True)  # nested arrays are not looked into
        for _ in range(10):
            assert (await find_one("none"))[0] == []
        assert await find_one("a") == ([docs[0]], True)  # after misses: the union at once
        await until_scalar_half(20)  # and back as finds find again
    finally:
        await engine.close()
        await raw.command({"dropDatabase": 1}, db)


async def test_lone_find_ones_of_one_loop_step_run_their_scalar_half_first(
    raw: RawClient, node: NodeProcess, rw_key: str
) -> None:
    """find_ones by one indexed equality that go out together take their scalar half
    first as one statement (lookups.scalar_half in the batch's ``LATERAL``: what the
    pipelined backends ran last), and those it finds nothing for their own union after
    (a value only an array holds, none at all); every reply is the normal path's.

    Rounds before the one that sent all three together may have sent two of them in a
    statement on the principal's other pipelined connection, or prepared it there: each
    backend whose last statement is a batch of these finds ran the scalar half."""
    db = f"hp_{uuid.uuid4().hex[:8]}"
    docs = [{"_id": 1, "k": "a"}, {"_id": 2, "k": ["x", "a"]}, {"_id": 3, "k": 5}]
    await raw.command({"insert": "items", "documents": docs}, db)
    await raw.command({"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db)
    engine = await asyncpg.connect(node.engine_url)
    try:
        hits = [{"filter": {"k": value}, "limit": 1} for value in ("a", 5, 5.0)]
        await shared_statements_answer_as_alone(
            raw, node, rw_key, db, [], False, hits, "pipelinedEqualityBatches", together=True
        )
        ran = await engine.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = "
            "'heliosdb-documents' AND strpos(query, $1) > 0 AND strpos(query, 'LATERAL') > 0",
            f'"{db}"."items"',
        )
        assert ran, "no pipelined backend ran a batch of these finds"
        assert [" UNION ALL " in row["query"] for row in ran] == [False] * len(ran)
        misses = [{"filter": {"k": value}, "limit": 1} for value in ("x", "a", "none", 5)]
        await shared_statements_answer_as_alone(
            raw, node, rw_key, db, [], False, misses, "pipelinedEqualityBatches"
        )
    finally:
        await engine.close()
        await raw.command({"dropDatabase": 1}, db)
