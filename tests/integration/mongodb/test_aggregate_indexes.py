"""aggregate pipelines, createIndexes/listIndexes/dropIndexes and explain."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from tests.integration.mongodb.conftest import found

Coll = Collection[dict[str, Any]]


@pytest.fixture(scope="module")
def sales(db: Database[dict[str, Any]]) -> Coll:
    coll = db.sales
    coll.insert_many(
        [
            {
                "_id": 1,
                "item": "apple",
                "qty": 5,
                "price": 1.5,
                "tags": ["fruit", "red"],
                "store": 1,
            },
            {"_id": 2, "item": "pear", "qty": 2, "price": 2.0, "tags": ["fruit"], "store": 1},
            {
                "_id": 3,
                "item": "apple",
                "qty": 7,
                "price": 1.5,
                "tags": ["fruit", "red"],
                "store": 2,
            },
            {"_id": 4, "item": "bread", "qty": 1, "price": 3.25, "tags": [], "store": 2},
            {"_id": 5, "item": "milk", "qty": Int64(3), "price": 1.0, "store": 3},
        ]
    )
    db.stores.insert_many([{"_id": 1, "city": "Oslo"}, {"_id": 2, "city": "Rome"}])
    return coll


def run(coll: Coll, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(coll.aggregate(pipeline))


def test_group_pushed_down(sales: Coll) -> None:
    out = run(
        sales,
        [
            {"$match": {"qty": {"$gte": 2}}},
            {
                "$group": {
                    "_id": "$item",
                    "total": {"$sum": "$qty"},
                    "n": {"$sum": 1},
                    "avg": {"$avg": "$price"},
                    "lo": {"$min": "$qty"},
                    "hi": {"$max": "$qty"},
                }
            },
            {"$sort": {"_id": 1}},
        ],
    )
    assert out == [
        {"_id": "apple", "total": 12, "n": 2, "avg": 1.5, "lo": 5, "hi": 7},
        {"_id": "milk", "total": 3, "n": 1, "avg": 1.0, "lo": 3, "hi": 3},
        {"_id": "pear", "total": 2, "n": 1, "avg": 2.0, "lo": 2, "hi": 2},
    ]
    assert run(
        sales, [{"$group": {"_id": None, "c": {"$count": {}}, "s": {"$sum": "$price"}}}]
    ) == [{"_id": None, "c": 5, "s": 9.25}]
    assert (
        run(sales, [{"$match": {"item": "none"}}, {"$group": {"_id": None, "c": {"$sum": 1}}}])
        == []
    )


def test_group_pushed_down_matches_python(db: Database[dict[str, Any]], coll_name: str) -> None:
    # The same $group run in the engine and (after a $project, which stops the pushdown)
    # in Python: numeric types, non-numbers, missing fields and a path used twice.
    coll = db[coll_name]
    coll.insert_many(
        [
            {"g": 1, "h": "x", "n": 1},
            {"g": 1, "h": "x", "n": 2.0},
            {"g": 1, "h": "y", "n": "text"},
            {"g": 2, "h": "x", "n": Int64(5)},
            {"g": 2, "n": None},
            {"h": "x", "n": 2.5},
            {"g": 3, "h": "z"},
        ]
    )
    group = {
        "$group": {
            "_id": {"g": "$g", "h": "$h"},
            "s": {"$sum": "$n"},
            "a": {"$avg": "$n"},
            "lo": {"$min": "$n"},
            "hi": {"$max": "$n"},
            "gs": {"$sum": "$g"},
            "c": {"$count": {}},
        }
    }
    order = {"$sort": {"_id.g": 1, "_id.h": 1}}
    engine = run(coll, [group, order])
    python = run(coll, [{"$project": {"g": 1, "h": 1, "n": 1}}, group, order])
    assert engine == python
    by_key = {(d["_id"].get("g"), d["_id"].get("h")): d for d in engine}
    assert by_key[(None, "x")]["_id"] == {"h": "x"}  # a missing field is left out
    assert by_key[(2, None)]["_id"] == {"g": 2}
    assert [(type(by_key[k]["s"]), by_key[k]["s"]) for k in ((1, "x"), (3, "z"))] == [
        (float, 3.0),  # 1 + 2.0: a double
        (int, 0),
    ]
    assert run(coll, [{"$group": {"_id": "$g", "s": {"$sum": "$g"}}}, {"$sort": {"_id": 1}}]) == [
        {"_id": None, "s": 0},
        {"_id": 1, "s": 3},
        {"_id": 2, "s": 4},
        {"_id": 3, "s": 3},
    ]


def test_group_in_python(sales: Coll) -> None:
    out = run(
        sales,
        [
            {
                "$group": {
                    "_id": {"store": "$store"},
                    "items": {"$push": "$item"},
                    "kinds": {"$addToSet": "$item"},
                    "first": {"$first": "$qty"},
                }
            },
            {"$sort": {"_id.store": 1}},
        ],
    )
    assert out[0] == {
        "_id": {"store": 1},
        "items": ["apple", "pear"],
        "kinds": ["apple", "pear"],
        "first": 5,
    }
    assert len(out) == 3


def test_stages(sales: Coll) -> None:
    assert run(sales, [{"$match": {"tags": "red"}}, {"$count": "n"}]) == [{"n": 2}]
    unwound = run(
        sales,
        [
            {"$unwind": "$tags"},
            {"$group": {"_id": "$tags", "n": {"$sum": 1}}},
            {"$sort": {"n": -1, "_id": 1}},
        ],
    )
    assert unwound == [{"_id": "fruit", "n": 3}, {"_id": "red", "n": 2}]
    projected = run(
        sales,
        [
            {"$match": {"_id": 1}},
            {
                "$project": {
                    "_id": 0,
                    "item": 1,
                    "value": {"$multiply": ["$qty", "$price"]},
                    "upper": {"$toUpper": "$item"},
                }
            },
        ],
    )
    assert projected == [{"item": "apple", "value": 7.5, "upper": "APPLE"}]
    added = run(
        sales,
        [
            {"$match": {"_id": 4}},
            {"$addFields": {"big": {"$gt": ["$price", 3]}}},
            {"$unset": ["tags", "store"]},
        ],
    )
    assert added == [{"_id": 4, "item": "bread", "qty": 1, "price": 3.25, "big": True}]
    page = run(
        sales, [{"$sort": {"qty": -1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"qty": 1}}]
    )
    assert page == [{"_id": 1, "qty": 5}, {"_id": 5, "qty": 3}]
    counted = run(sales, [{"$sortByCount": "$item"}, {"$limit": 1}])
    assert counted == [{"_id": "apple", "count": 2}]
    facets = run(
        sales,
        [
            {
                "$facet": {
                    "n": [{"$count": "n"}],
                    "top": [{"$sort": {"qty": -1}}, {"$limit": 1}, {"$project": {"item": 1}}],
                }
            }
        ],
    )
    assert facets == [{"n": [{"n": 5}], "top": [{"_id": 3, "item": "apple"}]}]
    root = run(sales, [{"$match": {"_id": 2}}, {"$replaceRoot": {"newRoot": {"name": "$item"}}}])
    assert root == [{"name": "pear"}]
    cond = run(
        sales,
        [
            {"$match": {"_id": {"$in": [1, 4]}}},
            {"$sort": {"_id": 1}},
            {"$project": {"_id": 0, "cheap": {"$cond": [{"$lt": ["$price", 2]}, "yes", "no"]}}},
        ],
    )
    assert cond == [{"cheap": "yes"}, {"cheap": "no"}]


def test_lookup(sales: Coll) -> None:
    out = run(
        sales,
        [
            {"$match": {"_id": {"$in": [1, 5]}}},
            {"$sort": {"_id": 1}},
            {
                "$lookup": {
                    "from": "stores",
                    "localField": "store",
                    "foreignField": "_id",
                    "as": "s",
                }
            },
            {"$project": {"_id": 1, "s.city": 1}},
        ],
    )
    assert out == [{"_id": 1, "s": [{"city": "Oslo"}]}, {"_id": 5, "s": []}]


def test_aggregate_errors(sales: Coll) -> None:
    with pytest.raises(OperationFailure) as failure:
        run(sales, [{"$bogus": {}}])
    assert failure.value.code == 40324
    with pytest.raises(OperationFailure):
        run(sales, [{"$project": {"x": {"$nope": 1}}}])


def test_count_documents_and_out(sales: Coll, db: Database[dict[str, Any]]) -> None:
    assert sales.count_documents({"store": 2}) == 2
    assert sales.count_documents({"store": 9}) == 0
    run(sales, [{"$match": {"store": 1}}, {"$project": {"item": 1}}, {"$out": "store1"}])
    assert sorted(d["item"] for d in db.store1.find()) == ["apple", "pear"]


def test_coll_stats_stage(sales: Coll) -> None:
    out = run(sales, [{"$collStats": {"storageStats": {}}}])
    assert out[0]["storageStats"]["count"] == 5


def test_indexes(db: Database[dict[str, Any]]) -> None:
    coll = db.idx
    coll.insert_many([{"a": i, "b": i % 3, "email": f"u{i}@x"} for i in range(50)])
    assert coll.create_index([("a", ASCENDING), ("b", DESCENDING)]) == "a_1_b_-1"
    assert coll.create_index("email", unique=True, name="by_email") == "by_email"
    coll.create_index("when", expireAfterSeconds=3600)
    info = coll.index_information()
    assert info["a_1_b_-1"]["key"] == [("a", 1), ("b", -1)]
    assert info["by_email"]["unique"] is True
    assert info["when_1"]["expireAfterSeconds"] == 3600
    assert set(info) == {"_id_", "a_1_b_-1", "by_email", "when_1"}
    again = db.command(
        "createIndexes", "idx", indexes=[{"key": {"email": 1}, "name": "by_email", "unique": True}]
    )
    assert again["note"] == "all indexes already exist"
    with pytest.raises(DuplicateKeyError) as failure:
        coll.insert_one({"email": "u1@x"})
    assert found(failure.value.details)["keyValue"] == {"email": "u1@x"}
    assert found(failure.value.details)["keyPattern"] == {"email": 1}
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"email": "u2@x"}, {"$set": {"email": "u3@x"}})
    with pytest.raises(OperationFailure):
        coll.create_index("a", name="a_1_b_-1")
    coll.drop_index("a_1_b_-1")
    coll.drop_index([("when", 1)])
    assert set(coll.index_information()) == {"_id_", "by_email"}
    with pytest.raises(OperationFailure) as missing:
        coll.drop_index("nope")
    assert missing.value.code == 27
    coll.drop_indexes()
    assert set(coll.index_information()) == {"_id_"}
    assert list(db.never.list_indexes()) == []


@pytest.mark.parametrize(
    ("keys", "options", "code"),
    [
        ([("$**", 1)], {}, 238),  # a wildcard index: not built, so not pretended
        ([("a.$**", 1)], {}, 238),
        ([("$bad", 1)], {}, 67),
        ([("a..b", 1)], {}, 67),
        ([("s", 1)], {"collation": {"locale": "en"}}, 238),  # a locale's order
        ([("s", 1)], {"collation": {"locale": "simple"}}, None),
    ],
)
def test_index_kinds_not_built_are_refused(
    db: Database[dict[str, Any]],
    keys: list[tuple[str, int]],
    options: dict[str, Any],
    code: int | None,
) -> None:
    coll = db.refused_kinds
    if code is None:
        coll.create_index(keys, **options)
        return
    with pytest.raises(OperationFailure) as refused:
        coll.create_index(keys, **options)
    assert refused.value.code == code
    assert all(i["name"] != "$**_1" for i in coll.list_indexes())


def test_add_fields_into_arrays_and_scalars(db: Database[dict[str, Any]]) -> None:
    # As MongoDB: a field set through an array is set in each element, an element (or a
    # value on the way) that is not a document becomes one; the input stays as it was.
    coll = db.add_into
    coll.insert_one({"_id": 1, "tags": ["a", "b"], "docs": [{"x": 1}, 5, [{"x": 2}]], "n": 3})
    stages: list[dict[str, Any]] = [
        {"$addFields": {"tags.z": 1, "docs.y": "$n", "n.deep": True, "made.new": 0}},
    ]
    assert run(coll, stages) == [
        {
            "_id": 1,
            "tags": [{"z": 1}, {"z": 1}],
            "docs": [{"x": 1, "y": 3}, {"y": 3}, [{"x": 2, "y": 3}]],
            "n": {"deep": True},
            "made": {"new": 0},
        }
    ]
    # the same document in two $facet branches: the first's $set does not reach the second
    facets = run(
        coll,
        [
            {"$project": {"docs": 1}},
            {"$facet": {"set": [{"$set": {"docs.y": 1}}], "plain": []}},
        ],
    )
    assert facets[0]["plain"] == [{"_id": 1, "docs": [{"x": 1}, 5, [{"x": 2}]]}]
    removed = run(coll, [{"$set": {"docs.x": "$$REMOVE"}}, {"$project": {"docs": 1}}])
    assert removed == [{"_id": 1, "docs": [{}, 5, [{}]]}]


def test_unique_index_on_existing_duplicates_fails(db: Database[dict[str, Any]]) -> None:
    db.dupidx.insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(OperationFailure) as failure:
        db.dupidx.create_index("k", unique=True)
    assert failure.value.code == 11000


def _stages(stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan's stages, depth first."""
    inner = stage.get("inputStages") or ([stage["inputStage"]] if "inputStage" in stage else [])
    return [stage, *(s for child in inner for s in _stages(child))]


def test_explain_shows_engine_plan(db: Database[dict[str, Any]]) -> None:
    coll = db.expl
    coll.insert_many([{"_id": i, "n": i, "m": i} for i in range(3000)])
    coll.create_index("n")
    plan = coll.find({"_id": 3}).explain()
    winning = plan["queryPlanner"]["winningPlan"]
    assert "Index" in str(winning["enginePlan"])  # the engine's own plan, beside
    assert [s["stage"] for s in _stages(winning)][:2] == ["FETCH", "IXSCAN"]
    assert _stages(winning)[1]["indexName"] == "_id_"
    assert plan["executionStats"]["nReturned"] == 1  # pymongo asks allPlansExecution
    indexed = coll.find({"n": {"$lt": 10}}).explain()
    names = {s.get("indexName") for s in _stages(indexed["queryPlanner"]["winningPlan"])}
    assert names - {None} == {"n_1"}  # the field's index (and its multikey part)
    stats = indexed["executionStats"]
    assert stats["nReturned"] == 10 and stats["totalKeysExamined"] >= 10
    assert stats["totalDocsExamined"] >= 10 and stats["executionStages"]["stage"] == "FETCH"
    scan = db.command("explain", {"find": "expl", "filter": {"m": 7}}, verbosity="queryPlanner")
    assert "COLLSCAN" in [s["stage"] for s in _stages(scan["queryPlanner"]["winningPlan"])]
    assert "executionStats" not in scan
    stats = db.command("explain", {"find": "expl", "filter": {"m": 7}}, verbosity="executionStats")
    assert stats["executionStats"]["totalDocsExamined"] == 3000
    assert stats["executionStats"]["nReturned"] == 1


def test_queries_use_secondary_indexes(db: Database[dict[str, Any]]) -> None:
    coll = db.planned
    coll.insert_many(
        [{"n": i, "s": f"k{i}", "tags": [i, i + 1] if i % 100 == 0 else i} for i in range(3000)]
    )
    coll.create_index("n")
    coll.create_index("s")
    coll.create_index("tags")
    for query in ({"n": 5}, {"n": {"$gt": 2990}}, {"s": "k7"}, {"n": {"$in": [1, 2]}}):
        plan = str(coll.find(query).explain()["queryPlanner"]["winningPlan"]["enginePlan"])
        assert "hx_" in plan, (query, plan)
    # Array semantics hold on indexed paths: arrays are found through the multikey index.
    assert sorted(d["n"] for d in coll.find({"tags": 101})) == [100, 101]
    assert coll.count_documents({"tags": {"$gte": 2999}}) == 1
    assert coll.count_documents({"n": {"$gte": 10, "$lt": 20}}) == 10
