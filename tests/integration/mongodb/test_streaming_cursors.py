"""A find larger than its first batch is read from the engine a batch at a time.

The node holds about one batch per open cursor, whatever the result's size: the first
batch comes from one statement, the rest through an engine cursor on a connection held
in a read-only transaction from the first getMore until the rows run out, killCursors,
the end of the logical session, the close of the client connection, or the idle
timeout. At most ``mongodb.max_streaming_cursors`` cursors hold a connection; more
still work, reading each batch with a statement of their own.

This module runs its own node, on the session's engine, with a two-second cursor timeout
and a bound of two.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymongo
import pytest
from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.errors import CursorNotFound, OperationFailure

from heliosdb.services.documents import catalog
from tests.integration.mongodb.conftest import admin_client, connect, rss_bytes
from tests.nodeproc import NodeProcess

DOCUMENTS = 30_000
PAD = "x" * 1000  # about 1 KiB a document
TIMEOUT_SECONDS = 2
BOUND = 2
# The first read of a plain find is 1025 documents (what the node keeps of it serves the
# first getMores): reading past it opens the engine cursor.
PAST_FIRST_READ = 1100

Client = pymongo.MongoClient[dict[str, Any]]


@pytest.fixture(scope="module")
def node(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """This module's node, on the session's engine (one engine per test session)."""
    env = {
        "HELIOSDB_MONGODB__CURSOR_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "HELIOSDB_MONGODB__MAX_STREAMING_CURSORS": str(BOUND),
    }
    yield from node.running_beside(tmp_path_factory.mktemp("streaming") / "data", env)


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[Client]:
    yield from admin_client(node)


@pytest.fixture(scope="module")
def big(client: Client) -> Collection[dict[str, Any]]:
    coll = client["streaming"]["big"]
    for start in range(0, DOCUMENTS, 1000):  # small messages: the node keeps no big buffer
        coll.insert_many([{"_id": i, "n": i % 100, "pad": PAD} for i in range(start, start + 1000)])
    return coll


def held(node: NodeProcess, coll: Collection[dict[str, Any]]) -> int:
    """Engine connections in a transaction whose last statement read ``coll``: the
    connections open cursors hold."""
    target = catalog.table(coll.database.name, coll.name)
    with psycopg.connect(node.engine_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND query LIKE %s",
            (f"%{target}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_none_held(node: NodeProcess, coll: Collection[dict[str, Any]]) -> None:
    for _ in range(600):  # until the node has let go; no assumption on how fast
        if held(node, coll) == 0:
            return
        time.sleep(0.1)
    pytest.fail("an engine connection is still held for a closed cursor")


def test_open_cursors_hold_about_a_batch_of_node_memory(
    node: NodeProcess, client: Client, big: Collection[dict[str, Any]]
) -> None:
    # Four cursors open at once over a 30 MiB result: read whole, they would hold
    # 120 MiB; streamed, each holds a batch.
    before = rss_bytes(node)
    cursors = [big.find({}, batch_size=100) for _ in range(4)]
    for cursor in cursors:
        for _ in range(250):
            next(cursor)
    grown = rss_bytes(node) - before
    assert grown < DOCUMENTS * len(PAD), grown
    for cursor in cursors:
        cursor.close()
    wait_for_none_held(node, big)


def test_a_large_find_reads_every_document_in_batches(big: Collection[dict[str, Any]]) -> None:
    assert [d["_id"] for d in big.find({}, {"pad": 0}, batch_size=1000)] == list(range(DOCUMENTS))
    # default batches: 101 documents, then up to 16 MiB a getMore (30 MiB: cut twice)
    found = list(big.find({}))
    assert sorted(d["_id"] for d in found) == list(range(DOCUMENTS))
    assert all(d == {"_id": d["_id"], "n": d["_id"] % 100, "pad": PAD} for d in found)
    # a limit past the first batch ends the cursor with the last document it allows
    assert len(list(big.find({}).limit(2000))) == 2000
    assert len(list(big.find({"n": 3}, batch_size=7).limit(150))) == 150
    first = big.database.command("find", big.name, limit=150, batchSize=100)["cursor"]
    rest = big.database.command("getMore", first["id"], collection=big.name)["cursor"]
    assert (len(first["firstBatch"]), len(rest["nextBatch"]), rest["id"]) == (100, 50, 0)


def test_sort_skip_limit_and_projection_span_batches(big: Collection[dict[str, Any]]) -> None:
    cursor = big.find({"n": 7}, {"_id": 1}, sort=[("n", -1), ("_id", -1)], skip=3, limit=250)
    found = [d["_id"] for d in cursor.batch_size(40)]
    assert found == [i for i in range(DOCUMENTS - 1, -1, -1) if i % 100 == 7][3:253]
    # sort ties (n) come out whole across batch boundaries
    ties = [d["_id"] for d in big.find({"n": {"$in": [1, 2]}}, {"n": 1}, sort=[("n", 1)])]
    assert sorted(ties) == [i for i in range(DOCUMENTS) if i % 100 in (1, 2)]
    assert len(set(ties)) == len(ties)


def test_rechecked_filters_count_skip_and_limit_across_batches(client: Client) -> None:
    coll = client["streaming"][f"exact_{uuid.uuid4().hex[:8]}"]
    # $type "int" needs the node's check of each row: JSONB keeps no number types
    coll.insert_many([{"_id": i, "k": i if i % 3 else Int64(i)} for i in range(3000)])
    ints = [i for i in range(3000) if i % 3]
    assert [d["_id"] for d in coll.find({"k": {"$type": "int"}}, batch_size=50)] == ints
    cursor = coll.find({"k": {"$type": "int"}}, {"k": 0}, sort=[("_id", 1)], skip=7, limit=1500)
    assert list(cursor.batch_size(64)) == [{"_id": i} for i in ints[7:1507]]
    assert [d["_id"] for d in coll.find({"k": {"$type": "long"}}).limit(-5)] == [0, 3, 6, 9, 12]


def test_killed_cursors_give_their_connection_back(
    node: NodeProcess, big: Collection[dict[str, Any]]
) -> None:
    cursor = big.find({}, batch_size=100)
    for _ in range(PAST_FIRST_READ):  # the engine cursor is open
        next(cursor)
    assert held(node, big) == 1
    cursor.close()
    wait_for_none_held(node, big)


def test_a_client_that_disconnects_leaves_no_connection_held(node: NodeProcess) -> None:
    assert node.admin_key is not None
    other = connect(node.ports["mongodb"], node.admin_key)
    coll = other["streaming"]["big"]
    cursor = coll.find({}, batch_size=100)
    for _ in range(PAST_FIRST_READ):
        next(cursor)
    assert held(node, coll) == 1
    other.close()  # the cursor is still referenced: no killCursors, its session not ended
    wait_for_none_held(node, coll)


def test_a_cursor_reads_on_over_another_connection_after_its_own_closed(
    node: NodeProcess, client: Client, big: Collection[dict[str, Any]]
) -> None:
    # As a driver whose pool dropped the connection a cursor last used: MongoDB keeps
    # the cursor; the node gives the engine connection back and opens a new one later.
    assert node.admin_key is not None
    other = connect(node.ports["mongodb"], node.admin_key)
    session = other.start_session()  # not ended: closing the client does not end it
    db = other[big.database.name]
    first = db.command("find", big.name, batchSize=PAST_FIRST_READ, session=session)["cursor"]
    more = db.command("getMore", first["id"], collection=big.name, session=session)
    assert held(node, big) == 1
    other.close()
    wait_for_none_held(node, big)
    ids = [d["_id"] for d in first["firstBatch"] + more["cursor"]["nextBatch"]]
    cursor_id = more["cursor"]["id"]
    while cursor_id:
        reply = big.database.command("getMore", cursor_id, collection=big.name)["cursor"]
        ids += [d["_id"] for d in reply["nextBatch"]]
        cursor_id = reply["id"]
    assert ids == list(range(DOCUMENTS))


def test_ending_the_session_closes_its_cursors(
    node: NodeProcess, client: Client, big: Collection[dict[str, Any]]
) -> None:
    with client.start_session() as session:
        cursor = big.find({}, batch_size=100, session=session)
        for _ in range(PAST_FIRST_READ):
            next(cursor)
        assert held(node, big) == 1
        client.admin.command("killSessions", [session.session_id])
        wait_for_none_held(node, big)
        with pytest.raises(OperationFailure) as failure:
            list(cursor)
        assert failure.value.code == 43


def test_an_idle_cursor_times_out_and_gives_its_connection_back(
    node: NodeProcess, big: Collection[dict[str, Any]]
) -> None:
    cursor = big.find({}, batch_size=100)
    for _ in range(PAST_FIRST_READ):
        next(cursor)
    assert held(node, big) == 1
    wait_for_none_held(node, big)  # after TIMEOUT_SECONDS without a getMore
    with pytest.raises(CursorNotFound):
        list(cursor)


def test_get_parameter_says_the_idle_cursor_timeout(client: Client) -> None:
    reply = client.admin.command("getParameter", 1, cursorTimeoutMillis=1)
    assert reply["cursorTimeoutMillis"] == TIMEOUT_SECONDS * 1000


def test_cursors_past_the_bound_read_batches_without_a_connection(
    node: NodeProcess, big: Collection[dict[str, Any]]
) -> None:
    cursors = [big.find({"n": {"$lt": 10}}, {"pad": 0}, batch_size=200) for _ in range(BOUND + 2)]
    read: list[list[int]] = [[] for _ in cursors]
    for cursor, ids in zip(cursors, read, strict=True):
        ids.extend(next(cursor)["_id"] for _ in range(PAST_FIRST_READ))
    assert held(node, big) == BOUND
    for cursor, ids in zip(cursors, read, strict=True):
        ids.extend(d["_id"] for d in cursor)
    expected = [i for i in range(DOCUMENTS) if i % 100 < 10]
    assert all(ids == expected for ids in read)
    wait_for_none_held(node, big)


def test_a_cursor_inside_a_transaction_reads_the_transactions_writes(
    node: NodeProcess, client: Client
) -> None:
    coll = client["streaming"][f"txn_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": i} for i in range(500)])
    with client.start_session() as session, session.start_transaction():
        coll.insert_one({"_id": 500}, session=session)
        found = [d["_id"] for d in coll.find({}, batch_size=60, session=session)]
        assert found == list(range(501))
        # a cursor left open ends with its transaction
        cursor = coll.find({}, batch_size=60, session=session)
        next(cursor)
    assert held(node, coll) == 0
    assert coll.count_documents({}) == 501
