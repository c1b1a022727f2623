"""Numbers the JSON query form holds only with care: doubles past 2**53 (whose shortest
decimal text is not their value), infinities and NaN of double and Decimal128 (JSON has
no such numbers). Filters, ranges, sorts and unique indexes treat them as MongoDB does:
by numeric value across widths, infinities beyond every number, NaN below them all."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

INF, NINF, NAN = float("inf"), float("-inf"), float("nan")
BIG = 2**60 + 256  # a double exactly; its shortest text 1.152921504606847e+18 is not
DOCS: list[dict[str, Any]] = [
    {"_id": 1, "x": INF},
    {"_id": 2, "x": NINF},
    {"_id": 3, "x": 5},
    {"_id": 4, "x": Int64(BIG)},
    {"_id": 5, "x": float(BIG)},
    {"_id": 6, "x": Int64(BIG - 156)},
    {"_id": 7, "x": Decimal128("Infinity")},
    {"_id": 8, "x": Decimal128("-Infinity")},
    {"_id": 9, "x": NAN},
    {"_id": 10, "x": "text"},
]


@pytest.fixture(params=[False, True], ids=["plain", "indexed"])
def coll(
    request: pytest.FixtureRequest, db: Database[dict[str, Any]], coll_name: str
) -> Collection[dict[str, Any]]:
    c = db[coll_name]
    if request.param:
        c.create_index("x")
    c.insert_many(DOCS)
    return c


def _ids(coll: Collection[dict[str, Any]], spec: dict[str, Any]) -> list[int]:
    return sorted(d["_id"] for d in coll.find(spec))


def test_big_doubles_equal_their_integers(coll: Collection[dict[str, Any]]) -> None:
    assert _ids(coll, {"x": float(BIG)}) == [4, 5]
    assert _ids(coll, {"x": Int64(BIG)}) == [4, 5]
    assert _ids(coll, {"x": Decimal128(Decimal(BIG))}) == [4, 5]
    assert _ids(coll, {"x": {"$in": [Int64(BIG - 156)]}}) == [6]
    assert _ids(coll, {"x": {"$gt": Int64(BIG - 100)}}) == [1, 4, 5, 7]
    assert _ids(coll, {"x": {"$lt": float(BIG)}}) == [2, 3, 6, 8]
    assert _ids(coll, {"x": {"$lte": Int64(BIG)}}) == [2, 3, 4, 5, 6, 8]


def test_infinities_are_beyond_every_number(coll: Collection[dict[str, Any]]) -> None:
    assert _ids(coll, {"x": {"$gt": 10**18}}) == [1, 4, 5, 6, 7]
    assert _ids(coll, {"x": {"$lt": 0}}) == [2, 8]
    assert _ids(coll, {"x": {"$gte": 5, "$lt": 6}}) == [3]
    assert _ids(coll, {"x": INF}) == [1, 7]
    assert _ids(coll, {"x": Decimal128("-Infinity")}) == [2, 8]
    assert _ids(coll, {"x": {"$gte": INF}}) == [1, 7]
    assert _ids(coll, {"x": {"$gt": INF}}) == []
    assert _ids(coll, {"x": {"$lt": INF}}) == [2, 3, 4, 5, 6, 8]
    assert _ids(coll, {"x": {"$lte": INF}}) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _ids(coll, {"x": {"$gt": NINF}}) == [1, 3, 4, 5, 6, 7]
    assert _ids(coll, {"x": {"$lte": NINF}}) == [2, 8]
    assert _ids(coll, {"x": {"$ne": INF, "$type": "number"}}) == [2, 3, 4, 5, 6, 8, 9]


def test_nan_matches_only_nan(coll: Collection[dict[str, Any]]) -> None:
    assert _ids(coll, {"x": NAN}) == [9]
    assert _ids(coll, {"x": {"$gte": NAN}}) == [9]
    assert _ids(coll, {"x": {"$gt": NAN}}) == []


def test_sort_puts_nan_then_infinities_at_the_ends(coll: Collection[dict[str, Any]]) -> None:
    order = [d["_id"] for d in coll.find({"x": {"$type": "number"}}, sort=[("x", 1), ("_id", 1)])]
    assert order == [9, 2, 8, 3, 6, 4, 5, 1, 7]
    assert [d["_id"] for d in coll.find({}, sort=[("x", -1), ("_id", 1)])][:3] == [10, 1, 7]


def test_unique_index_sees_numeric_value(db: Database[dict[str, Any]], coll_name: str) -> None:
    coll = db[coll_name]
    coll.create_index("x", unique=True)
    coll.insert_many([{"x": Int64(BIG)}, {"x": Int64(BIG - 1)}, {"x": INF}])
    for same in (float(BIG), Decimal128(Decimal(BIG)), Decimal128("Infinity")):
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"x": same})


def test_dates_before_1970_and_after_9999(db: Database[dict[str, Any]], coll_name: str) -> None:
    options: CodecOptions[dict[str, Any]] = CodecOptions(
        tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO
    )
    coll = db.get_collection(coll_name, codec_options=options)
    old = dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=dt.UTC)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    far = DatetimeMS(300_000_000_000_000)  # year 11476: beyond Python's datetime
    coll.insert_many([{"_id": 1, "d": old}, {"_id": 2, "d": epoch}, {"_id": 3, "d": far}])
    assert _ids(coll, {"d": {"$lt": epoch}}) == [1]
    assert _ids(coll, {"d": {"$gt": epoch}}) == [3]
    assert _ids(coll, {"d": {"$gte": DatetimeMS(-1)}}) == [2, 3]
    assert _ids(coll, {"d": old}) == [1]
    assert [d["_id"] for d in coll.find({}, sort=[("d", -1)])] == [3, 2, 1]
    assert coll.find_one({"_id": 3}) == {"_id": 3, "d": far}


def test_timestamps_and_binary_in_mongodb_order(
    db: Database[dict[str, Any]], coll_name: str
) -> None:
    # JSONB alone compares a timestamp's increment before its seconds, and binary data by
    # its base64 text; MongoDB compares seconds then increment, and length, subtype, bytes.
    coll = db[coll_name]
    stamps = [Timestamp(1, 5), Timestamp(2, 1), Timestamp(2, 3), Timestamp(10, 0)]
    blobs = [Binary(b"\xff", 0), Binary(b"\x01", 5), Binary(b"\x00\x00", 0), Binary(b"\x00\x01", 0)]
    coll.insert_many([{"_id": i, "t": s} for i, s in enumerate(stamps)])
    coll.insert_many([{"_id": 10 + i, "b": b} for i, b in enumerate(blobs)])
    assert [d["_id"] for d in coll.find({"t": {"$exists": True}}, sort=[("t", 1)])] == [0, 1, 2, 3]
    assert [d["_id"] for d in coll.find({"t": {"$exists": True}}, sort=[("t", -1)])] == [3, 2, 1, 0]
    assert [d["_id"] for d in coll.find({"b": {"$exists": True}}, sort=[("b", 1)])] == [
        10,
        11,
        12,
        13,
    ]
    assert _ids(coll, {"t": {"$gt": Timestamp(2, 1)}}) == [2, 3]
    assert _ids(coll, {"t": {"$gte": Timestamp(2, 1)}}) == [1, 2, 3]
    assert _ids(coll, {"t": {"$lt": Timestamp(2, 0)}}) == [0]
    assert _ids(coll, {"t": {"$lte": Timestamp(1, 5)}}) == [0]
    group = [{"$group": {"_id": None, "lo": {"$min": "$t"}, "hi": {"$max": "$b"}}}]
    # (pymongo reads binary data of subtype 0 as bytes)
    assert list(coll.aggregate(group)) == [{"_id": None, "lo": stamps[0], "hi": bytes(blobs[3])}]
