"""Every BSON type round-trips exactly: the bytes read back equal the bytes written,
both for inserted documents (stored as sent) and for documents the server rebuilt
(after an update)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import bson
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
keys = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00$."),
               min_size=1, max_size=8)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.builds(ObjectId),
    st.decimals(
        min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=4
    ).map(lambda d: Decimal128(str(d))),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=dt.UTC)
    ),
    st.builds(Binary, st.binary(max_size=16), st.sampled_from([0, 1, 2, 3, 5, 128])),
    st.builds(lambda: Binary.from_uuid(uuid.uuid4())),
    st.builds(Regex, st.sampled_from(["^a", "b+$", "[0-9]{2}"]), st.sampled_from(["", "i", "ms"])),
    st.builds(Timestamp, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.just(MinKey()),
    st.just(MaxKey()),
    st.builds(Code, st.sampled_from(["function () {}", "x"])),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=documents)
def test_inserted_documents_round_trip_exactly(
    db: Database[dict[str, Any]], body: dict[str, Any]
) -> None:
    document = {"_id": ObjectId(), **body}
    db.roundtrip.insert_one(document)
    raw = db.get_collection("roundtrip", codec_options=RAW).find_one({"_id": document["_id"]})
    assert isinstance(raw, RawBSONDocument)
    assert raw.raw == bson.encode(document)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=documents, extra=values)
def test_updated_documents_round_trip_exactly(
    db: Database[dict[str, Any]], body: dict[str, Any], extra: Any
) -> None:
    document = {"_id": ObjectId(), **body}
    db.roundtrip2.insert_one(document)
    db.roundtrip2.update_one({"_id": document["_id"]}, {"$set": {"zz_extra": extra}})
    raw = db.get_collection("roundtrip2", codec_options=RAW).find_one({"_id": document["_id"]})
    assert isinstance(raw, RawBSONDocument)
    expected = {**{k: v for k, v in document.items() if k != "zz_extra"}, "zz_extra": extra}
    assert raw.raw == bson.encode(expected)


def test_field_order_and_types_through_replacement(db: Database[dict[str, Any]]) -> None:
    doc = {"_id": 1, "z": Int64(1), "a": 1.0, "m": {"y": 1, "b": [MinKey(), MaxKey()]}}
    db.order.insert_one(doc)
    db.order.replace_one({"_id": 1}, {"q": Decimal128("0.10"), "c": 1, "b": Int64(2)})
    raw = db.get_collection("order", codec_options=RAW).find_one({"_id": 1})
    assert isinstance(raw, RawBSONDocument)
    assert raw.raw == bson.encode({"_id": 1, "q": Decimal128("0.10"), "c": 1, "b": Int64(2)})
