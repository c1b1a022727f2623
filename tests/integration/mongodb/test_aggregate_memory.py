"""An aggregate holds a bounded part of the node's memory.

A stage the node runs in Python that keeps documents before it returns any (``$group``,
``$sort``, ``$facet``, ``$lookup``'s joined arrays...) counts the BSON size of what it
keeps; past ``mongodb.max_stage_bytes`` (MongoDB's 100 MB) the aggregate fails with
QueryExceededMemoryLimitNoDiskUseAllowed (292), as MongoDB does without
``allowDiskUse``. The node does not spill to disk: with ``allowDiskUse: true`` the
stage fails all the same, with ExceededMemoryLimit (146) and a message saying so.

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
DOCUMENTS = 3000
PAD = "x" * 1000  # about 1 KiB a document: 3 MB in all, three times the stage limit

Client = pymongo.MongoClient[dict[str, Any]]


@pytest.fixture(scope="module")
def node(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """This module's node, on the session's engine (one engine per test session)."""
    env = {"HELIOSDB_MONGODB__MAX_STAGE_BYTES": str(STAGE_BYTES)}
    yield from node.running_beside(tmp_path_factory.mktemp("aggregate_memory") / "data", env)


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[Client]:
    yield from admin_client(node)


@pytest.fixture(scope="module")
def big(client: Client) -> Collection[dict[str, Any]]:
    coll = client["aggmemory"]["big"]
    coll.drop()
    for start in range(0, DOCUMENTS, 500):
        coll.insert_many([{"_id": i, "n": i % 10, "pad": PAD} for i in range(start, start + 500)])
    return coll


def refused(coll: Collection[dict[str, Any]], stages: list[dict[str, Any]], **kw: Any) -> Any:
    with pytest.raises(OperationFailure) as caught:
        list(coll.aggregate(stages, **kw))
    return caught.value


def test_a_group_keeping_more_than_the_limit_fails_with_292_naming_the_stage(
    big: Collection[dict[str, Any]],
) -> None:
    error = refused(big, [{"$group": {"_id": "$n", "pads": {"$push": "$pad"}}}])
    assert error.code == 292
    assert error.details is not None
    assert error.details["codeName"] == "QueryExceededMemoryLimitNoDiskUseAllowed"
    assert "$group" in str(error.details["errmsg"])
    assert "allowDiskUse" in str(error.details["errmsg"])


def test_the_node_goes_on_and_the_data_stays_after_a_refused_stage(
    big: Collection[dict[str, Any]],
) -> None:
    refused(big, [{"$group": {"_id": None, "all": {"$push": "$$ROOT"}}}])
    assert big.count_documents({}) == DOCUMENTS
    assert big.find_one({"_id": 7}) == {"_id": 7, "n": 7, "pad": PAD}


def test_a_sort_run_in_the_node_over_more_than_the_limit_fails_with_292(
    big: Collection[dict[str, Any]],
) -> None:
    # a computed field first: the sort runs in the node, not in the engine
    stages: list[dict[str, Any]] = [
        {"$addFields": {"m": {"$mod": ["$_id", 7]}}},
        {"$sort": {"m": 1}},
    ]
    error = refused(big, stages)
    assert error.code == 292
    assert "$sort" in str(error.details)


def test_a_lookup_whose_joined_arrays_pass_the_limit_fails_with_292(
    big: Collection[dict[str, Any]],
) -> None:
    stages: list[dict[str, Any]] = [
        {"$limit": 5},
        {"$lookup": {"from": big.name, "localField": "n", "foreignField": "n", "as": "same"}},
    ]
    error = refused(big, stages)
    assert error.code == 292
    assert "$lookup" in str(error.details)


def test_allow_disk_use_does_not_spill_and_says_so_with_146(
    big: Collection[dict[str, Any]],
) -> None:
    stages: list[dict[str, Any]] = [{"$group": {"_id": "$n", "pads": {"$push": "$pad"}}}]
    error = refused(big, stages, allowDiskUse=True)
    assert error.code == 146
    assert "does not spill" in str(error.details)


def test_a_group_keeps_running_values_not_its_documents(
    big: Collection[dict[str, Any]],
) -> None:
    # $first makes it run in the node; the 3 MB of documents pass through, ten rows stay
    stages: list[dict[str, Any]] = [
        {"$sort": {"_id": 1}},
        {
            "$group": {
                "_id": "$n",
                "count": {"$sum": 1},
                "avg": {"$avg": "$_id"},
                "high": {"$max": "$_id"},
                "first": {"$first": "$_id"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    rows = list(big.aggregate(stages))
    assert rows == [
        {
            "_id": n,
            "count": DOCUMENTS // 10,
            "avg": float(sum(range(n, DOCUMENTS, 10))) / (DOCUMENTS // 10),
            "high": DOCUMENTS - 10 + n,
            "first": n,
        }
        for n in range(10)
    ]


def test_a_stage_under_the_limit_still_answers(big: Collection[dict[str, Any]]) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lt": 100}}},
        {"$group": {"_id": "$n", "ids": {"$push": "$_id"}}},
        {"$sort": {"_id": 1}},
    ]
    rows = list(big.aggregate(stages))
    assert rows[3] == {"_id": 3, "ids": list(range(3, 100, 10))}


# -- results larger than the first batch ------------------------------------------------
# A pipeline whose leading $match/$sort/$skip/$limit the engine runs, followed only by
# stages that stream ($match, $project, $addFields, $set, $unset, $unwind,
# $replaceRoot, $replaceWith, $skip, $limit), is read as a find is: the first batch from
# one statement, the rest through the same streaming cursors, its later stages applied
# a chunk at a time.

HUGE = 30_000  # about 30 MiB


@pytest.fixture(scope="module")
def huge(client: Client) -> Collection[dict[str, Any]]:
    coll = client["aggmemory"]["huge"]
    coll.drop()
    for start in range(0, HUGE, 1000):  # small messages: the node keeps no big buffer
        coll.insert_many([{"_id": i, "n": i % 100, "pad": PAD} for i in range(start, start + 1000)])
    return coll


def test_open_aggregate_cursors_hold_about_a_batch_of_node_memory(
    node: NodeProcess, huge: Collection[dict[str, Any]]
) -> None:
    # Four cursors open at once over a 30 MiB result: built whole, they would hold
    # 120 MiB; streamed, each holds a batch.
    before = rss_bytes(node)
    pipelines: list[list[dict[str, Any]]] = [
        [{"$match": {}}],
        [{"$match": {"n": {"$gte": 0}}}, {"$addFields": {"m": 1}}],
        [{"$sort": {"_id": -1}}, {"$project": {"pad": 1}}],
        [{"$set": {"k": "$n"}}, {"$unset": "n"}],
    ]
    cursors = [huge.aggregate(p, batchSize=100) for p in pipelines]
    for cursor in cursors:
        for _ in range(250):
            next(cursor)
    grown = rss_bytes(node) - before
    assert grown < HUGE * len(PAD), grown
    for cursor in cursors:
        cursor.close()


def test_a_large_match_aggregate_read_in_batches_equals_the_data(
    huge: Collection[dict[str, Any]],
) -> None:
    found = list(huge.aggregate([{"$match": {}}], batchSize=500))
    assert sorted(d["_id"] for d in found) == list(range(HUGE))
    assert all(d == {"_id": d["_id"], "n": d["_id"] % 100, "pad": PAD} for d in found)


def test_streaming_stages_after_the_engine_count_skip_and_limit_across_batches(
    huge: Collection[dict[str, Any]],
) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"n": {"$lt": 50}}},
        {"$sort": {"_id": 1}},
        {"$project": {"pad": 0}},
        {"$addFields": {"twice": {"$multiply": ["$_id", 2]}}},
        {"$match": {"n": {"$ne": 7}}},
        {"$skip": 1500},
        {"$limit": 4000},
    ]
    wanted = [
        {"_id": i, "n": i % 100, "twice": 2 * i}
        for i in range(HUGE)
        if i % 100 < 50 and i % 100 != 7
    ][1500:5500]
    assert list(huge.aggregate(stages, batchSize=100)) == wanted


def test_an_unwind_streams_across_batches(huge: Collection[dict[str, Any]]) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lt": 3000}}},
        {"$sort": {"_id": 1}},
        {"$project": {"pair": ["$_id", "$n"]}},
        {"$unwind": "$pair"},
    ]
    found = list(huge.aggregate(stages, batchSize=101))
    assert found == [{"_id": i, "pair": value} for i in range(3000) for value in (i, i % 100)]


# -- a $group, $sortByCount or $count the node runs reads its input a chunk at a time ----


def test_a_group_in_the_node_reads_its_input_a_chunk_at_a_time(
    node: NodeProcess, huge: Collection[dict[str, Any]]
) -> None:
    # a computed key: the engine cannot run this $group; 30 MiB pass through the node
    peak = rss_bytes(node, "VmHWM")
    stages: list[dict[str, Any]] = [
        {"$sort": {"_id": 1}},
        {
            "$group": {
                "_id": {"$mod": ["$_id", 3]},
                "count": {"$sum": 1},
                "first": {"$first": "$_id"},
                "pad": {"$last": "$pad"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    rows = list(huge.aggregate(stages))
    assert rss_bytes(node, "VmHWM") - peak < HUGE * len(PAD)
    assert rows == [{"_id": r, "count": HUGE // 3, "first": r, "pad": PAD} for r in range(3)]


def test_streaming_stages_before_a_group_run_on_each_chunk(
    huge: Collection[dict[str, Any]],
) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"n": {"$lt": 10}}},
        {"$project": {"n": 1, "tens": {"$floor": {"$divide": ["$_id", 10000]}}}},
        {"$match": {"n": {"$ne": 3}}},
        {"$sortByCount": "$tens"},
    ]
    # 3 tens of 10,000 ids, 9 of each 100 kept: 900 each
    assert list(huge.aggregate(stages)) in (
        [{"_id": t, "count": 900} for t in order]
        for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    )
    assert list(huge.aggregate([{"$unwind": "$pad"}, {"$count": "all"}])) == [{"all": HUGE}]
    assert list(huge.aggregate([{"$match": {"n": -1}}, {"$count": "all"}])) == []


def test_a_sort_in_the_node_under_the_limit_gets_its_chunks_together(
    huge: Collection[dict[str, Any]],
) -> None:
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lt": 2500}}},
        {"$project": {"pad": 0}},
        {"$addFields": {"m": {"$mod": ["$_id", 7]}}},
        {"$sort": {"m": 1, "_id": 1}},
        {"$limit": 400},
    ]
    wanted = sorted(
        ({"_id": i, "n": i % 100, "m": i % 7} for i in range(2500)),
        key=lambda d: (d["m"], d["_id"]),
    )[:400]
    assert list(huge.aggregate(stages, batchSize=50)) == wanted


def test_a_lookup_streams_with_one_query_a_chunk(
    client: Client, huge: Collection[dict[str, Any]]
) -> None:
    names = client["aggmemory"]["names"]
    names.drop()
    names.insert_many([{"_id": n, "name": f"n{n}"} for n in range(100)])
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": {"$lt": 2500}}},
        {"$sort": {"_id": 1}},
        {"$project": {"n": 1}},
        {"$lookup": {"from": "names", "localField": "n", "foreignField": "_id", "as": "j"}},
    ]
    assert list(huge.aggregate(stages, batchSize=101)) == [
        {"_id": i, "n": i % 100, "j": [{"_id": i % 100, "name": f"n{i % 100}"}]}
        for i in range(2500)
    ]


def test_a_sort_in_the_node_past_the_limit_stops_reading_its_input(
    node: NodeProcess, huge: Collection[dict[str, Any]]
) -> None:
    peak = rss_bytes(node, "VmHWM")
    stages: list[dict[str, Any]] = [{"$addFields": {"m": 1}}, {"$sort": {"m": 1}}]
    assert refused(huge, stages).code == 292
    assert rss_bytes(node, "VmHWM") - peak < HUGE * len(PAD)


def test_an_aggregate_streamed_in_a_transaction_reads_its_snapshot_and_writes(
    client: Client,
) -> None:
    coll = client["aggmemory"]["in_transaction"]
    coll.drop()
    coll.insert_many([{"_id": i, "n": i % 10} for i in range(500)])
    with client.start_session() as session, session.start_transaction():
        coll.insert_one({"_id": 1000, "n": 3}, session=session)
        stages: list[dict[str, Any]] = [{"$match": {}}, {"$addFields": {"k": "$n"}}]
        found = list(coll.aggregate(stages, session=session, batchSize=50))
        assert sorted(d["_id"] for d in found) == [*range(500), 1000]
        grouped = list(coll.aggregate([*stages, {"$count": "all"}], session=session))
        assert grouped == [{"all": 501}]
