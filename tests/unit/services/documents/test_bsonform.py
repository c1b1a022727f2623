"""The JSONB query form of BSON values (bsonform.query_form)."""

from __future__ import annotations

import datetime as dt

from bson import Decimal128, Int64, ObjectId

from heliosdb.services.documents.bsonform import query_form


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
        "s": "a\ufffdb",
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
