"""A ``$group`` the engine runs returns its groups a batch at a time.

Its rows are read as a find's documents are (services/documents/streaming.py): the
first batch and one more row from one statement, in the order of the group keys, the
rest through an engine cursor; streaming stages after it run on each batch, and a stage
the node holds after it ($sort, $facet...) gets them a chunk at a time, counted against
``mongodb.max_stage_bytes`` (292 past it). So a $group with 300,000 groups no longer
lands whole in the node's memory.

This module runs its own node, on the session's engine, with a stage limit of 1 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from tests.integration.mongodb.conftest import admin_client, rss_bytes
from tests.nodeproc import NodeProcess

STAGE_BYTES = 1024 * 1024
GROUPS = 300_000

Client = pymongo.MongoClient[dict[str, Any]]
Coll = Collection[dict[str, Any]]


@pytest.fixture(scope="module")
def node(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    env = {"HELIOSDB_MONGODB__MAX_STAGE_BYTES": str(STAGE_BYTES)}
    yield from node.running_beside(tmp_path_factory.mktemp("group_streaming") / "data", env)


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[Client]:
    yield from admin_client(node)


@pytest.fixture(scope="module")
def many(client: Client) -> Coll:
    """300,000 documents, each its own group by ``g``."""
    coll = client["groupstream"]["many"]
    coll.drop()
    for start in range(0, GROUPS, 20_000):
        coll.insert_many(
            [{"_id": i, "g": f"k{i:06d}", "n": i % 7} for i in range(start, start + 20_000)]
        )
    return coll


GROUP = {"$group": {"_id": "$g", "total": {"$sum": "$n"}, "top": {"$max": "$_id"}}}


def test_a_sort_after_a_group_past_the_limit_fails_with_292_before_reading_it_all(
    node: NodeProcess, many: Coll
) -> None:
    peak = rss_bytes(node, "VmHWM")
    with pytest.raises(OperationFailure) as caught:
        list(many.aggregate([GROUP, {"$sort": {"total": -1}}]))
    assert caught.value.code == 292
    assert "$sort" in str(caught.value.details)
    assert rss_bytes(node, "VmHWM") - peak < 40 * 1024 * 1024


def test_open_group_cursors_hold_about_a_batch_of_node_memory(
    node: NodeProcess, many: Coll
) -> None:
    # Built whole, each cursor held its 300,000 groups (about 100 MB of Python objects);
    # streamed, a batch.
    list(many.aggregate([GROUP, {"$limit": 1}]))  # warm: statements prepared
    before = rss_bytes(node)
    cursors = [many.aggregate([GROUP], batchSize=100) for _ in range(3)]
    for cursor in cursors:
        for _ in range(250):
            next(cursor)
    grown = rss_bytes(node) - before
    for cursor in cursors:
        cursor.close()
    assert grown < 40 * 1024 * 1024, grown


def test_a_streamed_group_gives_every_group_once(many: Coll) -> None:
    rows = list(many.aggregate([GROUP], batchSize=5000))
    assert len(rows) == GROUPS
    assert len({r["_id"] for r in rows}) == GROUPS
    assert all(r["total"] == int(r["_id"][1:]) % 7 == r["top"] % 7 for r in rows)
    assert rows[:2] == [
        {"_id": "k000000", "total": 0, "top": 0},
        {"_id": "k000001", "total": 1, "top": 1},
    ]


def test_streaming_stages_after_a_group_run_on_each_batch(many: Coll) -> None:
    stages: list[dict[str, Any]] = [
        GROUP,
        {"$match": {"total": 3}},
        {"$project": {"top": 1}},
        {"$skip": 10},
        {"$limit": 2500},
    ]
    wanted = [{"_id": f"k{i:06d}", "top": i} for i in range(3, GROUPS, 7)][10:2510]
    assert list(many.aggregate(stages, batchSize=300)) == wanted


def test_a_sort_after_a_group_under_the_limit_answers(many: Coll) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lt": 1000}}},
        {"$group": {"_id": "$n", "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
    ]
    assert list(many.aggregate(stages)) == [
        {"_id": n, "count": 143 if n < 6 else 142} for n in range(7)
    ]


def test_a_group_after_a_group_reduces_each_chunk(many: Coll) -> None:
    stages: list[dict[str, Any]] = [GROUP, {"$group": {"_id": "$total", "n": {"$sum": 1}}}]
    rows = sorted(many.aggregate(stages), key=lambda r: r["_id"])
    assert rows == [{"_id": t, "n": len(range(t, GROUPS, 7))} for t in range(7)]


def test_a_group_key_of_a_document_with_two_fields_still_groups_in_order(client: Client) -> None:
    coll = client["groupstream"]["ordered"]
    coll.drop()
    coll.insert_many(
        [
            {"_id": 1, "k": {"a": 1, "b": 2}},
            {"_id": 2, "k": {"b": 2, "a": 1}},
            {"_id": 3, "k": {"a": 1, "b": 2}},
            *({"_id": i, "k": i} for i in range(4, 400)),
        ]
    )
    rows = list(coll.aggregate([{"$group": {"_id": "$k", "n": {"$sum": 1}}}], batchSize=10))
    assert len(rows) == 398
    by_key = {repr(r["_id"]): r["n"] for r in rows}
    assert by_key[repr({"a": 1, "b": 2})] == 2
    assert by_key[repr({"b": 2, "a": 1})] == 1


def test_a_group_into_out_is_counted_against_the_limit(client: Client, many: Coll) -> None:
    with pytest.raises(OperationFailure) as caught:
        list(many.aggregate([GROUP, {"$out": "grouped"}]))
    assert caught.value.code == 292
    small: list[dict[str, Any]] = [{"$match": {"_id": {"$lt": 100}}}, GROUP, {"$out": "grouped"}]
    list(many.aggregate(small))
    assert client["groupstream"]["grouped"].count_documents({}) == 100


def test_a_group_of_few_groups_answers_in_its_first_batch(many: Coll) -> None:
    rows = list(many.aggregate([{"$group": {"_id": "$n", "c": {"$sum": 1}}}]))
    assert sorted((r["_id"], r["c"]) for r in rows) == [
        (n, len(range(n, GROUPS, 7))) for n in range(7)
    ]


def test_a_streamed_group_in_a_transaction_reads_its_snapshot(client: Client, many: Coll) -> None:
    with client.start_session() as session, session.start_transaction():
        many.insert_one({"_id": -1, "g": "new", "n": 1}, session=session)
        rows = list(many.aggregate([GROUP], batchSize=1000, session=session))
        assert len(rows) == GROUPS + 1
        session.abort_transaction()
    assert many.count_documents({"_id": -1}) == 0
