"""The lone find's reading of a find body seen before on the connection (hotpath._known:
the bytes around the filter learned once, the filter decoded alone) against the whole
body's decode (bsonform.decode, then hotpath._plain): the same tuple, or None where the
decode fails or the body is not one it learned."""

from __future__ import annotations

import random
import struct
from typing import Any

import bson
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId

from heliosdb.interfaces.mongodb import hotpath
from heliosdb.services.documents import bsonform

LSID = {"id": Binary(bytes(range(16)), 4)}
FILTERS: list[dict[str, Any]] = [
    {"_id": "d1"},
    {"_id": "d12345678901234567890"},
    {"k": "key-7"},
    {"_id": "é√x"},
    {"k": "a\x00b"},  # a string holding NUL
    {"_id": ""},
    {"": "v"},
    {"_id": 1},
    {"_id": Int64(2)},
    {"_id": 2.5},
    {"_id": ObjectId()},
    {"_id": {"x": 1}},
    {"a": 1, "b": "x"},
    {"k": {"$gt": "a"}},
    {},
]


def message(body: dict[str, Any], *, raw_body: bytes | None = None) -> bytes:
    """An OP_MSG of flags 0 with ``body`` as its one section, as a lean client sends it."""
    payload = b"\x00\x00\x00\x00\x00" + (raw_body if raw_body is not None else bson.encode(body))
    return struct.pack("<iiii", 16 + len(payload), 5, 0, 2013) + payload


def decoded(data: bytes) -> tuple[Any, ...] | None:
    """What take_lone's full decode makes of ``data`` (None: not a plain find)."""
    try:
        body = bsonform.decode(data[21:])
    except Exception:  # noqa: BLE001 - any failure: the loop's answer, not the lone path
        return None
    if next(iter(body), None) != "find" or not body.keys() <= hotpath.FIND_KEYS:
        return None
    return hotpath._plain(body)


def same(got: tuple[Any, ...] | None, want: tuple[Any, ...] | None) -> bool:
    """Equal, value types included (1 == Int64(1) == 1.0 would pass ``==``)."""
    if got is None or want is None:
        return got is None and want is None
    return (
        got[:2] == want[:2]
        and got[3:] == want[3:]
        and bsonform.encode({"f": got[2]}) == bsonform.encode({"f": want[2]})
    )


def learned(**extra: Any) -> tuple[hotpath.Known, dict[str, Any]]:
    """A connection's known bodies after one find of the lean client's shape."""
    body = {"find": "items", "filter": {"_id": "d0"}, **extra, "lsid": LSID, "$db": "bench"}
    known: hotpath.Known = {}
    data = message(body)
    plain = decoded(data)
    assert plain is not None
    hotpath._learn(known, data, plain)
    return known, body


def test_known_bodies_read_as_the_whole_decode() -> None:
    for extra in ({"limit": 1, "singleBatch": True}, {}, {"limit": 3, "batchSize": 2}):
        known, body = learned(**extra)
        assert len(known) == 1
        for spec in FILTERS:
            data = message({**body, "filter": spec})
            got = hotpath._known(known, data)
            assert got is not None, spec
            assert same(got, decoded(data)), spec


def test_other_surroundings_are_not_known() -> None:
    known, body = learned(limit=1, singleBatch=True)
    for other in (
        {**body, "limit": 2},
        {**body, "find": "other"},
        {**body, "$db": "other"},
        {**body, "lsid": {"id": Binary(bytes(16), 4)}},
        {**body, "comment": "x"},
        {"filter": {"_id": "d1"}, **body},  # filter first
    ):
        assert hotpath._known(known, message(other)) is None, other


def test_bodies_with_a_second_find_or_filter_are_not_learned() -> None:
    head = bson.encode({"find": "items", "filter": {"_id": "d0"}})[4:-1]
    for tail in ({"filter": {"_id": "x"}}, {"find": "x"}):
        rest = bson.encode({**tail, "lsid": LSID, "$db": "bench"})[4:]
        raw = struct.pack("<i", 4 + len(head) + len(rest)) + head + rest
        data = message({}, raw_body=raw)
        plain = decoded(data)
        assert plain is not None
        known: hotpath.Known = {}
        hotpath._learn(known, data, plain)
        assert known == {}


def test_damaged_filters_read_as_the_whole_decode_or_not_at_all() -> None:
    """Bytes of the filter document changed at random: wherever _known reads the body,
    the whole body's decode reads it alike (so never where that decode fails)."""
    known, body = learned(limit=1, singleBatch=True)
    chance = random.Random(5)
    checked = 0
    for spec in ({"_id": "d123"}, {"k": "é-7"}, {"_id": 17}):
        good = bytearray(message({**body, "filter": spec}))
        start = good.index(b"\x03filter\x00") + 8
        size = struct.unpack_from("<i", good, start)[0]
        for _ in range(400):
            data = bytearray(good)
            for _ in range(chance.choice((1, 1, 2))):
                data[start + chance.randrange(size)] = chance.choice(
                    (0, 1, 2, 0x10, 0x7F, 0x80, 0xC3, 0xFF, chance.randrange(256))
                )
            # None is always right (take_lone then decodes the whole body); anything
            # else must be the whole decode's reading, and none where that fails
            got = hotpath._known(known, bytes(data))
            if got is not None:
                checked += 1
                assert same(got, decoded(bytes(data))), bytes(data)
    assert checked > 100
