"""A $group the engine runs answers with MongoDB's number types, as the $group run in
the node does: a long in a $sum's input makes the sum a long, a Decimal128 makes it (and
an $avg) an exact Decimal128, and $min/$max answer the stored value, of its own type.
The query form (JSONB) does not tell these types apart; the stored BSON does."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Decimal128, Int64
from pymongo.database import Database

Db = Database[dict[str, Any]]

GROUP = {
    "$group": {
        "_id": "$k",
        "sum": {"$sum": "$v"},
        "avg": {"$avg": "$v"},
        "min": {"$min": "$v"},
        "max": {"$max": "$v"},
    }
}


def grouped(db: Db, name: str, docs: list[dict[str, Any]], *, nested: bool = False) -> Any:
    db[name].insert_many(docs)
    group = GROUP
    if nested:
        group = {
            "$group": {
                k: ({o: "$w.v" for o in a} if k != "_id" else a) for k, a in GROUP["$group"].items()
            }
        }
    (result,) = db[name].aggregate([group])
    return result


def typed(value: Any) -> tuple[type, Any]:
    return type(value), value


def test_a_long_makes_the_sum_a_long(db: Db) -> None:
    found = grouped(db, "longs", [{"k": "a", "v": 1}, {"k": "a", "v": Int64(2)}])
    assert typed(found["sum"]) == (Int64, 3)
    assert typed(found["avg"]) == (float, 1.5)
    assert typed(found["min"]) == (int, 1)
    assert typed(found["max"]) == (Int64, 2)


def test_ints_alone_sum_to_an_int(db: Db) -> None:
    found = grouped(db, "ints", [{"k": "a", "v": 1}, {"k": "a", "v": 2}])
    assert typed(found["sum"]) == (int, 3)
    assert typed(found["max"]) == (int, 2)


def test_a_long_and_a_double_sum_to_a_double(db: Db) -> None:
    found = grouped(db, "mixed", [{"k": "a", "v": Int64(1)}, {"k": "a", "v": 2.5}])
    assert typed(found["sum"]) == (float, 3.5)
    assert typed(found["min"]) == (Int64, 1)


def test_a_decimal_makes_the_sum_an_exact_decimal(db: Db) -> None:
    found = grouped(db, "money", [{"k": "a", "v": 1}, {"k": "a", "v": Decimal128("2.10")}])
    assert typed(found["sum"]) == (Decimal128, Decimal128("3.10"))
    assert typed(found["avg"]) == (Decimal128, Decimal128("1.55"))
    assert typed(found["min"]) == (int, 1)
    assert typed(found["max"]) == (Decimal128, Decimal128("2.10"))


def test_a_whole_decimal_stays_a_decimal(db: Db) -> None:
    found = grouped(db, "whole", [{"k": "a", "v": Decimal128("2")}, {"k": "a", "v": 1.5}])
    assert typed(found["max"]) == (Decimal128, Decimal128("2"))
    assert typed(found["sum"]) == (Decimal128, Decimal128("3.5"))


def test_nested_fields_keep_their_types(db: Db) -> None:
    found = grouped(
        db,
        "nested",
        [{"k": "a", "w": {"v": Int64(5)}}, {"k": "a", "w": {"v": 7}}],
        nested=True,
    )
    assert typed(found["sum"]) == (Int64, 12)
    assert typed(found["min"]) == (Int64, 5)
    assert typed(found["max"]) == (int, 7)


@pytest.mark.parametrize("key", [None, "$k", {"k": "$k"}])
def test_every_key_form_counts_the_types(db: Db, key: Any) -> None:
    name = f"keys_{abs(hash(str(key)))}"
    db[name].insert_many([{"k": "a", "v": Int64(2)}, {"k": "a", "v": Decimal128("0.5")}])
    (found,) = db[name].aggregate(
        [{"$group": {"_id": key, "s": {"$sum": "$v"}, "m": {"$min": "$v"}}}]
    )
    assert typed(found["s"]) == (Decimal128, Decimal128("2.5"))
    assert typed(found["m"]) == (Decimal128, Decimal128("0.5"))


def test_a_count_by_a_long_constant_is_a_long(db: Db) -> None:
    db.counted.insert_many([{"k": "a"}, {"k": "a"}])
    (found,) = db.counted.aggregate([{"$group": {"_id": "$k", "n": {"$sum": Int64(1)}}}])
    assert typed(found["n"]) == (Int64, 2)
