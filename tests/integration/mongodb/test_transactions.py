"""Multi-document transactions and retryable-write numbers through pymongo sessions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson import Int64
from bson.son import SON
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.read_concern import ReadConcern

from tests.integration.mongodb.conftest import connect

Coll = Collection[dict[str, Any]]
TRANSIENT = "TransientTransactionError"


@pytest.fixture
def coll(db: Database[dict[str, Any]], coll_name: str) -> Coll:
    c = db[coll_name]
    c.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    return c


@pytest.fixture(scope="module")
def other(mongo_port: int, rw_key: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A second client with the same key: another application instance."""
    c = connect(mongo_port, rw_key)
    yield c
    c.close()


def _elsewhere(other: pymongo.MongoClient[dict[str, Any]], coll: Coll) -> Coll:
    return other[coll.database.name][coll.name]


def test_commit_makes_writes_visible_to_others_only_then(
    client: pymongo.MongoClient[dict[str, Any]],
    other: pymongo.MongoClient[dict[str, Any]],
    coll: Coll,
) -> None:
    seen = _elsewhere(other, coll)
    with client.start_session() as s:
        with s.start_transaction():
            coll.insert_one({"_id": 3, "n": 3}, session=s)
            coll.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=s)
            coll.delete_one({"_id": 2}, session=s)
            # The transaction sees its own writes; nobody else does yet.
            assert coll.find_one({"_id": 1}, session=s) == {"_id": 1, "n": 10}
            assert sorted(d["_id"] for d in coll.find({}, session=s)) == [1, 3]
            assert sorted(d["_id"] for d in seen.find()) == [1, 2]
            assert seen.find_one({"_id": 1}) == {"_id": 1, "n": 0}
        assert not s.in_transaction
    assert sorted(d["_id"] for d in seen.find()) == [1, 3]
    assert seen.find_one({"_id": 1}) == {"_id": 1, "n": 10}


def test_abort_discards_every_write(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_many([{"_id": 10}, {"_id": 11}], session=s)
        coll.update_many({}, {"$set": {"n": 99}}, session=s)
        assert coll.count_documents({}, session=s) == 4
        s.abort_transaction()
    assert sorted((d["_id"], d["n"]) for d in coll.find()) == [(1, 0), (2, 0)]


def test_exception_in_the_block_rolls_back(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as s, pytest.raises(RuntimeError), s.start_transaction():
        coll.insert_one({"_id": 5}, session=s)
        raise RuntimeError("application failure")
    assert coll.find_one({"_id": 5}) is None


def test_transaction_reads_one_snapshot(
    client: pymongo.MongoClient[dict[str, Any]],
    other: pymongo.MongoClient[dict[str, Any]],
    coll: Coll,
) -> None:
    with client.start_session() as s, s.start_transaction(read_concern=ReadConcern("snapshot")):
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1, "n": 0}
        _elsewhere(other, coll).update_one({"_id": 1}, {"$set": {"n": 7}})
        _elsewhere(other, coll).insert_one({"_id": 8})
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1, "n": 0}
        assert coll.find_one({"_id": 8}, session=s) is None
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 7}


def test_write_conflict_between_two_sessions(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as first, client.start_session() as second:
        first.start_transaction()
        second.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=first)
        with pytest.raises(OperationFailure) as conflict:
            coll.update_one({"_id": 1}, {"$inc": {"n": 100}}, session=second)
        assert conflict.value.code == 112
        assert conflict.value.has_error_label(TRANSIENT)
        # The conflict aborted the second transaction.
        with pytest.raises(OperationFailure) as gone:
            coll.find_one({"_id": 2}, session=second)
        assert gone.value.code == 251 and gone.value.has_error_label(TRANSIENT)
        second.abort_transaction()
        first.commit_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_write_conflict_with_a_later_commit(
    client: pymongo.MongoClient[dict[str, Any]],
    other: pymongo.MongoClient[dict[str, Any]],
    coll: Coll,
) -> None:
    """A row changed and committed after the snapshot was taken cannot be updated."""
    with client.start_session() as s:
        s.start_transaction()
        assert coll.find_one({"_id": 2}, session=s) is not None
        _elsewhere(other, coll).update_one({"_id": 2}, {"$set": {"n": 5}})
        with pytest.raises(OperationFailure) as conflict:
            coll.update_one({"_id": 2}, {"$set": {"n": 6}}, session=s)
        assert conflict.value.code == 112 and conflict.value.has_error_label(TRANSIENT)
        s.abort_transaction()
    assert coll.find_one({"_id": 2}) == {"_id": 2, "n": 5}


def test_with_transaction_retries_after_a_conflict(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    attempts = 0
    with client.start_session() as s, client.start_session() as blocker:

        def callback(session: ClientSession) -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                # Someone else holds the document: this attempt conflicts.
                blocker.start_transaction()
                coll.update_one({"_id": 1}, {"$set": {"held": True}}, session=blocker)
            elif blocker.in_transaction:
                blocker.abort_transaction()
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
            coll.insert_one({"_id": 20 + attempts}, session=session)
            return "done"

        assert s.with_transaction(callback) == "done"
    assert attempts == 2
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}
    assert sorted(d["_id"] for d in coll.find({"_id": {"$gte": 20}})) == [22]


def test_error_inside_a_transaction_aborts_it(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_one({"_id": 30}, session=s)
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 1}, session=s)
        with pytest.raises(OperationFailure) as failed:
            s.commit_transaction()
        assert failed.value.code == 251
        assert failed.value.has_error_label(TRANSIENT)
    assert coll.find_one({"_id": 30}) is None


def test_collection_created_in_a_transaction(
    client: pymongo.MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    fresh = db["created_in_txn"]
    with client.start_session() as s:
        with s.start_transaction():
            fresh.insert_one({"_id": "a"}, session=s)
            assert fresh.find_one({"_id": "missing"}, session=s) is None
            assert db["never_created"].find_one({}, session=s) is None
            fresh.insert_one({"_id": "b"}, session=s)
        with s.start_transaction():
            db["rolled_back"].insert_one({"_id": 1}, session=s)
            s.abort_transaction()
    assert sorted(d["_id"] for d in fresh.find()) == ["a", "b"]
    assert db["rolled_back"].find_one({}) is None


def test_commands_not_allowed_in_a_transaction(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as s:
        s.start_transaction()
        coll.find_one({}, session=s)
        with pytest.raises(OperationFailure) as failed:
            coll.database.command("count", coll.name, session=s)
        assert failed.value.code == 263
        s.abort_transaction()


def test_bad_read_concern_and_unknown_transaction(
    client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    with client.start_session() as s:
        s.start_transaction(read_concern=ReadConcern("linearizable"))
        with pytest.raises(OperationFailure) as failed:
            coll.find_one({}, session=s)
        assert failed.value.code == 72
        s.abort_transaction()
    with pytest.raises(OperationFailure) as missing:
        coll.database.client.admin.command("commitTransaction")
    assert missing.value.code == 251


def test_read_only_key_reads_in_a_transaction_and_cannot_write(
    ro_client: pymongo.MongoClient[dict[str, Any]], coll: Coll
) -> None:
    mine = ro_client[coll.database.name][coll.name]
    with ro_client.start_session() as s:
        s.start_transaction()
        assert mine.find_one({"_id": 1}, session=s) == {"_id": 1, "n": 0}
        with pytest.raises(OperationFailure) as denied:
            mine.insert_one({"_id": 40}, session=s)
        assert denied.value.code == 13
        s.abort_transaction()


def test_retryable_write_number_is_answered_once(mongo_port: int, rw_key: str, coll: Coll) -> None:
    # A client of its own: its sessions (and their numbers) end with it.
    client = connect(mongo_port, rw_key)
    db = client[coll.database.name]
    with client, client.start_session() as s:
        insert = SON([("insert", coll.name), ("documents", [{"_id": 50}]), ("txnNumber", Int64(7))])
        assert db.command(insert, session=s)["n"] == 1
        # The driver's retry of the same statement: the first reply, no second write.
        assert db.command(insert, session=s)["n"] == 1
        again = SON([("insert", coll.name), ("documents", [{"_id": 51}]), ("txnNumber", Int64(8))])
        assert db.command(again, session=s)["n"] == 1
        with pytest.raises(OperationFailure) as old:
            db.command(
                SON([("insert", coll.name), ("documents", [{"_id": 52}]), ("txnNumber", Int64(3))]),
                session=s,
            )
        assert old.value.code == 225
    assert sorted(d["_id"] for d in coll.find({"_id": {"$gte": 50}})) == [50, 51]


def test_end_session_aborts_its_transaction(mongo_port: int, rw_key: str, coll: Coll) -> None:
    c = connect(mongo_port, rw_key)
    with c:
        s = c.start_session()
        s.start_transaction()
        c[coll.database.name][coll.name].insert_one({"_id": 60}, session=s)
        # What a driver sends for sessions it ends, here for one still in a transaction.
        c.admin.command("endSessions", [s.session_id])
        assert coll.find_one({"_id": 60}) is None
        coll.insert_one({"_id": 60})  # no longer held by the ended transaction
        s.end_session()


def test_abandoned_transaction_expires(mongo_port: int, admin_key: str, coll: Coll) -> None:
    admin = connect(mongo_port, admin_key)
    mine = admin[coll.database.name][coll.name]
    try:
        was = admin.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=1)["was"]
        assert was >= 1
        with admin.start_session() as s:
            s.start_transaction()
            mine.insert_one({"_id": 70}, session=s)
            deadline = time.monotonic() + 60
            while True:  # the statement after the limit finds the transaction gone
                try:
                    mine.find_one({"_id": 70}, session=s)
                except OperationFailure as exc:
                    assert exc.code == 251 and "transactionLifetimeLimitSeconds" in str(exc)
                    break
                assert time.monotonic() < deadline, "the transaction never expired"
                time.sleep(0.2)
            s.abort_transaction()
        assert coll.find_one({"_id": 70}) is None
        params = admin.admin.command("getParameter", 1, transactionLifetimeLimitSeconds=1)
        assert params["transactionLifetimeLimitSeconds"] == 1
    finally:
        admin.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=60)
        admin.close()


def test_set_parameter_needs_an_admin_key(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as denied:
        client.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=5)
    assert denied.value.code == 13
