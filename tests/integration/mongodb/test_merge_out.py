"""``$merge`` (into, on, whenMatched, whenNotMatched, let) and an atomic ``$out``: the
target replaced in one engine transaction, its indexes kept, unchanged on failure."""

from __future__ import annotations

import threading
from typing import Any

import pymongo
import pytest
from bson.objectid import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

Db = Database[dict[str, Any]]
Coll = Collection[dict[str, Any]]


def failed(code: int, run: Any) -> OperationFailure:
    with pytest.raises(OperationFailure) as raised:
        run()
    assert raised.value.code == code, raised.value.details
    return raised.value


@pytest.fixture()
def pair(db: Db, request: pytest.FixtureRequest) -> tuple[Coll, Coll]:
    """A source of three documents and a target holding _id 1 and 4."""
    name = request.node.name.replace("[", "_").replace("]", "")[:40]
    source, target = db[f"{name}_s"], db[f"{name}_t"]
    source.insert_many([{"_id": i, "k": f"k{i}", "v": i * 10} for i in (1, 2, 3)])
    target.insert_many([{"_id": 1, "k": "k1", "old": True}, {"_id": 4, "k": "k4", "v": 40}])
    return source, target


def merged(source: Coll, target: Coll, **spec: Any) -> list[dict[str, Any]]:
    source.aggregate([{"$merge": {"into": target.name, **spec}}])
    return list(target.find().sort("_id", 1))


def test_merge_defaults_merge_matched_and_insert_the_rest(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    assert merged(source, target) == [
        {"_id": 1, "k": "k1", "old": True, "v": 10},
        {"_id": 2, "k": "k2", "v": 20},
        {"_id": 3, "k": "k3", "v": 30},
        {"_id": 4, "k": "k4", "v": 40},
    ]


def test_merge_short_form_names_the_target(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    source.aggregate([{"$match": {"_id": 2}}, {"$merge": target.name}])
    assert target.find_one({"_id": 2}) == {"_id": 2, "k": "k2", "v": 20}


@pytest.mark.parametrize(
    ("matched", "first"),
    [
        ("replace", {"_id": 1, "k": "k1", "v": 10}),
        ("keepExisting", {"_id": 1, "k": "k1", "old": True}),
        ("merge", {"_id": 1, "k": "k1", "old": True, "v": 10}),
        ([{"$set": {"v": {"$add": ["$$new.v", 1]}}}], {"_id": 1, "k": "k1", "old": True, "v": 11}),
    ],
)
def test_merge_when_matched(pair: tuple[Coll, Coll], matched: Any, first: dict[str, Any]) -> None:
    source, target = pair
    out = merged(source, target, whenMatched=matched)
    assert out[0] == first
    assert [d["_id"] for d in out] == [1, 2, 3, 4]


def test_merge_when_matched_pipeline_with_let(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    spec = {
        "let": {"twice": {"$multiply": ["$v", 2]}},
        "whenMatched": [{"$set": {"v": "$$twice"}}],
        "whenNotMatched": "discard",
    }
    assert merged(source, target, **spec) == [
        {"_id": 1, "k": "k1", "old": True, "v": 20},
        {"_id": 4, "k": "k4", "v": 40},
    ]


def test_merge_when_not_matched_discard_and_fail(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    assert [d["_id"] for d in merged(source, target, whenNotMatched="discard")] == [1, 4]
    before = list(target.find().sort("_id", 1))
    failed(13113, lambda: merged(source, target, whenNotMatched="fail"))
    assert list(target.find().sort("_id", 1)) == before  # one transaction: nothing written


def test_merge_when_matched_fail_is_a_duplicate_key_and_writes_nothing(
    pair: tuple[Coll, Coll],
) -> None:
    source, target = pair
    before = list(target.find().sort("_id", 1))
    failed(11000, lambda: merged(source, target, whenMatched="fail"))
    assert list(target.find().sort("_id", 1)) == before


def test_merge_on_other_fields_needs_a_unique_index(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    failed(51183, lambda: merged(source, target, on="k"))
    target.create_index("k")  # not unique: still refused
    failed(51183, lambda: merged(source, target, on="k"))
    target.create_index([("k", 1), ("old", 1)], unique=True)  # other fields: refused
    failed(51183, lambda: merged(source, target, on="k"))
    target.drop_index("k_1")
    target.create_index("k", unique=True, name="k_unique")
    out = merged(source, target, on="k", whenMatched=[{"$set": {"v": "$$new.v"}}])
    assert [(d["k"], d.get("v")) for d in out] == [
        ("k1", 10),
        ("k2", 20),
        ("k3", 30),
        ("k4", 40),
    ]


def test_merge_on_field_missing_or_array_is_refused(db: Db) -> None:
    db.m_src.insert_many([{"_id": 1, "k": [1, 2]}, {"_id": 2}])
    db.m_dst.create_index("k", unique=True)
    failed(51185, lambda: db.m_src.aggregate([{"$match": {"_id": 1}}, _on_k("m_dst")]))
    failed(51132, lambda: db.m_src.aggregate([{"$match": {"_id": 2}}, _on_k("m_dst")]))


def _on_k(into: str) -> dict[str, Any]:
    return {"$merge": {"into": into, "on": "k", "whenMatched": "replace"}}


def test_merge_replace_may_not_change_the_id(db: Db) -> None:
    db.r_dst.create_index("k", unique=True)
    db.r_dst.insert_one({"_id": 1, "k": "a"})
    db.r_src.insert_one({"_id": 2, "k": "a"})
    failed(66, lambda: db.r_src.aggregate([_on_k("r_dst")]))
    db.r_src.aggregate([{"$project": {"_id": 0}}, _on_k("r_dst")])
    assert list(db.r_dst.find()) == [{"_id": 1, "k": "a"}]


def test_merge_into_another_database_and_a_new_collection(
    pair: tuple[Coll, Coll], client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    source, _ = pair
    other = f"{source.database.name}_x"
    source.aggregate([{"$merge": {"into": {"db": other, "coll": "made"}}}])
    assert client[other].made.count_documents({}) == 3
    client.drop_database(other)


def test_merge_into_the_collection_it_reads(pair: tuple[Coll, Coll]) -> None:
    source, _ = pair
    source.aggregate([{"$set": {"v": {"$add": ["$v", 1]}}}, {"$merge": source.name}])
    assert [d["v"] for d in source.find().sort("_id", 1)] == [11, 21, 31]


def test_merge_generates_an_id_for_documents_without_one(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    source.aggregate([{"$project": {"_id": 0, "k": 1}}, {"$merge": target.name}])
    assert target.count_documents({}) == 5
    assert all(isinstance(d["_id"], (int, ObjectId)) for d in target.find())


def test_merge_results_with_one_key_meet_each_other(db: Db) -> None:
    db.same_src.insert_many([{"_id": 1, "k": "a", "v": 1}, {"_id": 2, "k": "a", "v": 2}])
    db.same_src.insert_one({"_id": 3, "k": "b", "v": 3})
    by_k: list[dict[str, Any]] = [{"$sort": {"_id": 1}}, {"$project": {"_id": "$k", "v": 1}}]
    db.same_src.aggregate([*by_k, {"$merge": "same_dst"}])
    assert list(db.same_dst.find().sort("_id", 1)) == [{"_id": "a", "v": 2}, {"_id": "b", "v": 3}]
    failed(
        11000,
        lambda: db.same_src.aggregate([*by_k, {"$merge": {"into": "x", "whenMatched": "fail"}}]),
    )
    assert db.x.count_documents({}) == 0


def test_merge_of_many_on_a_unique_field(db: Db) -> None:
    db.many_src.insert_many([{"_id": i, "n": i, "v": 0} for i in range(2500)])
    db.many_dst.create_index("n", unique=True)
    db.many_dst.insert_many([{"n": i, "old": True} for i in range(0, 2500, 2)])
    db.many_src.aggregate([{"$project": {"_id": 0}}, {"$merge": {"into": "many_dst", "on": "n"}}])
    assert db.many_dst.count_documents({}) == 2500
    assert db.many_dst.count_documents({"old": True, "v": 0}) == 1250


def test_merge_bad_specs(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    failed(2, lambda: merged(source, target, whenMatched="sometimes"))
    failed(2, lambda: merged(source, target, whenNotMatched="never"))
    failed(40415, lambda: merged(source, target, unknown=1))
    failed(51199, lambda: merged(source, target, let={"a": 1}, whenMatched="merge"))
    failed(40601, lambda: source.aggregate([{"$merge": target.name}, {"$match": {}}]))
    failed(40414, lambda: source.aggregate([{"$merge": {"on": "_id"}}]))


def test_merge_and_out_into_a_view_are_refused(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    source.database.command("create", "a_view", viewOn=target.name, pipeline=[])
    failed(166, lambda: source.aggregate([{"$merge": "a_view"}]))
    failed(166, lambda: source.aggregate([{"$out": "a_view"}]))
    source.database.a_view.drop()


def test_read_only_key_cannot_merge_or_out(
    pair: tuple[Coll, Coll], ro_client: pymongo.MongoClient[dict[str, Any]]
) -> None:
    source, target = pair
    ro_source = ro_client[source.database.name][source.name]
    failed(13, lambda: ro_source.aggregate([{"$merge": target.name}]))
    failed(13, lambda: ro_source.aggregate([{"$out": target.name}]))
    assert target.count_documents({}) == 2


def test_out_replaces_the_target_and_keeps_its_indexes(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    target.create_index("k", unique=True, name="k_unique")
    source.aggregate([{"$match": {"_id": {"$gt": 1}}}, {"$out": target.name}])
    assert list(target.find().sort("_id", 1)) == [
        {"_id": 2, "k": "k2", "v": 20},
        {"_id": 3, "k": "k3", "v": 30},
    ]
    assert "k_unique" in target.index_information()


def test_out_that_fails_leaves_the_target_as_it_was(pair: tuple[Coll, Coll]) -> None:
    source, target = pair
    target.create_index("k", unique=True, name="k_unique")
    before = list(target.find().sort("_id", 1))
    # two results with the same k: the target's unique index refuses the second
    failed(11000, lambda: source.aggregate([{"$set": {"k": "same"}}, {"$out": target.name}]))
    assert list(target.find().sort("_id", 1)) == before
    assert "k_unique" in target.index_information()


def test_out_of_nothing_makes_an_empty_collection(db: Db) -> None:
    db.nothing.aggregate([{"$out": "empty_out"}])
    assert "empty_out" in db.list_collection_names()
    assert db.empty_out.count_documents({}) == 0


def test_out_into_the_collection_it_reads(pair: tuple[Coll, Coll]) -> None:
    source, _ = pair
    source.aggregate([{"$match": {"_id": 3}}, {"$out": source.name}])
    assert list(source.find()) == [{"_id": 3, "k": "k3", "v": 30}]


def test_readers_never_see_a_partial_out(db: Db) -> None:
    big = db.big_out_src
    big.insert_many([{"_id": i, "pad": "x" * 200} for i in range(3000)])
    db.big_out.insert_many([{"_id": i, "old": 1} for i in range(3000)])
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(db.big_out.count_documents({}))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            big.aggregate([{"$out": "big_out"}])
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) == {3000}
