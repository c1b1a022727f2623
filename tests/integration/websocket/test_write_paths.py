"""Change events from the write paths the other interfaces open: gRPC and MongoDB.

(REST, the PostgreSQL wire, psql and a direct engine connection are in test_changes.py.)
Capture reads the engine's WAL, so an interface needs nothing of its own to be seen; these
tests hold that true as the interfaces grow their own fast paths."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pymongo
from bson import ObjectId
from websockets.asyncio.client import ClientConnection

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.websocket.wsclient import events, subscribe
from tests.nodeproc import NodeProcess


async def test_grpc_writes_are_captured(
    ws: ClientConnection, api: httpx.AsyncClient, node: NodeProcess, rw_key: str, table_name: str
) -> None:
    sql = f"CREATE TABLE {table_name} (id int, v text)"
    response = await api.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    await subscribe(ws, table_name)
    metadata = [("authorization", f"Bearer {rw_key}")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        begun = await stub.BeginTransaction(pb.BeginTransactionRequest(), metadata=metadata)
        request = pb.QueryRequest(
            sql=f"INSERT INTO {table_name} VALUES ($1, $2)",
            params=[pb.Value(int_value=11), pb.Value(string_value="grpc")],
        )
        request.transaction_id.CopyFrom(begun.transaction_id)
        await stub.ExecuteQuery(request, metadata=metadata)
        await stub.ExecuteQuery(
            pb.QueryRequest(sql=f"UPDATE {table_name} SET v = 'grpc, outside' WHERE id = 11"),
            metadata=metadata,
        )  # outside the transaction, which has not committed: changes nothing
        await stub.CommitTransaction(begun.transaction_id, metadata=metadata)
        await stub.ExecuteQuery(
            pb.QueryRequest(sql=f"UPDATE {table_name} SET v = 'grpc, after' WHERE id = 11"),
            metadata=metadata,
        )
    inserted, updated = await events(ws, 2)
    assert inserted["data"]["event_type"] == "INSERT"
    assert inserted["data"]["row"] == {"id": 11, "v": "grpc"}
    assert updated["data"]["event_type"] == "UPDATE"
    assert updated["data"]["row"] == {"id": 11, "v": "grpc, after"}
    assert updated["data"]["old_row"] == {"id": 11, "v": "grpc"}


async def test_mongodb_writes_are_captured(
    ws: ClientConnection, node: NodeProcess, rw_key: str
) -> None:
    database, collection = f"ws_{uuid.uuid4().hex[:8]}", "orders"
    uri = f"mongodb://apikey:{rw_key}@127.0.0.1:{node.ports['mongodb']}/?authSource=admin"
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    try:
        orders = client[database][collection]
        await asyncio.to_thread(orders.insert_one, {"_id": 1, "status": "new"})  # creates it
        await subscribe(ws, f"{database}.{collection}", events=["INSERT", "UPDATE", "DELETE"])
        oid = ObjectId()
        await asyncio.to_thread(orders.insert_one, {"_id": oid, "status": "new", "qty": 2})
        await asyncio.to_thread(orders.update_one, {"_id": oid}, {"$inc": {"qty": 3}})
        await asyncio.to_thread(orders.delete_one, {"_id": oid})
        inserted, updated, deleted = await events(ws, 3)
    finally:
        client.close()
    assert [m["data"]["event_type"] for m in (inserted, updated, deleted)] == [
        "INSERT",
        "UPDATE",
        "DELETE",
    ]
    assert inserted["data"]["schema"] == database and inserted["data"]["table"] == collection
    assert inserted["data"]["row"]["doc"]["status"] == "new"
    assert inserted["data"]["row"]["doc"]["qty"] == 2
    assert updated["data"]["row"]["doc"]["qty"] == 5
    assert deleted["data"]["old_row"]["doc"]["qty"] == 5 and deleted["data"]["row"] is None
