"""currentOp, killOp, validate, profile, top, dataSize and getDefaultRWConcern, with
pymongo and mongosh. A slow operation is an aggregate waiting for a lock the test holds
on its collection's table in the engine: it runs until it is killed or the lock goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bson
import psycopg
import pymongo
import pytest
from psycopg import sql
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.integration.engine_activity import until_engine_lets_go
from tests.integration.mongodb.conftest import connect
from tests.integration.mongodb.test_node_clients import MONGOSH, mongosh_script
from tests.nodeproc import NodeProcess

Client = pymongo.MongoClient[dict[str, Any]]


@pytest.fixture(scope="module")
def admin(node: NodeProcess) -> Iterator[Client]:
    assert node.admin_key is not None
    c = connect(node.ports["mongodb"], node.admin_key, appName="op-admin")
    yield c
    c.close()


@contextmanager
def locked(node: NodeProcess, db: str, coll: str) -> Iterator[None]:
    """The collection's table locked in the engine: its statements wait until the end."""
    with psycopg.connect(node.engine_url) as engine:
        engine.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(db, coll))
        )
        yield
        engine.rollback()


def slow_aggregate(pool: ThreadPoolExecutor, c: Client, db: str) -> Future[list[Any]]:
    """An aggregate over ``db.items`` run by ``c`` in the background."""
    return pool.submit(
        lambda: list(c[db].items.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}]))
    )


def op_of(watcher: Client, app: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
    """The operation of the client named ``app`` that matches ``query`` (by default its
    aggregate over ``items``), as ``watcher``'s currentOp shows it (asked until it is
    there: the background thread starts it when it gets to it)."""
    query = query or {"command.aggregate": "items"}
    for _ in range(600):
        ops = watcher.admin.command({"currentOp": 1, "appName": app, **query})
        if ops["inprog"]:
            (op,) = ops["inprog"]
            return dict(op)
        time.sleep(0.05)
    raise AssertionError(f"no operation of {app}")


@pytest.fixture
def items(db: Database[dict[str, Any]]) -> str:
    db.items.drop()
    db.items.insert_many([{"_id": i, "v": i} for i in range(10)])
    return db.name


@pytest.fixture
def named(mongo_port: int, rw_key: str) -> Iterator[tuple[str, Client]]:
    """A client of the read-write key with an appName of its own, and that name."""
    app = f"app-{uuid.uuid4().hex[:6]}"
    c = connect(mongo_port, rw_key, appName=app, retryReads=False)
    yield app, c
    c.close()


def test_currentop_shows_the_running_aggregate_and_killop_interrupts_it(
    node: NodeProcess, named: tuple[str, Client], items: str
) -> None:
    app, slow = named
    with ThreadPoolExecutor(1) as pool, locked(node, items, "items"):
        running = slow_aggregate(pool, slow, items)
        op = op_of(slow, app)
        assert op["active"] is True and op["type"] == "op"
        assert op["ns"] == f"{items}.items"
        assert op["command"]["aggregate"] == "items"
        assert op["command"]["$db"] == items
        assert op["secs_running"] >= 0 and op["microsecs_running"] >= 0
        assert op["desc"] == f"conn{op['connectionId']}"
        assert op["client"].startswith("127.0.0.1:")
        assert op["clientMetadata"]["application"]["name"] == app
        assert "lsid" in op
        # the same op, asked again, keeps its opid
        assert op_of(slow, app)["opid"] == op["opid"]
        assert slow.admin.command("killOp", op=op["opid"])["ok"] == 1.0
        with pytest.raises(OperationFailure) as failed:
            running.result(timeout=60)
        assert failed.value.code == 11601
        assert failed.value.details is not None
        assert failed.value.details["codeName"] == "Interrupted"
        asyncio.run(until_engine_lets_go(node, f'"{items}"."items"'))
    # the connection goes on
    assert slow[items].items.count_documents({}) == 10
    still = slow.admin.command({"currentOp": 1, "appName": app, "command.aggregate": "items"})
    assert still["inprog"] == []


def test_killop_interrupts_a_find(node: NodeProcess, named: tuple[str, Client], items: str) -> None:
    app, slow = named
    with ThreadPoolExecutor(1) as pool, locked(node, items, "items"):
        running = pool.submit(lambda: list(slow[items].items.find({}).sort("v", -1)))
        op = op_of(slow, app, {"op": "query"})
        assert op["ns"] == f"{items}.items" and op["command"]["sort"] == {"v": -1}
        slow.admin.command("killOp", op=op["opid"])
        with pytest.raises(OperationFailure) as failed:
            running.result(timeout=60)
        assert failed.value.code == 11601
    assert slow[items].items.find_one({"_id": 3}) == {"_id": 3, "v": 3}


def test_currentop_shows_a_key_its_own_operations_and_an_admin_key_all(
    node: NodeProcess,
    mongo_port: int,
    make_key: Any,
    admin: Client,
    named: tuple[str, Client],
    items: str,
) -> None:
    app, slow = named
    other = connect(mongo_port, make_key())
    try:
        with ThreadPoolExecutor(1) as pool, locked(node, items, "items"):
            running = slow_aggregate(pool, slow, items)
            opid = op_of(admin, app)["opid"]
            assert other.admin.command("currentOp", appName=app)["inprog"] == []
            own = admin.admin.command({"currentOp": 1, "$ownOps": True, "appName": app})
            assert own["inprog"] == []
            # another key's killOp answers as for an unknown op and kills nothing
            assert other.admin.command("killOp", op=opid)["ok"] == 1.0
            assert op_of(admin, app)["opid"] == opid
            assert admin.admin.command("killOp", op=opid)["ok"] == 1.0
            with pytest.raises(OperationFailure) as failed:
                running.result(timeout=60)
            assert failed.value.code == 11601
    finally:
        other.close()


def test_currentop_all_lists_idle_connections(mongo_port: int, rw_key: str) -> None:
    app = f"idle-{uuid.uuid4().hex[:6]}"
    idle = connect(mongo_port, rw_key, appName=app)
    asking = connect(mongo_port, rw_key, appName=f"{app}-asking")
    try:
        idle.admin.command("ping")
        assert asking.admin.command("currentOp", appName=app)["inprog"] == []
        ops = asking.admin.command({"currentOp": 1, "$all": True, "appName": app})["inprog"]
        assert ops
        assert all(op["active"] is False and "opid" not in op for op in ops)
        assert ops[0]["effectiveUsers"] == [{"user": "apikey", "db": "admin"}]
        # the currentOp command itself is in progress while it answers
        (me,) = asking.admin.command("currentOp", appName=f"{app}-asking")["inprog"]
        assert me["command"]["currentOp"] == 1 and me["ns"] == "admin.$cmd"
        assert me["active"] is True and me["op"] == "command"
    finally:
        idle.close()
        asking.close()


def test_currentop_and_killop_only_on_admin(client: Client) -> None:
    for name in ("currentOp", "killOp"):
        with pytest.raises(OperationFailure) as failed:
            client.test.command(name)
        assert failed.value.code == 13


def test_killop_of_an_unknown_opid_answers_ok(client: Client) -> None:
    assert client.admin.command("killOp", op=987654321) == {
        "info": "attempting to kill op",
        "ok": 1.0,
    }
    with pytest.raises(OperationFailure) as failed:
        client.admin.command("killOp")
    assert failed.value.code == 4


def test_validate_counts_documents_and_keys(db: Database[dict[str, Any]]) -> None:
    coll = db.validated
    coll.insert_many([{"_id": 1, "t": [1, 2, 3], "s": 1}, {"_id": 2, "t": [4]}, {"_id": 3}])
    coll.create_index("t", unique=True, sparse=True)
    coll.create_index("s", sparse=True)
    coll.create_index([("v", 1), ("_id", -1)])
    for full in (False, True):
        out = db.command("validate", "validated", full=full)
        assert out["ns"] == f"{db.name}.validated"
        assert out["valid"] is True and out["errors"] == [] and out["warnings"] == []
        assert out["nrecords"] == 3
        assert out["nIndexes"] == 4
        # a unique index counts each array element, as MongoDB's keys
        assert out["keysPerIndex"] == {"_id_": 3, "t_1": 4, "s_1": 1, "v_1__id_-1": 3}
        assert all(d == {"valid": True} for d in out["indexDetails"].values())
    with pytest.raises(OperationFailure) as failed:
        db.command("validate", "no_such")
    assert failed.value.code == 26
    with pytest.raises(OperationFailure) as failed:
        db.command("validate", "validated", repair=True)
    assert failed.value.code == 238


def test_validate_reports_an_index_the_engine_holds_invalid(
    node: NodeProcess, db: Database[dict[str, Any]]
) -> None:
    db.broken.insert_one({"k": 1})
    db.broken.create_index("k")
    with psycopg.connect(node.engine_url, autocommit=True) as engine:
        (index,) = engine.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = %s::regclass AND NOT indisprimary "
            "AND pg_get_indexdef(indexrelid) NOT LIKE '%%WHERE%%'",
            (sql.Identifier(db.name, "broken").as_string(engine),),
        ).fetchone() or (None,)
        assert index is not None
        engine.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (index,)
        )
    out = db.command("validate", "broken")
    assert out["valid"] is False
    assert out["indexDetails"]["k_1"] == {"valid": False}
    assert len(out["errors"]) == 1 and "'k_1'" in out["errors"][0]
    db.broken.drop()


def test_profile_reads_and_sets_level_zero_only(db: Database[dict[str, Any]]) -> None:
    assert db.command("profile", -1) == {"was": 0, "slowms": 100, "sampleRate": 1.0, "ok": 1.0}
    assert db.command("profile", 0)["was"] == 0
    for level in (1, 2):
        with pytest.raises(OperationFailure) as failed:
            db.command("profile", level)
        assert failed.value.code == 238
    with pytest.raises(OperationFailure) as failed:
        db.command("profile", 0, slowms=5)
    assert failed.value.code == 238
    with pytest.raises(OperationFailure) as failed:
        db.command("profile", 7)
    assert failed.value.code == 2


def test_top_is_not_supported(client: Client) -> None:
    with pytest.raises(OperationFailure) as failed:
        client.admin.command("top")
    assert failed.value.code == 238


def test_data_size_of_a_collection(db: Database[dict[str, Any]]) -> None:
    db.sized.insert_many([{"_id": i, "x": "y" * 10} for i in range(4)])
    out = db.command("dataSize", f"{db.name}.sized")
    assert out["numObjects"] == 4 and out["estimate"] is False
    assert out["size"] == sum(len(bson.encode(d)) for d in db.sized.find())
    assert db.command("dataSize", f"{db.name}.nothing")["numObjects"] == 0


def test_default_rw_concern_and_list_commands(client: Client) -> None:
    out = client.admin.command("getDefaultRWConcern")
    assert out["defaultReadConcern"] == {"level": "local"}
    assert out["defaultWriteConcern"] == {"w": 1, "wtimeout": 0}
    listed = client.admin.command("listCommands")["commands"]
    for name in ("currentOp", "killOp", "validate", "profile", "top", "dataSize"):
        assert name in listed and listed[name]["help"]


@pytest.mark.skipif(not MONGOSH.exists(), reason="mongosh is installed by scripts/test-deps")
def test_mongosh_operation_helpers(mongo_port: int, rw_key: str, tmp_path: Path) -> None:
    out = mongosh_script(
        mongo_port, rw_key, tmp_path, "mongosh_operations.js", appName="mongosh-ops"
    )
    assert out["ownOps"] == [{"op": "command", "ns": "admin.$cmd", "appName": "mongosh-ops"}]
    assert out["killed"] == "attempting to kill op"
    assert out["validate"] == {"valid": True, "nrecords": 3, "nIndexes": 2}
    assert out["profiling"] == {"was": 0, "set": 1, "levelOne": 238}
    assert out["dataSize"] == 3


def test_the_currentop_stage_shows_what_the_command_shows(
    node: NodeProcess, named: tuple[str, Client], items: str
) -> None:
    # mongosh's db.currentOp() is an aggregate on admin whose first stage is $currentOp
    app, slow = named
    with ThreadPoolExecutor(1) as pool, locked(node, items, "items"):
        running = pool.submit(lambda: list(slow[items].items.find({}).sort("v", -1)))
        op = op_of(slow, app, {"op": "query"})
        staged = list(
            slow.admin.aggregate([{"$currentOp": {}}, {"$match": {"appName": app, "op": "query"}}])
        )
        assert [s["opid"] for s in staged] == [op["opid"]]
        assert staged[0]["ns"] == f"{items}.items"
        slow.admin.command("killOp", op=op["opid"])
        with pytest.raises(OperationFailure):
            running.result(timeout=60)
