"""``$graphLookup``'s reads: one a round for all the input documents, each value asked
for once, the filter an ``$in`` the engine can serve from an index."""

from __future__ import annotations

import asyncio
from typing import Any

from bson.decimal128 import Decimal128

from heliosdb.services.documents import graph_lookup
from heliosdb.services.documents.matcher import matches
from heliosdb.services.documents.pipeline import Held, Limits

CHAIN = [{"_id": i, "name": f"n{i}", "next": f"n{i + 1}"} for i in range(5)]


def search(docs: list[dict[str, Any]], **options: Any) -> tuple[list[Any], list[Any]]:
    asked: list[Any] = []

    async def lookup(coll: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        asked.append(query)
        return [d for d in CHAIN if matches(d, query)]

    spec = {
        "from": "chain",
        "startWith": "$start",
        "connectFromField": "next",
        "connectToField": "name",
        "as": "found",
        **options,
    }
    held = Held("$graphLookup", Limits())
    out = asyncio.run(graph_lookup.run(docs, spec, lookup, held))
    return [[f["_id"] for f in d["found"]] for d in out], asked


def test_one_read_per_round_for_all_documents() -> None:
    found, asked = search([{"start": "n0"}, {"start": "n2"}, {"start": "n0"}])
    assert found == [[0, 1, 2, 3, 4], [2, 3, 4], [0, 1, 2, 3, 4]]
    # five rounds (n0..n4, then n5 finds nothing); n2's search asks for nothing new
    assert asked == [
        {"name": {"$in": ["n0", "n2"]}},
        {"name": {"$in": ["n1", "n3"]}},
        {"name": {"$in": ["n4"]}},
        {"name": {"$in": ["n5"]}},
    ]


def test_max_depth_stops_the_reads() -> None:
    found, asked = search([{"start": "n0"}], maxDepth=1)
    assert found == [[0, 1]]
    assert len(asked) == 2


def test_restriction_joins_the_filter() -> None:
    found, asked = search([{"start": "n0"}], restrictSearchWithMatch={"_id": {"$lt": 2}})
    assert found == [[0, 1]]
    assert asked[0] == {"$and": [{"name": {"$in": ["n0"]}}, {"_id": {"$lt": 2}}]}


def test_nothing_to_start_from_reads_nothing() -> None:
    found, asked = search([{}, {"start": []}])
    assert found == [[], []]
    assert asked == []


def test_numbers_of_other_types_connect() -> None:
    # the engine matches 3 (a decimal) to n3's _id 3 (an int); so does the search
    chained = [{"_id": i, "name": f"n{i}", "next": Decimal128(str(i + 1))} for i in range(3)]

    async def lookup(coll: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in chained if matches(d, query)]

    spec = {
        "from": "c",
        "startWith": 0,
        "connectFromField": "next",
        "connectToField": "_id",
        "as": "found",
    }
    held = Held("$graphLookup", Limits())
    (out,) = asyncio.run(graph_lookup.run([{}], spec, lookup, held))
    assert [f["_id"] for f in out["found"]] == [0, 1, 2]
