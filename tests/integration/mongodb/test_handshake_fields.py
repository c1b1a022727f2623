"""What pymongo sees of the node, field by field against a MongoDB 7.0 standalone mongod
(docs/mongodb.md "Handshake"): the hello reply's fields and BSON types, the monitor
polling (no ``topologyVersion``, so no awaitable hello), one command on the wire per
``find_one``/``update_one`` with mongod's reply shapes (cursor id int64 0, so no
killCursors; no ``$clusterTime``/``operationTime``; no ``txnNumber`` on a standalone),
one ``endSessions`` at close, and every reply written in one piece (pymongo reads a
reply with two ``recv`` calls, header then body, and one more each time a reply comes in
pieces)."""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import bson
import pymongo
import pytest
from bson.int64 import Int64
from pymongo import monitoring

from tests.integration.mongodb.conftest import connect, found
from tests.integration.mongodb.test_handshake import _message, _read_reply
from tests.integration.mongodb.test_hotpath import RawClient

# A standalone mongod 7.0's hello reply (pymongo's monitor asks with helloOk) and its
# BSON types, less ``topologyVersion``, which the node leaves out on purpose (see the module
# docstring of commands/handshake.py): int is int32, Int64 int64, float double.
MONGOD_HELLO: dict[str, type] = {
    "isWritablePrimary": bool,
    "helloOk": bool,
    "maxBsonObjectSize": int,
    "maxMessageSizeBytes": int,
    "maxWriteBatchSize": int,
    "localTime": datetime.datetime,
    "logicalSessionTimeoutMinutes": int,
    "connectionId": int,
    "minWireVersion": int,
    "maxWireVersion": int,
    "readOnly": bool,
    "ok": float,
}
# Fields a mongod adds only as a replica set member, mongos or load balancer, or that
# would switch the drivers' monitors to awaitable hello, or gossip cluster time.
NEVER = {"topologyVersion", "setName", "hosts", "msg", "serviceId", "isreplicaset",
         "$clusterTime", "operationTime", "electionId", "lastWrite"}  # fmt: skip


def _op_msg_hello(sock: socket.socket, body: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(_message(1, 2013, b"\x00\x00\x00\x00\x00" + bson.encode(body)))
    op_code, data = _read_reply(sock)
    assert op_code == 2013 and data[:5] == b"\x00\x00\x00\x00\x00"
    return bson.decode(data[5:])


def test_hello_reply_has_mongods_fields_and_types(mongo_port: int) -> None:
    with socket.create_connection(("127.0.0.1", mongo_port), timeout=10) as sock:
        hello = _op_msg_hello(sock, {"hello": 1, "helloOk": True, "$db": "admin"})
        assert hello.keys() == MONGOD_HELLO.keys()
        for name, kind in MONGOD_HELLO.items():
            assert type(hello[name]) is kind, name
        assert hello["isWritablePrimary"] is True and hello["readOnly"] is False
        assert hello["ok"] == 1.0 and hello["logicalSessionTimeoutMinutes"] == 30
        assert (hello["minWireVersion"], hello["maxWireVersion"]) == (0, 21)
        assert hello["localTime"].microsecond % 1000 == 0  # a BSON date: milliseconds
        legacy = _op_msg_hello(sock, {"isMaster": 1, "$db": "admin"})
        assert legacy.keys() == {"ismaster"} | MONGOD_HELLO.keys() - {
            "isWritablePrimary",
            "helloOk",
        }
        assert legacy["ismaster"] is True
        assert legacy["connectionId"] == hello["connectionId"]
        assert not NEVER & (hello.keys() | legacy.keys())


class Heartbeats(monitoring.ServerHeartbeatListener):
    def __init__(self) -> None:
        self.replies: list[tuple[bool, dict[str, Any]]] = []

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.replies.append((event.awaited, dict(event.reply.document)))

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        pass


def test_pymongo_monitor_polls_a_standalone_with_sessions(mongo_port: int, rw_key: str) -> None:
    heartbeats = Heartbeats()
    with connect(
        mongo_port, rw_key, heartbeatFrequencyMS=500, event_listeners=[heartbeats]
    ) as client:
        client.admin.command("ping")
        deadline = time.monotonic() + 30
        while len(heartbeats.replies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        (server,) = client.topology_description.server_descriptions().values()
        assert server.server_type == pymongo.server_type.SERVER_TYPE.Standalone
        assert server.topology_version is None  # so the monitor polls, never awaits
        assert server.logical_session_timeout_minutes == 30  # implicit sessions
        assert len(heartbeats.replies) >= 2
        assert not any(awaited for awaited, _ in heartbeats.replies)
        assert not any(NEVER & reply.keys() for _, reply in heartbeats.replies)


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.started_: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.lock:
            taken = self.started_, self.replies
            self.started_, self.replies = [], []
        return taken

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self.lock:
            self.started_.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        with self.lock:
            self.replies.append(dict(event.reply))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        raise AssertionError(f"{event.command_name} failed: {event.failure}")


def _one_command(commands: Commands, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one command an operation sent and its reply (a second one, a getMore or a
    killCursors, would be a round trip more than against a mongod)."""
    started, replies = commands.take()
    assert [next(iter(c)) for c in started] == [name]
    assert len(replies) == 1
    command, reply = started[0], replies[0]
    assert "lsid" in command and "txnNumber" not in command
    assert not NEVER & reply.keys()
    assert type(reply["ok"]) is float and reply["ok"] == 1.0
    return command, reply


def _check_find(commands: Commands, found_docs: int) -> None:
    command, reply = _one_command(commands, "find")
    assert command["limit"] == 1 and command["singleBatch"] is True
    assert list(reply) == ["cursor", "ok"]
    cursor = reply["cursor"]
    assert list(cursor) == ["firstBatch", "id", "ns"]
    assert type(cursor["id"]) is Int64 and cursor["id"] == 0
    assert len(cursor["firstBatch"]) == found_docs


def test_find_one_and_update_one_are_one_command_each(mongo_port: int, rw_key: str) -> None:
    commands = Commands()
    with connect(mongo_port, rw_key, event_listeners=[commands]) as client:
        coll = client.t_fields_sync.items
        coll.drop()
        coll.insert_many([{"_id": f"d{i}", "k": f"key-{i}", "n": i} for i in range(20)])
        coll.create_index("k")
        commands.take()
        for i in range(3):  # each one more than once: the node's fast paths learn
            assert found(coll.find_one({"_id": f"d{i}"}))["n"] == i
            _check_find(commands, 1)
            assert found(coll.find_one({"k": f"key-{i}"}))["n"] == i
            _check_find(commands, 1)
            assert coll.find_one({"_id": "missing"}) is None
            _check_find(commands, 0)
            assert coll.update_one({"_id": f"d{i}"}, {"$inc": {"n": 1}}).modified_count == 1
            _, reply = _one_command(commands, "update")
            assert list(reply) == ["n", "nModified", "ok"]
            assert coll.insert_one({"_id": f"new{i}"}).inserted_id == f"new{i}"
            _, reply = _one_command(commands, "insert")
            assert list(reply) == ["n", "ok"]
        lsids = {bytes(c["lsid"]["id"]) for c in commands.started_}
        client.drop_database("t_fields_sync")
        commands.take()
    started, _ = commands.take()  # close() ends the client's pooled sessions at once
    assert [next(iter(c)) for c in started] == ["endSessions"]
    assert lsids <= {bytes(s["id"]) for s in started[0]["endSessions"]}


async def test_async_client_find_one_is_one_command(mongo_port: int, rw_key: str) -> None:
    from tests.integration.mongodb.conftest import mongo_uri

    commands = Commands()
    client: pymongo.AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(
        mongo_uri(mongo_port, rw_key), event_listeners=[commands]
    )
    try:
        coll = client.t_fields_async.items
        await coll.insert_one({"_id": "a", "n": 1})
        commands.take()
        for _ in range(3):
            assert found(await coll.find_one({"_id": "a"}))["n"] == 1
            _check_find(commands, 1)
            await coll.update_one({"_id": "a"}, {"$set": {"m": 2}})
            _one_command(commands, "update")
        await client.drop_database("t_fields_async")
    finally:
        await client.close()


@pytest.fixture
async def counted(mongo_port: int, rw_key: str) -> AsyncIterator[tuple[RawClient, list[int]]]:
    """An authenticated raw client and the size of each piece its socket received."""
    client = await RawClient.connect(mongo_port, rw_key)
    protocol = client.writer.transport.get_protocol()
    assert isinstance(protocol, asyncio.StreamReaderProtocol)
    pieces: list[int] = []
    received = protocol.data_received

    def data_received(data: bytes) -> None:
        pieces.append(len(data))
        received(data)

    protocol.data_received = data_received  # type: ignore[method-assign]
    yield client, pieces
    await client.close()


async def test_each_reply_arrives_in_one_piece(counted: tuple[RawClient, list[int]]) -> None:
    client, pieces = counted
    db = "t_fields_pieces"
    await client.command(
        {"insert": "items", "documents": [{"_id": i, "k": i} for i in range(5)]}, db
    )
    await client.command(
        {"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k"}]}, db
    )
    bodies: list[dict[str, Any]] = [
        {"hello": 1},
        {"ping": 1},
        {"find": "items", "filter": {"_id": 1}, "limit": 1, "singleBatch": True},  # hot path
        {"find": "items", "filter": {"k": 2}, "limit": 1, "singleBatch": True},
        {"find": "items", "filter": {"_id": 3}, "limit": 1, "comment": "normal path"},
        {"update": "items", "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}]},
        {"update": "items", "updates": [{"q": {"_id": 2}, "u": {"$set": {"n": 1}}}],
         "comment": "normal path"},
        {"aggregate": "items", "pipeline": [{"$match": {"k": {"$gt": 1}}}], "cursor": {}},
    ]  # fmt: skip
    for _ in range(3):
        for body in bodies:
            pieces.clear()
            reply = await client.command(body, db)
            assert bson.decode(reply)["ok"] == 1.0
            # the whole frame (header, flags, kind byte, document) in one piece
            assert pieces == [16 + 5 + len(reply)], body
    await client.command({"dropDatabase": 1}, db)
