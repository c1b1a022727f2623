"""The JSONB query form of BSON values (bsonform.query_form)."""

from __future__ import annotations

import datetime as dt

from bson import Decimal128, Int64, ObjectId
from hypothesis import given
from hypothesis import strategies as st

from heliosdb.services.documents.bsonform import (
    from_query_form,
    from_query_string,
    id_form,
    query_form,
    query_string,
    wide_form,
)

# Strings made of the characters the escape is about and their neighbours.
_TRICKY = st.text(alphabet="\x00\x01\x02a\ufffd\U0001f600", max_size=8)


def test_query_form_plain_and_special_values() -> None:
    oid = ObjectId("64b7f0c2a1b2c3d4e5f60718")
    when = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    value = {
        "s": "a\x00b",
        "i": 1,
        "l": Int64(2**40),
        "b": True,
        "n": None,
        "f": 1.5,
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "list": [oid, {"when": when}, Decimal128("2")],
    }
    assert query_form(value) == {
        "s": "a\x01\x01b",
        "i": 1,
        "l": 2**40,
        "b": True,
        "n": None,
        "f": 1.5,
        "nan": {"$numberDouble": "NaN"},
        "inf": {"$numberDouble": "Infinity"},
        "ninf": {"$numberDouble": "-Infinity"},
        "list": [{"$oid": str(oid)}, {"when": {"$date": 1704153600000}}, 2],
    }
    assert type(query_form(Int64(3))) is int


@given(_TRICKY, _TRICKY)
def test_query_string_is_injective_and_keeps_order(a: str, b: str) -> None:
    fa, fb = query_string(a), query_string(b)
    assert "\x00" not in fa
    assert (fa == fb) == (a == b)
    assert (fa < fb) == (a < b)  # code point order, as MongoDB and the engine compare
    assert from_query_string(fa) == a
    assert from_query_form({"k": [fa]}) == {"k": [a]}


def test_query_string_leaves_other_strings_alone() -> None:
    plain = "a\ufffdb"
    assert query_string(plain) is plain
    assert query_form({"s": plain}) == {"s": plain}
    assert query_string("\x01") == "\x01\x02"
    assert query_string("\x00\x01") == "\x01\x01\x01\x02"


def test_an_id_holding_a_document_of_several_fields_keeps_their_order() -> None:
    # MongoDB's _id equality compares fields in order; the query form (JSONB) keeps none
    assert id_form({"a": 1, "b": 2}) == {"$ordered": ["a", 1, "b", 2]}
    assert id_form({"b": 2, "a": 1}) == {"$ordered": ["b", 2, "a", 1]}
    oid = ObjectId("64b7f0c2a1b2c3d4e5f60718")
    assert id_form({"k": {"y": [1, {"z": None}], "x": oid}}) == {
        "$ordered": ["k", ["y", {"array": [1, ["z", None]]}, "x", {"$oid": str(oid)}]]
    }
    # nested documents and arrays stay apart: {k: [x, 1]} is not {k: {x: 1}}
    assert id_form({"k": ["x", 1], "j": 0}) != id_form({"k": {"x": 1}, "j": 0})
    # one field all the way down: the query form, as before
    assert id_form({"a": {"b": [1]}}) == {"a": {"b": [1]}}
    assert id_form("s") == "s"


def test_wide_form_tells_a_long_or_a_decimal_anywhere() -> None:
    narrow = {"_id": 1, "a": 2**31 - 1, "b": -(2**31), "c": [2.5, {"d": "x"}], "e": None}
    assert wide_form(narrow) == (query_form(narrow), False)
    for value in (Int64(1), 2**31, -(2**31) - 1, Decimal128("1"), {"x": [Int64(0)]}):
        assert wide_form({"a": value})[1], value
    assert wide_form({"_id": Int64(3)})[1]
