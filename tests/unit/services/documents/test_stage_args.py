"""Stage arguments read as MongoDB reads them, with its codes and messages."""

from __future__ import annotations

from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from heliosdb.errors import HeliosError
from heliosdb.services.documents import stage_args
from heliosdb.services.documents.values import MISSING


def location(run: Any) -> tuple[int, str]:
    with pytest.raises(HeliosError) as raised:
        run()
    return raised.value.details["location"], raised.value.message


@pytest.mark.parametrize("value", [3, 3.0, Int64(3), Decimal128("3"), Decimal128("3.00")])
def test_whole_numbers_of_every_type_count(value: Any) -> None:
    assert stage_args.count("$limit", value) == 3
    assert stage_args.count("$skip", value) == 3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "Expected a number in: $skip: true"),
        (None, "Expected a number in: $skip: null"),
        (-2, "Expected a non-negative number in: $skip: -2"),
        (0.5, "Expected an integer: $skip: 0.5"),
        (float("nan"), "Expected an integer, but found NaN in: $skip: nan"),
        (float("inf"), "Cannot represent as a 64-bit integer: $skip: inf"),
        (2.0**63, "Cannot represent as a 64-bit integer: $skip: 9.223372036854776e+18"),
    ],
)
def test_bad_skips(value: Any, reason: str) -> None:
    assert location(lambda: stage_args.count("$skip", value)) == (
        5107200,
        f"invalid argument to $skip stage: {reason}",
    )


def test_a_zero_limit_and_a_zero_skip() -> None:
    assert location(lambda: stage_args.count("$limit", 0)) == (15958, "the limit must be positive")
    assert stage_args.count("$skip", 0) == 0


def test_unwind_reads_its_options() -> None:
    assert stage_args.unwind("$a.b") == ("a.b", False, None)
    spec = {"path": "$a", "preserveNullAndEmptyArrays": True, "includeArrayIndex": "i"}
    assert stage_args.unwind(spec) == ("a", True, "i")
    assert location(lambda: stage_args.unwind({"path": "$a", "x": 1}))[0] == 28811
    assert location(lambda: stage_args.unwind({"path": 5}))[0] == 28808
    assert location(lambda: stage_args.unwind({"path": "$a", "includeArrayIndex": "$i"}))[0] == (
        28822
    )


def test_values_are_shown_as_mongodb_shows_them() -> None:
    shown = stage_args.shown({"a": [1, "x", None, True], "b": {"c": 1.5}})
    assert shown == '{a: [1, "x", null, true], b: {c: 1.5}}'
    assert stage_args.shown(MISSING) == "MISSING"


def test_documents_evaluate_to_an_array_of_documents() -> None:
    assert stage_args.documents([{"a": 1}, {"a": {"$add": [1, 1]}}]) == [{"a": 1}, {"a": 2}]
    assert stage_args.documents({"$literal": []}) == []
    assert location(lambda: stage_args.documents("x"))[0] == 5858203
    assert location(lambda: stage_args.documents([{"a": 1}, 2]))[0] == 40228
