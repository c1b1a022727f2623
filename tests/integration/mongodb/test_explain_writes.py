"""explain of update, delete and findAndModify (mongosh ``db.c.explain().updateOne(...)``,
``.deleteMany(...)``, ``.findOneAndUpdate(...)``): MongoDB's UPDATE or DELETE stage over
the scan, and with executionStats what would match and change, writing nothing."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

Db = Database[dict[str, Any]]


@pytest.fixture
def items(db: Db) -> Db:
    db.items.drop()
    db.items.insert_many([{"_id": i, "g": i % 2, "x": 1 if i < 2 else 0} for i in range(10)])
    return db


def _explain(db: Db, command: dict[str, Any], verbosity: str = "executionStats") -> Any:
    return db.command({"explain": command, "verbosity": verbosity})


def _stages(stage: dict[str, Any]) -> list[str]:
    """The stage names from the top down (first inputs)."""
    names = []
    while stage:
        names.append(stage["stage"])
        stage = stage.get("inputStage") or (stage.get("inputStages") or [{}])[0]
    return names


def _unchanged(db: Db) -> None:
    assert sorted(db.items.find(), key=lambda d: d["_id"]) == [
        {"_id": i, "g": i % 2, "x": 1 if i < 2 else 0} for i in range(10)
    ]


def test_update_many_counts_what_would_change(items: Db) -> None:
    # g: 0 holds _id 0, 2, 4, 6, 8; _id 0 has x: 1 already
    reply = _explain(
        items,
        {"update": "items", "updates": [{"q": {"g": 0}, "u": {"$set": {"x": 1}}, "multi": True}]},
    )
    winning = reply["queryPlanner"]["winningPlan"]
    assert _stages(winning)[0] == "UPDATE"
    assert "COLLSCAN" in _stages(winning) or "IXSCAN" in _stages(winning)
    assert winning["sql"].startswith("UPDATE ")
    stages = reply["executionStats"]["executionStages"]
    assert stages["stage"] == "UPDATE"
    assert (stages["nMatched"], stages["nWouldModify"], stages["nWouldUpsert"]) == (5, 4, 0)
    assert reply["executionStats"]["nReturned"] == 0
    assert reply["executionStats"]["totalDocsExamined"] >= 5
    _unchanged(items)


def test_update_one_and_upsert(items: Db) -> None:
    one = _explain(
        items, {"update": "items", "updates": [{"q": {"g": 1}, "u": {"$inc": {"x": 1}}}]}
    )["executionStats"]["executionStages"]
    assert (one["nMatched"], one["nWouldModify"], one["nWouldUpsert"]) == (1, 1, 0)
    upsert = _explain(
        items,
        {"update": "items", "updates": [{"q": {"g": 7}, "u": {"$set": {"x": 1}}, "upsert": True}]},
    )["executionStats"]["executionStages"]
    assert (upsert["nMatched"], upsert["nWouldModify"], upsert["nWouldUpsert"]) == (0, 0, 1)
    replaced = _explain(
        items, {"update": "items", "updates": [{"q": {"_id": 3}, "u": {"g": 1, "x": 0}}]}
    )["executionStats"]["executionStages"]
    assert (replaced["nMatched"], replaced["nWouldModify"]) == (1, 0)  # the same document
    _unchanged(items)


def test_query_planner_does_not_run(items: Db) -> None:
    reply = _explain(
        items,
        {"delete": "items", "deletes": [{"q": {"x": 0}, "limit": 0}]},
        verbosity="queryPlanner",
    )
    assert _stages(reply["queryPlanner"]["winningPlan"])[0] == "DELETE"
    assert reply["queryPlanner"]["winningPlan"]["sql"].startswith("DELETE FROM ")
    assert "executionStats" not in reply


def test_delete_many_and_one(items: Db) -> None:
    many = _explain(items, {"delete": "items", "deletes": [{"q": {"x": 0}, "limit": 0}]})
    assert many["executionStats"]["executionStages"]["stage"] == "DELETE"
    assert many["executionStats"]["executionStages"]["nWouldDelete"] == 8
    one = _explain(items, {"delete": "items", "deletes": [{"q": {"x": 0}, "limit": 1}]})
    assert one["executionStats"]["executionStages"]["nWouldDelete"] == 1
    _unchanged(items)


def test_find_and_modify(items: Db) -> None:
    update = _explain(
        items,
        {
            "findAndModify": "items",
            "query": {"g": 1},
            "sort": {"_id": -1},
            "update": {"$set": {"x": 5}},
        },
    )
    stages = update["executionStats"]["executionStages"]
    assert (stages["stage"], stages["nMatched"], stages["nWouldModify"]) == ("UPDATE", 1, 1)
    remove = _explain(items, {"findAndModify": "items", "query": {"g": 1}, "remove": True})
    assert remove["executionStats"]["executionStages"]["nWouldDelete"] == 1
    _unchanged(items)


def test_explain_of_a_write_needs_write_access_and_no_view(
    items: Db, ro_client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    command = {"delete": "items", "deletes": [{"q": {}, "limit": 0}]}
    with pytest.raises(OperationFailure) as denied:
        _explain(ro_client[items.name], command)
    assert denied.value.code == 13
    items.create_collection("ones", viewOn="items", pipeline=[{"$match": {"x": 1}}])
    try:
        with pytest.raises(OperationFailure) as on_view:
            _explain(items, {"delete": "ones", "deletes": [{"q": {}, "limit": 0}]})
        assert on_view.value.code == 166
    finally:
        items.ones.drop()
    _unchanged(items)


def test_explain_on_a_view_explains_its_aggregate(items: Db) -> None:
    items.create_collection("ones", viewOn="items", pipeline=[{"$match": {"x": 1}}])
    try:
        found = items.command(
            {"explain": {"find": "ones", "filter": {"g": 1}}, "verbosity": "executionStats"}
        )
        assert found["queryPlanner"]["namespace"] == f"{items.name}.items"
        assert found["queryPlanner"]["parsedQuery"] == {"$and": [{"x": 1}, {"g": 1}]}
        assert found["executionStats"]["nReturned"] == 1  # _id 1
        assert "COLLSCAN" in _stages(found["queryPlanner"]["winningPlan"]) or "IXSCAN" in (
            _stages(found["queryPlanner"]["winningPlan"])
        )
        counted = items.command(
            {"explain": {"count": "ones", "query": {}}, "verbosity": "executionStats"}
        )
        assert counted["executionStats"]["nReturned"] == 2
        aggregated = items.command(
            {
                "explain": {
                    "aggregate": "ones",
                    "pipeline": [{"$sort": {"_id": -1}}],
                    "cursor": {},
                },
                "verbosity": "executionStats",
            }
        )
        assert aggregated["executionStats"]["nReturned"] == 2
    finally:
        items.ones.drop()


def test_coll_stats_on_a_view(items: Db) -> None:
    items.create_collection("ones", viewOn="items", pipeline=[{"$match": {"x": 1}}])
    try:
        with pytest.raises(OperationFailure) as failed:
            items.command("collStats", "ones")
        assert failed.value.code == 166
        assert items.command("collStats", "items")["count"] == 10
    finally:
        items.ones.drop()
