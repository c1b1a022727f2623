"""Handshake, authentication, errors and framing, through pymongo and raw sockets."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import bson
import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern

from tests.integration.mongodb.conftest import connect, found, mongo_uri


def test_ping_and_hello(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    assert client.admin.command("ping")["ok"] == 1.0
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["minWireVersion"] == 0 and hello["maxWireVersion"] == 21
    assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
    assert hello["maxMessageSizeBytes"] == 48_000_000
    assert hello["maxWriteBatchSize"] == 100_000
    assert "setName" not in hello and "msg" not in hello
    legacy = client.admin.command("isMaster")
    assert legacy["ismaster"] is True


def test_server_info_commands(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    assert client.server_info()["version"].startswith("7.0")
    admin = client.admin
    assert admin.command("getParameter", 1, featureCompatibilityVersion=1)[
        "featureCompatibilityVersion"
    ] == {"version": "7.0"}
    assert admin.command("getLog", "startupWarnings")["log"] == []
    assert "you" in admin.command("whatsmyuri")
    assert admin.command("hostInfo")["system"]["numCores"] >= 1
    status = admin.command("serverStatus")
    assert status["process"] == "mongod" and status["connections"]["current"] >= 1
    users = admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
    assert users == [{"user": "apikey", "db": "admin"}]
    assert "argv" in admin.command("getCmdLineOpts")
    assert "find" in admin.command("listCommands")["commands"]


def test_scram_sha_256_explicit(mongo_port: int, rw_key: str) -> None:
    with pymongo.MongoClient[dict[str, Any]](
        mongo_uri(mongo_port, rw_key, authMechanism="SCRAM-SHA-256"),
        serverSelectionTimeoutMS=10_000,
    ) as c:
        assert c.admin.command("ping")["ok"] == 1.0


def test_wrong_key_fails_with_code_18(mongo_port: int) -> None:
    with connect(mongo_port, "hdb_sk_not-a-real-key-at-all-000000000000000") as c:
        with pytest.raises(OperationFailure) as failure:
            c.admin.command("ping")
        assert failure.value.code == 18


def test_unknown_user_fails_like_wrong_password(mongo_port: int) -> None:
    uri = f"mongodb://nobody:secret123@127.0.0.1:{mongo_port}/?authSource=admin"
    with pymongo.MongoClient[dict[str, Any]](uri, serverSelectionTimeoutMS=10_000) as c:
        with pytest.raises(OperationFailure) as failure:
            c.admin.command("ping")
        assert failure.value.code == 18
        assert "Authentication failed" in str(failure.value)


def test_unauthenticated_commands_get_unauthorized(mongo_port: int) -> None:
    with pymongo.MongoClient[dict[str, Any]](
        f"mongodb://127.0.0.1:{mongo_port}/", serverSelectionTimeoutMS=10_000
    ) as c:
        assert c.admin.command("ping")["ok"] == 1.0
        with pytest.raises(OperationFailure) as failure:
            c.test.coll.find_one({})
        assert failure.value.code == 13
        assert "find" in str(failure.value)


def test_read_only_key_cannot_write(
    ro_client: pymongo.MongoClient[dict[str, Any]], client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    client.rotest.items.insert_one({"x": 1})
    assert found(ro_client.rotest.items.find_one({"x": 1}))["x"] == 1
    with pytest.raises(OperationFailure) as failure:
        ro_client.rotest.items.insert_one({"x": 2})
    assert failure.value.code == 13
    with pytest.raises(OperationFailure):
        ro_client.rotest.items.update_one({"x": 1}, {"$set": {"x": 3}})
    with pytest.raises(OperationFailure):
        ro_client.rotest.items.drop_indexes()
    assert client.rotest.items.count_documents({}) == 1
    client.drop_database("rotest")


def test_unknown_command_names_itself(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as failure:
        client.admin.command("frobnicate")
    assert failure.value.code == 59
    assert "frobnicate" in str(failure.value)
    assert found(failure.value.details)["codeName"] == "CommandNotFound"


def test_unacknowledged_write_gets_no_reply(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    coll = client.unack.items.with_options(write_concern=WriteConcern(w=0))
    result = coll.insert_one({"x": 1})
    assert not result.acknowledged
    # The connection is still in step: the next acknowledged command gets its own reply.
    for _ in range(50):
        if client.unack.items.count_documents({}) == 1:
            break
    assert client.unack.items.count_documents({}) == 1
    client.drop_database("unack")


@pytest.mark.parametrize("compressor", ["zlib", "snappy", "zstd"])
def test_compression(mongo_port: int, rw_key: str, compressor: str) -> None:
    name = f"cz_{compressor}"
    with connect(mongo_port, rw_key, compressors=compressor) as c:
        before = c.admin.command("serverStatus")["network"]["compression"][compressor]
        c[name].items.insert_many([{"i": i, "text": "x" * 100} for i in range(100)])
        assert [d["i"] for d in c[name].items.find({}).sort("i", 1)] == list(range(100))
        after = c.admin.command("serverStatus")["network"]["compression"][compressor]
        # The node received and sent compressed messages with this compressor.
        assert after["decompressor"]["bytesIn"] > before["decompressor"]["bytesIn"]
        assert after["compressor"]["bytesOut"] > before["compressor"]["bytesOut"]
        c.drop_database(name)


def _message(request_id: int, op_code: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, 0, op_code) + body


def _read_reply(sock: socket.socket) -> tuple[int, bytes]:
    header = _recv(sock, 16)
    length, _, _, op_code = struct.unpack("<iiii", header)
    return op_code, _recv(sock, length - 16)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_legacy_op_query_handshake(mongo_port: int) -> None:
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with socket.create_connection(("127.0.0.1", mongo_port), timeout=10) as sock:
        sock.sendall(_message(1, 2004, body))
        op_code, payload = _read_reply(sock)
        assert op_code == 1
        _flags, cursor_id, _start, count = struct.unpack_from("<iqii", payload)
        assert (cursor_id, count) == (0, 1)
        reply = bson.decode(payload[20:])
        assert reply["ismaster"] is True and reply["helloOk"] is True
        # Any other namespace: the legacy error shape.
        body = struct.pack("<i", 0) + b"test.coll\x00" + struct.pack("<ii", 0, -1) + query
        sock.sendall(_message(2, 2004, body))
        _, payload = _read_reply(sock)
        assert bson.decode(payload[20:])["ok"] == 0.0


def test_op_msg_checksum_and_sequences(mongo_port: int) -> None:
    from heliosdb.interfaces.mongodb.codec import crc32c

    body = bson.encode({"ping": 1, "$db": "admin"})
    payload = struct.pack("<I", 1) + b"\x00" + body
    header = struct.pack("<iiii", 16 + len(payload) + 4, 7, 0, 2013)
    checksum = struct.pack("<I", crc32c(header + payload))
    with socket.create_connection(("127.0.0.1", mongo_port), timeout=10) as sock:
        sock.sendall(header + payload + checksum)
        op_code, reply = _read_reply(sock)
        assert op_code == 2013
        assert bson.decode(reply[5:])["ok"] == 1.0


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack("<iiii", 8, 1, 0, 2013),  # length shorter than a header
        struct.pack("<iiii", 26, 1, 0, 9999) + b"0123456789",  # unknown opcode
        struct.pack("<iiii", 26, 1, 0, 2013)
        + struct.pack("<I", 1 << 5)
        + b"\x00"
        + b"\x05\0\0\0\0",
        struct.pack("<iiii", 30, 1, 0, 2013)
        + struct.pack("<I", 0)
        + b"\x07"
        + b"\x05\0\0\0\0"
        + b"1234",
        struct.pack("<iiii", 25, 1, 0, 2013) + struct.pack("<I", 0) + b"\x00" + b"\xff\0\0\0",
        struct.pack("<iiii", 2**30, 1, 0, 2013),  # beyond maxMessageSizeBytes
    ],
)
def test_malformed_message_closes_connection(
    mongo_port: int, garbage: bytes, client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    with socket.create_connection(("127.0.0.1", mongo_port), timeout=10) as sock:
        sock.sendall(garbage)
        assert sock.recv(100) == b""
    assert client.admin.command("ping")["ok"] == 1.0


def test_scram_sha_1_with_api_key(mongo_port: int, make_key: Any) -> None:
    key = make_key("secret")  # made after the SCRAM-SHA-1 migration: has both verifiers
    with pymongo.MongoClient[dict[str, Any]](
        mongo_uri(mongo_port, key, authMechanism="SCRAM-SHA-1"), serverSelectionTimeoutMS=10_000
    ) as c:
        assert c.admin.command("ping")["ok"] == 1.0
        assert c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
    with (
        pymongo.MongoClient[dict[str, Any]](
            mongo_uri(mongo_port, key + "x", authMechanism="SCRAM-SHA-1"),
            serverSelectionTimeoutMS=10_000,
        ) as c,
        pytest.raises(OperationFailure) as failure,
    ):
        c.admin.command("ping")
    assert failure.value.code == 18


def test_sasl_supported_mechs(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    hello = client.admin.command("hello", saslSupportedMechs="admin.apikey")
    assert hello["saslSupportedMechs"] == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", None])
def test_heliosdb_user_login(node: Any, mongo_port: int, mechanism: str | None) -> None:
    import subprocess
    import sys
    import uuid

    name, password = f"mu_{uuid.uuid4().hex[:8]}", "correct horse battery"
    subprocess.run(
        [sys.executable, "-m", "heliosdb", "users", "create", name, "--data-dir",
         str(node.data_dir)],
        input=password + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    options = {"authMechanism": mechanism} if mechanism else {}
    uri = mongo_uri(mongo_port, password, user=name, **options)
    with pymongo.MongoClient[dict[str, Any]](uri, serverSelectionTimeoutMS=10_000) as c:
        c.userdb.items.insert_one({"by": name})
        assert c.userdb.items.count_documents({"by": name}) == 1
    with (
        pymongo.MongoClient[dict[str, Any]](
            mongo_uri(mongo_port, "wrong password", user=name, **options),
            serverSelectionTimeoutMS=10_000,
        ) as c,
        pytest.raises(OperationFailure) as failure,
    ):
        c.admin.command("ping")
    assert failure.value.code == 18


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    op_code=st.sampled_from([2013, 2004, 2012, 1, 2002]),
    payload=st.binary(max_size=200),
)
def test_random_messages_never_take_the_node_down(
    mongo_port: int, client: pymongo.MongoClient[dict[str, Any]], op_code: int, payload: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", mongo_port), timeout=10) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(payload), 1, 0, op_code) + payload)
        sock.settimeout(5)
        # A reply or a close; no answer only for a valid moreToCome message.
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            sock.recv(1 << 16)
    assert client.admin.command("ping")["ok"] == 1.0
