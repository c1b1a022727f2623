"""``$graphLookup`` through pymongo: a hierarchy, a cyclic graph of arrays, depths and
``maxDepth``, a restricted search, and its option errors with MongoDB's codes."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.database import Database

EMPLOYEES = [
    {"_id": 1, "name": "Dev"},
    {"_id": 2, "name": "Eliot", "reportsTo": "Dev"},
    {"_id": 3, "name": "Ron", "reportsTo": "Eliot"},
    {"_id": 4, "name": "Andrew", "reportsTo": "Eliot"},
    {"_id": 5, "name": "Asya", "reportsTo": "Ron"},
    {"_id": 6, "name": "Dan", "reportsTo": "Andrew"},
]
AIRPORTS = [
    {"_id": 0, "airport": "JFK", "connects": ["BOS", "ORD"]},
    {"_id": 1, "airport": "BOS", "connects": ["JFK", "PWM"]},
    {"_id": 2, "airport": "ORD", "connects": ["JFK"]},
    {"_id": 3, "airport": "PWM", "connects": ["BOS", "LHR"]},
    {"_id": 4, "airport": "LHR", "connects": ["PWM"], "closed": True},
]


@pytest.fixture(scope="module")
def graphs(db: Database[dict[str, Any]]) -> Database[dict[str, Any]]:
    db.employees.insert_many(EMPLOYEES)
    db.airports.insert_many(AIRPORTS)
    db.airports.create_index("airport")
    db.travelers.insert_many(
        [
            {"_id": 1, "name": "Dev", "nearest": "JFK"},
            {"_id": 2, "name": "Eliot", "nearest": "JFK"},
            {"_id": 3, "name": "Jeff", "nearest": "BOS"},
        ]
    )
    return db


def chain(rows: list[dict[str, Any]], field: str, depth: str = "depth") -> list[Any]:
    return sorted((r[depth], r[field]) for r in rows)


def test_graph_lookup_hierarchy(graphs: Database[dict[str, Any]]) -> None:
    stage = {
        "from": "employees",
        "startWith": "$reportsTo",
        "connectFromField": "reportsTo",
        "connectToField": "name",
        "as": "chain",
        "depthField": "depth",
    }
    rows = {d["name"]: d["chain"] for d in graphs.employees.aggregate([{"$graphLookup": stage}])}
    assert chain(rows["Asya"], "name") == [(0, "Ron"), (1, "Eliot"), (2, "Dev")]
    assert chain(rows["Eliot"], "name") == [(0, "Dev")]
    assert rows["Dev"] == []  # no reportsTo: nothing to start from
    assert isinstance(rows["Asya"][0]["depth"], int)


def test_graph_lookup_cyclic_graph_of_arrays(graphs: Database[dict[str, Any]]) -> None:
    def reached(**options: Any) -> list[Any]:
        stage = {
            "from": "airports",
            "startWith": "$nearest",
            "connectFromField": "connects",
            "connectToField": "airport",
            "as": "reach",
            "depthField": "hops",
            **options,
        }
        rows = graphs.travelers.aggregate([{"$match": {"name": "Dev"}}, {"$graphLookup": stage}])
        return chain(next(rows)["reach"], "airport", "hops")

    everything = [(0, "JFK"), (1, "BOS"), (1, "ORD"), (2, "PWM"), (3, "LHR")]
    assert reached() == everything  # JFK and BOS point at each other: each found once
    assert reached(maxDepth=2**62) == everything
    assert reached(maxDepth=1) == everything[:3]
    assert reached(maxDepth=0) == [(0, "JFK")]
    restricted = reached(restrictSearchWithMatch={"closed": {"$ne": True}})
    assert restricted == everything[:4]


def test_graph_lookup_start_with_an_array_and_a_following_unwind(
    graphs: Database[dict[str, Any]],
) -> None:
    stage = {
        "from": "airports",
        "startWith": ["LHR", "ORD"],
        "connectFromField": "connects",
        "connectToField": "airport",
        "maxDepth": 0,
        "as": "reach",
    }
    rows = graphs.travelers.aggregate(
        [
            {"$match": {"_id": 3}},
            {"$graphLookup": stage},
            {"$unwind": "$reach"},
            {"$sort": {"reach.airport": 1}},
            {"$project": {"_id": 0, "a": "$reach.airport"}},
        ]
    )
    assert list(rows) == [{"a": "LHR"}, {"a": "ORD"}]


def test_graph_lookup_array_to_field_and_nulls(db: Database[dict[str, Any]]) -> None:
    db.nodes.insert_many(
        [
            {"_id": "a", "tags": ["x", "y"], "next": "z"},
            {"_id": "b", "tags": "z", "next": None},
            {"_id": "c"},  # no tags: a null value reaches it
        ]
    )
    stage = {
        "from": "nodes",
        "startWith": "y",
        "connectFromField": "next",
        "connectToField": "tags",
        "as": "found",
        "depthField": "d",
    }
    (row,) = db.nodes.aggregate([{"$match": {"_id": "a"}}, {"$graphLookup": stage}])
    assert chain(row["found"], "_id", "d") == [(0, "a"), (1, "b"), (2, "c")]


def test_graph_lookup_empty_and_missing_collections(graphs: Database[dict[str, Any]]) -> None:
    graphs.create_collection("empty")
    for source in ("empty", "never_created"):
        stage = {
            "from": source,
            "startWith": "$nearest",
            "connectFromField": "connects",
            "connectToField": "airport",
            "as": "reach",
        }
        rows = list(graphs.travelers.aggregate([{"$graphLookup": stage}]))
        assert [r["reach"] for r in rows] == [[], [], []]
    assert list(graphs.empty.aggregate([{"$graphLookup": stage}])) == []


GOOD = {
    "from": "airports",
    "startWith": "$nearest",
    "connectFromField": "connects",
    "connectToField": "airport",
    "as": "reach",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"maxDepth": "two"}, 40100),
        ({"maxDepth": -1}, 40101),
        ({"maxDepth": 2.5}, 40102),
        ({"maxDepth": 1e30}, 40102),
        ({"as": 0}, 40103),
        ({"connectFromField": 0}, 40103),
        ({"connectToField": ["a"]}, 40103),
        ({"depthField": 0}, 40103),
        ({"as": "$out"}, 16410),
        ({"connectToField": "$a"}, 16410),
        ({"restrictSearchWithMatch": "x"}, 40185),
        ({"notAField": 1}, 40104),
        ({"connectToField": None}, 40103),
        ({"from": 1}, 40103),
        ({"from": ""}, 73),
    ],
)
def test_graph_lookup_bad_options(
    graphs: Database[dict[str, Any]], change: dict[str, Any], code: int
) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        list(graphs.travelers.aggregate([{"$graphLookup": {**GOOD, **change}}]))
    assert failure.value.code == code


@pytest.mark.parametrize("missing", ["startWith", "connectFromField", "connectToField", "as"])
def test_graph_lookup_required_options(graphs: Database[dict[str, Any]], missing: str) -> None:
    stage = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        list(graphs.travelers.aggregate([{"$graphLookup": stage}]))
    assert failure.value.code == 40105


def test_graph_lookup_spec_must_be_an_object(graphs: Database[dict[str, Any]]) -> None:
    for stage in (4, {k: v for k, v in GOOD.items() if k != "from"}):
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            list(graphs.travelers.aggregate([{"$graphLookup": stage}]))
        assert failure.value.code == 9
