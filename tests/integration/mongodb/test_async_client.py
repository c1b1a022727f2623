"""pymongo's asyncio client (AsyncMongoClient) through the same commands."""

from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from tests.integration.mongodb.conftest import mongo_uri


async def test_async_client_crud_and_aggregate(mongo_port: int, rw_key: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        mongo_uri(mongo_port, rw_key), serverSelectionTimeoutMS=10_000
    )
    name = f"as_{uuid.uuid4().hex[:8]}"
    try:
        coll = client[name].items
        await coll.insert_many([{"_id": i, "g": i % 3, "n": i} for i in range(30)])
        assert await coll.count_documents({"g": 1}) == 10
        found = [d["_id"] async for d in coll.find({"n": {"$gte": 25}}).sort("n", -1).batch_size(2)]
        assert found == [29, 28, 27, 26, 25]
        await coll.update_many({"g": 0}, {"$inc": {"n": 100}})
        assert (await coll.find_one({"_id": 3}))["n"] == 103  # type: ignore[index]
        cursor = await coll.aggregate(
            [{"$group": {"_id": "$g", "c": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
        )
        assert [d async for d in cursor] == [
            {"_id": 0, "c": 10},
            {"_id": 1, "c": 10},
            {"_id": 2, "c": 10},
        ]
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"_id": 1})
        await coll.create_index("n")
        assert "n_1" in await coll.index_information()
        assert (await coll.delete_many({"g": 2})).deleted_count == 10
    finally:
        await client.drop_database(name)
        await client.close()
