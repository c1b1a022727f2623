"""Same-shaped filters reuse one compilation: the SQL and the parameters must be exactly
what a fresh compilation gives."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64, ObjectId

from heliosdb.services.documents import filters
from heliosdb.services.documents.filters import Params, compile_filter

INDEXED = {"k": "(doc -> 'k')", "n": "(doc -> 'n')"}


def fresh(spec: dict[str, Any], indexed: dict[str, str], start: list[Any]) -> tuple[str, list[Any]]:
    filters._SHAPES.clear()
    params = Params(list(start))
    sql = compile_filter(spec, params, indexed)
    filters._SHAPES.clear()
    return sql, params.values


def cached(
    spec: dict[str, Any], indexed: dict[str, str], start: list[Any]
) -> tuple[str, list[Any]]:
    params = Params(list(start))
    return compile_filter(spec, params, indexed), params.values


SHAPES = [
    ({"_id": "d1"}, {"_id": "d2"}),
    ({"_id": 10_001}, {"_id": 20_002}),
    ({"k": "key-1"}, {"k": "key-2"}),
    ({"k": "a", "n": 1.5}, {"k": "b", "n": 2.5}),
    ({"_id": "x", "k": "y", "flag": True}, {"_id": "z", "k": "w", "flag": False}),
    ({"name": "ada", "age": 36_000}, {"name": "alan", "age": 41_000}),
]


@pytest.mark.parametrize(("first", "second"), SHAPES)
@pytest.mark.parametrize("indexed", [{}, INDEXED])
@pytest.mark.parametrize("start", [[], ["earlier"]])
def test_second_filter_of_a_shape_compiles_as_fresh(
    first: dict[str, Any], second: dict[str, Any], indexed: dict[str, str], start: list[Any]
) -> None:
    filters._SHAPES.clear()
    assert cached(first, indexed, start) == fresh(first, indexed, start)
    compile_filter(first, Params(list(start)), indexed)  # make sure it is remembered
    assert cached(second, indexed, start) == fresh(second, indexed, start)


@pytest.mark.parametrize(
    "spec",
    [
        {"a": 5, "b": 5},  # one int object twice: not cached, still right
        {"a": "x\x00y"},
        {"a": float("nan")},
        {"a": Int64(7)},
        {"a": ObjectId()},
        {"a": None},
        {"a": {"$gt": 1}},
        {"$or": [{"a": 1}]},
    ],
)
def test_other_filters_are_not_cached_and_still_right(spec: dict[str, Any]) -> None:
    filters._SHAPES.clear()
    first = cached(spec, INDEXED, [])
    second = cached(spec, INDEXED, [])
    assert first == second == fresh(spec, INDEXED, [])


def test_shape_depends_on_types_and_indexes() -> None:
    filters._SHAPES.clear()
    compile_filter({"k": "text"}, Params(), INDEXED)
    assert cached({"k": 12_345}, INDEXED, []) == fresh({"k": 12_345}, INDEXED, [])
    assert cached({"k": "other"}, {}, []) == fresh({"k": "other"}, {}, [])
