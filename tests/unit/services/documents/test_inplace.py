"""The in-place update's arguments (services/documents/inplace.py): each field's BSON
element is made without pymongo for the plain types, and must be exactly the bytes
pymongo writes; everything else goes to pymongo, errors included."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import orjson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Regex

from heliosdb.services.documents import bsonform, inplace

VALUES: list[Any] = [
    0,
    1,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    -(2**63),
    Int64(0),
    Int64(-5),
    0.0,
    -0.0,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "text",
    "héllo ☃ \U0001f600",
    "a\x00b",
    True,
    False,
    None,
    {"sub": [1, "x"]},
    [1, 2.5, None],
    ObjectId("64b7f0c2a1b2c3d4e5f60718"),
    dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC),
    Binary(b"\x00\x01", 5),
    Regex("^a", "i"),
    Decimal128("1.1"),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v) for v in VALUES])
@pytest.mark.parametrize("key", ["k", "ключ", "k" * 300])
def test_element_is_pymongos(key: str, value: Any) -> None:
    assert inplace._element(key, value) == bsonform.encode({key: value})[4:-1]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, "\ud800"])
def test_element_errors_are_pymongos(value: Any) -> None:
    with pytest.raises(Exception) as ours:  # whatever pymongo raises
        inplace._element("k", value)
    with pytest.raises(Exception) as theirs:
        bsonform.encode({"k": value})
    assert type(ours.value) is type(theirs.value)


def test_plan_frames_each_element() -> None:
    plan = inplace.plan({"$inc": {"n": 1, "big": Int64(7)}, "$set": {"s": "x" * 70000, "z": None}})
    assert plan is not None
    assert plan.ops == "iiss"
    elements, offset = [], 0
    while offset < len(plan.elements):
        (size,) = struct.unpack_from("<i", plan.elements, offset)
        elements.append(plan.elements[offset + 4 : offset + 4 + size])
        offset += 4 + size
    assert offset == len(plan.elements)
    expected = bsonform.encode({"n": 1, "big": Int64(7), "s": "x" * 70000, "z": None})
    assert b"".join(elements) == expected[4:-1]
    assert orjson.loads(plan.values) == [1, 7, "x" * 70000, None]


@pytest.mark.parametrize(
    "update",
    [
        {"$inc": {"a": 1.5}},
        {"$inc": {"a": 2**31}},
        {"$set": {"a.b": 1}},
        {"$set": {"_id": 1}},
        {"$set": {"$x": 1}},
        {"$set": {"a": 1}, "$inc": {"a": 1}},
        {"$unset": {"a": ""}},
        {"$set": {}},
        {"a": 1},
        [],
    ],
)
def test_plan_leaves_the_rest_to_the_general_path(update: Any) -> None:
    assert inplace.plan(update) is None


def test_plain_update_only_for_one_id_and_a_surely_changed_document() -> None:
    """The one-statement UPDATE needs both: at most one row (one plain _id) and a
    nonzero increment (so writing is never a no-op the locking statement would skip)."""
    assert [
        (p.changes if (p := inplace.plan(u)) is not None else None)
        for u in (
            {"$inc": {"n": 1}},
            {"$inc": {"n": -2}, "$set": {"s": "x"}},
            {"$inc": {"n": Int64(3)}},
            {"$inc": {"n": 0}},
            {"$inc": {"n": Int64(0)}},
            {"$set": {"n": 1}},
        )
    ] == [True, True, True, False, False, False]
    target = '"db"."c"'
    plain = inplace.statement(target, inplace.BY_ID, 2, True)
    assert plain.startswith(bsonform.NARROW + "WITH w AS (UPDATE ") and "FOR UPDATE" not in plain
    assert inplace.statement(target, inplace.BY_ID, 2, True, wide=True).startswith("WITH w AS")
    for where, changes in ((inplace.BY_ID, False), ("(doc -> 'k') = $1::jsonb", True)):
        locking = inplace.statement(target, where, 2, changes)
        assert "LIMIT 1 FOR UPDATE" in locking


def test_refusals_count_down_to_the_plain_statement() -> None:
    refusals = inplace.Refusals()
    assert refusals.plain("c")
    refusals.refuse("c")
    assert [refusals.plain("c") for _ in range(inplace.Refusals.RETRY_AFTER)] == [False] * (
        inplace.Refusals.RETRY_AFTER
    )
    assert refusals.plain("c")
    assert refusals.plain("c")
    refusals.refuse("c")  # met the document again: another round on the locking one
    assert not refusals.plain("c")
    assert refusals.plain("other")


def test_plan_says_when_a_value_is_a_long_or_a_decimal() -> None:
    wide = [
        found.wide
        for u in (
            {"$inc": {"n": 1}, "$set": {"s": "x", "f": 1.5}},
            {"$inc": {"n": Int64(1)}},
            {"$set": {"n": Int64(1)}},
            {"$set": {"n": 2**40}},
            {"$set": {"d": {"x": Decimal128("1.5")}}},
        )
        if (found := inplace.plan(u)) is not None
    ]
    assert wide == [False, True, True, True, True]
