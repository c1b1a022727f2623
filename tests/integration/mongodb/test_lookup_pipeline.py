"""``$lookup`` with ``let`` and a ``pipeline``.

The sub-pipeline's leading ``$match`` (its ``$expr`` over the let variables and plain
filters), ``$sort``, ``$skip`` and ``$limit`` run in the engine, one statement for a
chunk of input documents; the per-document path (the joined collection read and the
sub-pipeline run in Python for each document) stays for what does not compile. Each
pipeline here is run both ways, the second made to take the per-document path by an
always-true comparison of two fields (``$_id`` with itself), which does not compile,
and the results must be the same, down to the order of each joined array.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.integration.mongodb.conftest import connect
from tests.nodeproc import NodeProcess

Coll = Collection[dict[str, Any]]
SAME = {"$eq": ["$_id", "$_id"]}  # true for every document; keeps a $lookup in Python
WHEN = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def shop(db: Database[dict[str, Any]]) -> Database[dict[str, Any]]:
    customers: list[dict[str, Any]] = [
        {"_id": 1, "name": "ann", "tier": "gold"},
        {"_id": 2, "name": "bob", "tier": "silver"},
        {"_id": 3, "name": "cy"},
        {"_id": "4", "name": "string id"},
        {"_id": 5.0, "name": "double id"},
        {"_id": None, "name": "null id"},
        {"_id": Decimal128("1.1"), "name": "decimal id"},  # no double equals it
    ]
    db.customers.insert_many(customers)
    orders = []
    values: list[Any] = [1, Int64(2), 2.0, "4", 3, None, 5, Decimal128("5"), [1, 2], {"a": 1}]
    for n in range(60):
        order: dict[str, Any] = {"_id": n, "qty": n % 7, "when": WHEN + dt.timedelta(days=n % 5)}
        if n % 11:
            order["cust"] = values[n % len(values)]
        if n % 4 == 0:
            order["status"] = "A"
        elif n % 4 == 1:
            order["status"] = "B"
        orders.append(order)
    orders += [
        {"_id": 100, "cust": 1.1, "qty": 0},
        {"_id": 101, "cust": Decimal128("1.1"), "qty": 0},
    ]
    db.orders.insert_many(orders)
    db.items.insert_many(
        [
            {"_id": i, "order": i % 17, "sku": f"s{i % 5}", "n": i % 9, "at": WHEN}
            for i in range(120)
        ]
    )
    db.items.create_index("order")
    return db


def both_ways(coll: Coll, lookup: dict[str, Any], before: list[Any] | None = None) -> list[Any]:
    """The aggregate's result, after checking it equals the per-document path's."""
    stages = [*(before or []), {"$lookup": lookup}, {"$sort": {"_id": 1}}]
    got = list(coll.aggregate(stages))
    sub = lookup["pipeline"]
    alone = {**lookup, "pipeline": [{"$match": {"$expr": SAME}}, *sub]}
    if sub and "$match" in sub[0]:
        # the same first $match with the field comparison added: one $match, as before
        first = dict(sub[0]["$match"])
        first["$expr"] = {"$and": [first["$expr"], SAME]} if "$expr" in first else SAME
        alone = {**lookup, "pipeline": [{"$match": first}, *sub[1:]]}
    expected = list(coll.aggregate([*(before or []), {"$lookup": alone}, {"$sort": {"_id": 1}}]))
    assert got == expected
    return got


def test_lookup_pipeline_equality_on_a_let_variable(shop: Database[dict[str, Any]]) -> None:
    got = both_ways(
        shop.orders,
        {
            "from": "customers",
            "let": {"c": "$cust"},
            "pipeline": [{"$match": {"$expr": {"$eq": ["$_id", "$$c"]}}}],
            "as": "who",
        },
    )
    by_id = {d["_id"]: d["who"] for d in got}
    assert [c["name"] for c in by_id[10]] == ["ann"]  # cust 1
    assert [c["name"] for c in by_id[1]] == ["bob"]  # Int64(2) equals 2
    assert [c["name"] for c in by_id[2]] == ["bob"]  # and 2.0
    assert [c["name"] for c in by_id[3]] == ["string id"]  # "4" is not 4
    assert [c["name"] for c in by_id[6]] == ["double id"]  # 5 equals 5.0
    assert [c["name"] for c in by_id[7]] == ["double id"]  # and Decimal128("5")
    assert [c["name"] for c in by_id[5]] == ["null id"]  # a null variable meets null
    assert by_id[0] == [{"_id": None, "name": "null id"}]  # a missing field is null
    assert by_id[8] == []  # an array is not its elements in $expr
    assert by_id[9] == []
    assert by_id[100] == []  # the double 1.1 is not the decimal 1.1
    assert [c["name"] for c in by_id[101]] == ["decimal id"]


def test_lookup_pipeline_ranges_plain_filters_sort_skip_limit(
    shop: Database[dict[str, Any]],
) -> None:
    got = both_ways(
        shop.orders,
        {
            "from": "items",
            "let": {"o": "$_id", "q": "$qty"},
            "pipeline": [
                {
                    "$match": {
                        "$expr": {
                            "$and": [
                                {"$eq": ["$order", "$$o"]},
                                {"$gte": ["$n", {"$subtract": ["$$q", 1]}]},
                            ]
                        },
                        "sku": {"$ne": "s3"},
                    }
                },
                {"$sort": {"n": -1}},
                {"$skip": 1},
                {"$limit": 3},
                {"$project": {"_id": 0, "sku": 1, "n": 1}},
            ],
            "as": "items",
        },
    )
    assert any(len(d["items"]) == 3 for d in got)
    for d in got:
        assert all(i["sku"] != "s3" and i["n"] >= d["qty"] - 1 for i in d["items"])
        assert [i["n"] for i in d["items"]] == sorted((i["n"] for i in d["items"]), reverse=True)


def test_lookup_pipeline_without_a_sort_keeps_the_collection_order(
    shop: Database[dict[str, Any]],
) -> None:
    got = both_ways(
        shop.orders,
        {
            "from": "items",
            "let": {"o": "$_id"},
            "pipeline": [{"$match": {"$expr": {"$eq": ["$$o", "$order"]}}}],
            "as": "items",
        },
    )
    assert [i["_id"] for i in got[3]["items"]] == [3, 20, 37, 54, 71, 88, 105]


def test_lookup_pipeline_in_or_not_and_constants(shop: Database[dict[str, Any]]) -> None:
    both_ways(
        shop.customers,
        {
            "from": "orders",
            "let": {"ids": [1, 5, "x", None], "me": "$_id", "t": "$tier"},
            "pipeline": [
                {
                    "$match": {
                        "$expr": {
                            "$or": [
                                {"$in": ["$cust", "$$ids"]},
                                {"$and": [{"$eq": ["$cust", "$$me"]}, {"$ne": ["$$t", "gold"]}]},
                                {"$not": [{"$lt": ["$when", {"$literal": WHEN}]}]},
                            ]
                        }
                    }
                },
                {"$match": {"$expr": {"$lte": ["$qty", 2]}}},
            ],
            "as": "orders",
        },
    )


def test_lookup_pipeline_values_that_stay_in_python_give_the_same(
    shop: Database[dict[str, Any]],
) -> None:
    # let values that are documents and arrays: compared field by field in order
    both_ways(
        shop.orders,
        {
            "from": "orders",
            "let": {"c": "$cust"},
            "pipeline": [{"$match": {"$expr": {"$eq": ["$cust", "$$c"]}}}, {"$count": "n"}],
            "as": "same",
        },
    )


def test_lookup_pipeline_uncorrelated_and_after_a_group(shop: Database[dict[str, Any]]) -> None:
    both_ways(
        shop.orders,
        {"from": "customers", "pipeline": [{"$match": {"tier": {"$exists": True}}}], "as": "t"},
        before=[{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
    )


def test_lookup_pipeline_matches_the_stages_in_their_order(
    shop: Database[dict[str, Any]],
) -> None:
    """Each $match applies where it stands, its plain filters with its $expr (the
    per-document path once applied every $expr first and dropped the filters beside it)."""
    got = list(
        shop.customers.aggregate(
            [
                {"$match": {"_id": 1}},
                {
                    "$lookup": {
                        "from": "orders",
                        "let": {"me": "$_id"},
                        "pipeline": [
                            {"$match": {"$expr": {"$eq": ["$cust", "$$me"]}, "status": "A"}},
                            {"$project": {"cust": "$qty"}},
                            {"$match": {"$expr": {"$gt": ["$cust", 3]}}},
                        ],
                        "as": "o",
                    }
                },
            ]
        )
    )
    # cust 1: orders 0*? -> n % 10 == 0, n % 11 != 0: 10, 20, 30, 40, 50; status A: 20, 40
    assert got[0]["o"] == [{"_id": 20, "cust": 6}, {"_id": 40, "cust": 5}]


def test_lookup_pipeline_from_a_missing_collection_joins_nothing(
    shop: Database[dict[str, Any]],
) -> None:
    got = list(
        shop.customers.aggregate(
            [
                {
                    "$lookup": {
                        "from": "nothing_here",
                        "let": {"me": "$_id"},
                        "pipeline": [{"$match": {"$expr": {"$eq": ["$x", "$$me"]}}}],
                        "as": "o",
                    }
                }
            ]
        )
    )
    assert len(got) == 7 and all(d["o"] == [] for d in got)


def test_lookup_pipeline_over_thousands_of_documents_in_chunks(
    db: Database[dict[str, Any]],
) -> None:
    db.many.insert_many([{"_id": i, "k": i % 700, "oid": ObjectId()} for i in range(2500)])
    db.keys.insert_many([{"_id": i, "k": i % 350} for i in range(1400)])
    lookup = {
        "from": "keys",
        "let": {"k": "$k"},
        "pipeline": [{"$match": {"$expr": {"$eq": ["$k", "$$k"]}}}, {"$sort": {"_id": -1}}],
        "as": "keys",
    }
    got = list(db.many.aggregate([{"$lookup": lookup}, {"$sort": {"_id": 1}}]))
    assert len(got) == 2500
    for doc in got:
        k = doc["k"]
        expected = [i for i in (1050, 700, 350, 0) if k < 350] if k < 350 else []
        assert [j["_id"] for j in doc["keys"]] == [e + k for e in expected]
        assert all(j["k"] == k for j in doc["keys"])
    # through a cursor, batch by batch, the same
    batches = list(db.many.aggregate([{"$lookup": lookup}], batchSize=300))
    assert sorted(batches, key=lambda d: d["_id"]) == got


STAGE_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def small_node(
    node: NodeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    env = {"HELIOSDB_MONGODB__MAX_STAGE_BYTES": str(STAGE_BYTES)}
    yield from node.running_beside(tmp_path_factory.mktemp("lookup_pipeline") / "data", env)


def test_lookup_pipeline_joined_arrays_count_towards_the_stage_limit(
    small_node: NodeProcess,
) -> None:
    assert small_node.admin_key is not None
    client: pymongo.MongoClient[dict[str, Any]] = connect(
        small_node.ports["mongodb"], small_node.admin_key
    )
    try:
        db = client["lookup_limit"]
        db.drop_collection("left")
        db.drop_collection("right")
        db.left.insert_many([{"_id": i, "k": 1} for i in range(50)])
        db.right.insert_many([{"_id": i, "k": 1, "pad": "x" * 1000} for i in range(100)])
        lookup = {
            "from": "right",
            "let": {"k": "$k"},
            "pipeline": [{"$match": {"$expr": {"$eq": ["$k", "$$k"]}}}],
            "as": "r",
        }
        # 100 KiB per document, 50 documents: 5 MB of joined arrays in one chunk
        with pytest.raises(OperationFailure) as caught:
            list(db.left.aggregate([{"$lookup": lookup}]))
        assert caught.value.code == 292
        assert "$lookup" in str(caught.value.details)
        got = list(db.left.aggregate([{"$limit": 5}, {"$lookup": lookup}]))
        assert [len(d["r"]) for d in got] == [100] * 5
    finally:
        client.close()
