"""Read-only views: ``create`` with ``viewOn`` and ``pipeline`` (``db.createView``),
listed with ``type: "view"``; find, count, distinct and aggregate run the view's pipeline
over its source first (views on views too); writes and indexes answer
CommandNotSupportedOnView (166); ``collMod`` redefines a view, a cycle is refused;
``drop`` and ``dropDatabase`` remove views."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.integration.mongodb.conftest import mongo_uri
from tests.integration.mongodb.test_node_clients import MONGOSH, _run

Db = Database[dict[str, Any]]


@pytest.fixture(scope="module")
def people(db: Db) -> Db:
    db.people.insert_many(
        [
            {"_id": i, "name": n, "age": a, "tags": t}
            for i, (n, a, t) in enumerate(
                [("ann", 31, ["a", "b"]), ("bob", 17, ["b"]), ("cy", 45, []), ("di", 22, ["c"])]
            )
        ]
    )
    db.command("create", "adults", viewOn="people", pipeline=[{"$match": {"age": {"$gte": 18}}}])
    db.command("create", "adult_names", viewOn="adults", pipeline=[{"$project": {"age": 0}}])
    return db


def failed(code: int, run: Any) -> OperationFailure:
    with pytest.raises(OperationFailure) as raised:
        run()
    assert raised.value.code == code, raised.value.details
    return raised.value


def test_list_collections_shows_views_with_their_definition(people: Db) -> None:
    listed = {c["name"]: c for c in people.list_collections()}
    assert listed["people"]["type"] == "collection"
    assert listed["adults"]["type"] == "view"
    assert listed["adults"]["options"] == {
        "viewOn": "people",
        "pipeline": [{"$match": {"age": {"$gte": 18}}}],
    }
    assert listed["adults"]["info"]["readOnly"] is True
    only_views = [c["name"] for c in people.list_collections(filter={"type": "view"})]
    assert only_views == ["adult_names", "adults"]
    assert "adults" in people.list_collection_names()


def test_find_on_view_runs_its_pipeline_then_the_query(people: Db) -> None:
    assert [d["name"] for d in people.adults.find().sort("_id", 1)] == ["ann", "cy", "di"]
    found = people.adults.find({"age": {"$lt": 40}}, {"_id": 0, "name": 1}).sort("age", -1)
    assert list(found) == [{"name": "ann"}, {"name": "di"}]
    assert [d["_id"] for d in people.adults.find().sort("_id", 1).skip(1).limit(1)] == [2]
    assert people.adults.find_one({"name": "bob"}) is None


def test_find_on_view_over_many_batches_uses_get_more(db: Db) -> None:
    db.many.insert_many([{"i": i} for i in range(250)])
    db.command("create", "even", viewOn="many", pipeline=[{"$match": {"i": {"$mod": [2, 0]}}}])
    got = [d["i"] for d in db.even.find().sort("i", 1).batch_size(10)]
    assert got == list(range(0, 250, 2))


def test_view_on_view_puts_the_inner_pipeline_first(people: Db) -> None:
    assert list(people.adult_names.find({}, {"_id": 0}).sort("name", 1)) == [
        {"name": "ann", "tags": ["a", "b"]},
        {"name": "cy", "tags": []},
        {"name": "di", "tags": ["c"]},
    ]


def test_count_distinct_and_aggregate_on_view(people: Db) -> None:
    assert people.adults.count_documents({}) == 3
    assert people.adults.count_documents({"age": {"$gt": 30}}) == 2
    assert people.command("count", "adults")["n"] == 3
    assert people.adults.estimated_document_count() == 3
    assert sorted(people.adults.distinct("tags")) == ["a", "b", "c"]
    assert people.adults.distinct("name", {"age": {"$gt": 40}}) == ["cy"]
    total = list(people.adults.aggregate([{"$group": {"_id": None, "sum": {"$sum": "$age"}}}]))
    assert total == [{"_id": None, "sum": 98}]


def test_lookup_union_and_graph_lookup_read_a_view(people: Db) -> None:
    people.visits.insert_many([{"_id": 1, "who": "ann"}, {"_id": 2, "who": "bob"}])
    simple = {"from": "adults", "localField": "who", "foreignField": "name", "as": "p"}
    with_let = {
        "from": "adults",
        "let": {"w": "$who"},
        "pipeline": [{"$match": {"$expr": {"$eq": ["$name", "$$w"]}}}, {"$project": {"age": 1}}],
        "as": "p",
    }
    for spec in (simple, with_let):
        joined = people.visits.aggregate([{"$lookup": spec}, {"$sort": {"_id": 1}}])
        assert [[p["age"] for p in d["p"]] for d in joined] == [[31], []]
    union = people.visits.aggregate([{"$unionWith": "adult_names"}, {"$project": {"_id": 0}}])
    assert len(list(union)) == 5
    graph = {
        "from": "adults",
        "startWith": "$who",
        "connectFromField": "name",
        "connectToField": "name",
        "as": "g",
    }
    found = people.visits.aggregate([{"$graphLookup": graph}, {"$sort": {"_id": 1}}])
    assert [len(d["g"]) for d in found] == [1, 0]


def test_writes_and_indexes_on_view_are_refused(people: Db) -> None:
    view = people.adults
    failed(166, lambda: view.insert_one({"name": "x", "age": 50}))
    failed(166, lambda: view.update_one({"name": "ann"}, {"$set": {"age": 1}}))
    failed(166, lambda: view.update_one({"name": "z"}, {"$set": {"age": 1}}, upsert=True))
    failed(166, lambda: view.delete_many({}))
    failed(166, lambda: view.find_one_and_delete({"name": "ann"}))
    failed(166, lambda: view.create_index("name"))
    failed(166, lambda: list(view.list_indexes()))
    failed(166, lambda: view.drop_index("name_1"))
    assert people.people.count_documents({}) == 4


def test_create_refuses_a_taken_name_and_bad_definitions(people: Db) -> None:
    failed(48, lambda: people.command("create", "people", viewOn="adults", pipeline=[]))
    failed(48, lambda: people.command("create", "adults", viewOn="people", pipeline=[]))
    failed(48, lambda: people.command("create", "adults"))
    failed(14, lambda: people.command("create", "v1", viewOn="people", pipeline={"$match": {}}))
    failed(14, lambda: people.command("create", "v2", viewOn=5, pipeline=[]))
    failed(157, lambda: people.command("create", "v3", viewOn="people", pipeline=[{"$out": "x"}]))
    assert "v1" not in people.list_collection_names()


def test_view_on_a_missing_collection_reads_as_empty(db: Db) -> None:
    db.command("create", "ghost_view", viewOn="not_there", pipeline=[])
    assert list(db.ghost_view.find()) == []
    assert db.ghost_view.count_documents({}) == 0
    db.not_there.insert_one({"_id": 1})
    assert list(db.ghost_view.find()) == [{"_id": 1}]


def test_coll_mod_redefines_a_view_and_refuses_a_cycle(db: Db) -> None:
    db.src.insert_many([{"_id": 1, "k": "a"}, {"_id": 2, "k": "b"}])
    db.command("create", "va", viewOn="src", pipeline=[{"$match": {"k": "a"}}])
    db.command("create", "vb", viewOn="va", pipeline=[])
    assert [d["_id"] for d in db.vb.find()] == [1]
    db.command("collMod", "va", viewOn="src", pipeline=[{"$match": {"k": "b"}}])
    assert [d["_id"] for d in db.vb.find()] == [2]
    failed(93, lambda: db.command("collMod", "va", viewOn="vb", pipeline=[]))
    failed(93, lambda: db.command("create", "self", viewOn="self", pipeline=[]))
    failed(238, lambda: db.command("collMod", "src", validator={"k": {"$type": "string"}}))
    assert [d["_id"] for d in db.vb.find()] == [2]


def test_drop_removes_a_view_and_drop_database_its_views(
    client: pymongo.MongoClient[dict[str, Any]],
) -> None:
    other = client[f"v_{uuid.uuid4().hex[:8]}"]
    other.base.insert_one({"_id": 1})
    other.command("create", "gone", viewOn="base", pipeline=[])
    other.command("create", "kept", viewOn="base", pipeline=[])
    other.gone.drop()
    assert sorted(other.list_collection_names()) == ["base", "kept"]
    assert other.base.count_documents({}) == 1
    client.drop_database(other.name)
    assert other.list_collection_names() == []
    other.command("create", "kept", viewOn="base", pipeline=[])  # the name is free again
    client.drop_database(other.name)


def test_rename_of_a_view_or_onto_one(db: Db, client: pymongo.MongoClient[dict[str, Any]]) -> None:
    db.rn_src.insert_one({"_id": 1})
    db.command("create", "rn_view", viewOn="rn_src", pipeline=[])

    def rename(source: str, target: str, **options: Any) -> Any:
        to = f"{db.name}.{target}"
        return client.admin.command("renameCollection", f"{db.name}.{source}", to=to, **options)

    failed(166, lambda: rename("rn_view", "rn_other"))
    failed(48, lambda: rename("rn_src", "rn_view"))
    rename("rn_src", "rn_view", dropTarget=True)
    listed = {c["name"]: c["type"] for c in db.list_collections()}
    assert listed["rn_view"] == "collection" and "rn_src" not in listed
    assert list(db.rn_view.find()) == [{"_id": 1}]


def test_read_only_key_reads_a_view(
    people: Db, ro_client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    view = ro_client[people.name].adults
    assert view.count_documents({}) == 3
    failed(13, lambda: ro_client[people.name].command("create", "v9", viewOn="people"))


@pytest.mark.skipif(not MONGOSH.exists(), reason="mongosh is installed by scripts/test-deps")
def test_mongosh_create_view(mongo_port: int, rw_key: str, tmp_path: Path) -> None:
    name = f"shv_{uuid.uuid4().hex[:8]}"
    uri = mongo_uri(mongo_port, rw_key).replace("/?", f"/{name}?")
    script = (
        "db.items.insertMany([{ n: 1 }, { n: 2 }, { n: 3 }]);"
        'db.createView("big", "items", [{ $match: { n: { $gt: 1 } } }, { $project: { _id: 0 } }]);'
        "const out = { found: db.big.find().sort({ n: 1 }).toArray(),"
        ' views: db.getCollectionInfos({ type: "view" }).map((c) => c.name) };'
        "db.dropDatabase();"
        "print(JSON.stringify(out));"
    )
    out = _run([str(MONGOSH), uri, "--quiet", "--norc", "--eval", script], {}, tmp_path)
    assert out == {"found": [{"n": 2}, {"n": 3}], "views": ["big"]}
