"""Finds by _id from many connections at once share statements (services/documents/
lookups.py): every answer must be the one the ordinary single statement gives."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient

from tests.integration.mongodb.conftest import mongo_uri

OID = ObjectId()
IDS: list[Any] = [
    *range(60),
    500.0,
    "s1",
    "",
    OID,
    {"a": 1, "b": [2, 3]},
    Int64(7_000_000_000),
    Decimal128("1.5"),
    datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
    True,
]
# Present ids, missing ids, and ids equal to a stored one under another type (500 to 500.0).
WANTED: list[Any] = [*IDS, 500, 9999, "missing", ObjectId(), {"a": 1}, 1.0, Int64(3), None]


async def test_concurrent_finds_by_id_answer_as_alone(mongo_port: int, rw_key: str) -> None:
    client: AsyncMongoClient[RawBSONDocument] = AsyncMongoClient(
        mongo_uri(mongo_port, rw_key),
        serverSelectionTimeoutMS=10_000,
        maxPoolSize=8,
        document_class=RawBSONDocument,
    )
    name = f"lk_{uuid.uuid4().hex[:8]}"
    try:
        coll = client[name].items
        documents: list[Any] = [
            {"_id": i, "n": Int64(n), "d": Decimal128(str(n)), "x": {"z": 1, "a": 2}}
            for n, i in enumerate(IDS)
        ]
        await coll.insert_many(documents)
        status = await client.admin.command("serverStatus")
        before = status["heliosdb"]["idLookups"]["batched"]
        # The ordinary statement answers a find that has a sort (never batched).
        expected = [await coll.find_one({"_id": i}, sort=[("_id", 1)]) for i in WANTED]
        projected = [await coll.find_one({"_id": i}, {"n": 1}, sort=[("_id", 1)]) for i in IDS]
        for _ in range(3):
            found = await asyncio.gather(*(coll.find_one({"_id": i}) for i in WANTED * 4))
            assert [d.raw if d else None for d in found] == [
                d.raw if d else None for d in expected * 4
            ]
            shown = await asyncio.gather(*(coll.find_one({"_id": i}, {"n": 1}) for i in IDS))
            assert [d.raw if d else None for d in shown] == [
                d.raw if d else None for d in projected
            ]
        assert expected[WANTED.index(500)] is not None  # 500 finds the document of 500.0
        assert expected[WANTED.index(9999)] is None
        status = await client.admin.command("serverStatus")
        assert status["heliosdb"]["idLookups"]["batched"] > before
        # A missing collection answers nothing, batched or not.
        missing = client[name].nothing
        assert (
            await asyncio.gather(*(missing.find_one({"_id": i}) for i in range(20))) == [None] * 20
        )
    finally:
        await client.drop_database(name)
        await client.close()


async def test_concurrent_finds_by_id_read_only_key(
    mongo_port: int, rw_key: str, ro_key: str
) -> None:
    """A read-only key's lookups batch apart from a read-write key's and still read."""
    writer: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri(mongo_port, rw_key), serverSelectionTimeoutMS=10_000
    )
    reader: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri(mongo_port, ro_key), serverSelectionTimeoutMS=10_000, maxPoolSize=8
    )
    name = f"lk_{uuid.uuid4().hex[:8]}"
    try:
        await writer[name].items.insert_many([{"_id": i, "n": i} for i in range(40)])
        coll, other = reader[name].items, writer[name].items
        both = await asyncio.gather(
            *(coll.find_one({"_id": i}) for i in range(40)),
            *(other.find_one({"_id": i}) for i in range(40)),
        )
        assert [d["n"] if d else None for d in both] == [*range(40), *range(40)]
    finally:
        await writer.drop_database(name)
        await writer.close()
        await reader.close()
