"""update_one with top-level $set/$inc runs in the engine in one statement
(services/documents/inplace.py). Each case runs the same update on two equal documents,
once by update_one (in the engine) and once by update_many (multi: the Python path),
and the stored BSON bytes and JSONB query forms must come out identical."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import bson
import httpx
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, WriteError

from heliosdb.services.documents import inplace

Coll = Collection[dict[str, Any]]

BASE: dict[str, Any] = {
    "a": 1,
    "big": Int64(7),
    "near": 2**31 - 2,
    "d": 1.5,
    "dec": Decimal128(Decimal("1.1")),
    "s": "text",
    "arr": [1, {"x": 2}],
    "sub": {"y": "z", "n": None},
    "oid": ObjectId("64b7f0c2a1b2c3d4e5f60718"),
    "when": dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC),
    "bin": Binary(b"\x00\x01", 5),
    "re": Regex("^a.c$", "i"),
    "nul": None,
    "t": True,
    "ts": Timestamp(5, 1),
    "lo": MinKey(),
    "hi": MaxKey(),
    "code": Code("x"),
    "scoped": Code("y", {"a": 1}),
    "int64": Int64(-(2**40)),
    "ключ": 1,  # a key of several bytes per character
    "long": "x" * 300,  # an element longer than 255 bytes
}

CASES: list[dict[str, Any]] = [
    {"$inc": {"a": 1}},
    {"$inc": {"int64": -5}, "$set": {"scoped": 1}},
    {"$set": {"hi": 1, "ts": "t"}, "$inc": {"near": 1}},
    {"$inc": {"a": -5, "big": 3}},
    {"$inc": {"near": 5}},  # int32 overflows into int64
    {"$inc": {"a": Int64(1)}},  # an int64 increment widens
    {"$inc": {"missing": 4}},  # appended
    {"$inc": {"d": 1}},  # a double: the general path
    {"$inc": {"dec": 1}},
    {"$set": {"s": "other", "new": {"k": [1, 2]}}},
    {"$set": {"a": 1}},  # no change
    {"$set": {"sub": {"y": "w"}, "arr": []}},
    # A fixed ObjectId: a test id made of a random one differs between xdist workers.
    {
        "$set": {
            "when": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            "oid": ObjectId("5f0c8a1e9d3b2c4a6e8f0a1b"),
        }
    },
    {"$set": {"nul": 5, "t": None, "bin": Binary(b"zz", 0)}},
    {"$set": {"re": "plain", "d": float("nan")}},
    {"$set": {"x": 1}, "$inc": {"a": 2, "big": -10}},
    {"$set": {"sub.y": "dotted"}},  # a path: the general path
    {"$unset": {"s": ""}, "$set": {"a": 3}},
    # The arguments' framing: keys of several bytes per character, elements longer than
    # 255 and 65,535 bytes, many fields, each plain type the node encodes itself.
    {"$inc": {"ключ": 2, "ünï": 1}, "$set": {"ключ2": "значение ☃"}},
    {"$set": {"long": "y" * 70000, "after": 1}},
    {"$set": {f"f{i}": i for i in range(40)}, "$inc": {"a": 1}},
    {"$set": {"i32": -(2**31), "i64": 2**40, "neg0": -0.0, "inf": float("inf"), "b": False}},
    {"$set": {"nul": "a\x00b", "x": None, "t": True, "big": Int64(1)}},
]


@pytest.fixture
def coll(db: Database[dict[str, Any]]) -> Coll:
    return db[f"ip_{uuid.uuid4().hex[:8]}"]


def raw(coll: Coll, _id: Any) -> bytes:
    options = coll.codec_options.with_options(document_class=RawBSONDocument)
    found = coll.with_options(codec_options=options).find_one({"_id": _id})  # type: ignore[arg-type]
    assert found is not None
    return bytes(found.raw)


@pytest.mark.parametrize("update", CASES, ids=[str(c) for c in CASES])
async def test_update_one_matches_general_path(
    coll: Coll, api: httpx.AsyncClient, update: dict[str, Any]
) -> None:
    coll.insert_many([{"_id": "fast", **BASE}, {"_id": "slow", "mark": 1, **BASE}])
    fast = coll.update_one({"_id": "fast"}, update)
    slow = coll.update_many({"mark": 1}, update)
    assert (fast.matched_count, fast.modified_count) == (slow.matched_count, slow.modified_count)
    fast_doc, slow_doc = coll.find_one({"_id": "fast"}), coll.find_one({"_id": "slow"})
    assert fast_doc is not None and slow_doc is not None
    slow_doc.pop("mark")
    assert list(fast_doc)[1:] == list(slow_doc)[1:]
    # Byte for byte (types and field order) after the _id and the marker.
    head = 4 + len(b"\x02_id\x00\x05\x00\x00\x00fast\x00")
    mark = len(b"\x10mark\x00\x01\x00\x00\x00")
    assert raw(coll, "fast")[head:] == raw(coll, "slow")[head + mark :]
    sql = (
        f"SELECT _id, doc - 'mark' - '_id' FROM \"{coll.database.name}\".\"{coll.name}\" ORDER BY 1"
    )
    rows = (await api.post("/query", json={"sql": sql})).json()["rows"]
    assert rows[0][1] == rows[1][1]


async def test_engine_function_applies_update(coll: Coll, api: httpx.AsyncClient) -> None:
    # The statement's function itself: an increment it handles, one it leaves (NULL).
    coll.insert_one({"_id": 1, "a": 1, "d": 2.5})
    # Each element after its length (int32), then a JSON array of the numbers to add.
    sql = (
        "SELECT f.nb, f.nd FROM {t}, LATERAL helios_documents.bson_update(bson, doc, 'i', "
        "decode($1, 'hex'), '[1]'::jsonb) AS f"
    )
    table = f'"{coll.database.name}"."{coll.name}"'
    done = await api.post(
        "/query", json={"sql": sql.format(t=table), "params": ["0700000010610001000000"]}
    )
    assert done.status_code == 200, done.text
    ((new, form),) = done.json()["rows"]
    assert form == {"_id": 1, "a": 2, "d": 2.5}
    assert new is not None
    left = await api.post(
        "/query", json={"sql": sql.format(t=table), "params": ["0700000010640001000000"]}
    )
    assert left.json()["rows"][0][0] is None


async def test_engine_function_walks_every_type(coll: Coll, api: httpx.AsyncClient) -> None:
    # A field appended after every kind of element: the walk must size each one right.
    coll.insert_one({"_id": 1, **BASE})
    stored = raw(coll, 1)
    sql = (
        "SELECT encode(f.nb, 'hex') FROM {t}, LATERAL helios_documents.bson_update(bson, doc, "
        "'s', decode($1, 'hex'), '[1]'::jsonb) AS f"
    )
    table = f'"{coll.database.name}"."{coll.name}"'
    element = bson.encode({"zz": 1})[4:-1]
    framed = len(element).to_bytes(4, "little") + element
    done = await api.post("/query", json={"sql": sql.format(t=table), "params": [framed.hex()]})
    assert done.status_code == 200, done.text
    expected = bson.encode({**bson.decode(stored), "zz": 1})
    assert done.json()["rows"][0][0] == expected.hex()


def test_update_one_in_place_types(coll: Coll) -> None:
    coll.insert_one({"_id": 1, "a": 1, "b": 2**31 - 1, "c": Int64(-3)})
    coll.update_one({"_id": 1}, {"$inc": {"a": 1, "b": 1, "c": 3}, "$set": {"z": "end"}})
    doc = coll.find_one({"_id": 1})
    assert doc == {"_id": 1, "a": 2, "b": 2**31, "c": 0, "z": "end"}
    assert doc is not None and list(doc) == ["_id", "a", "b", "c", "z"]
    assert type(doc["a"]) is int and type(doc["b"]) is Int64 and type(doc["c"]) is Int64
    assert coll.find_one({"b": 2**31}) is not None  # the query form moved too
    assert coll.update_one({"_id": 2}, {"$inc": {"a": 1}}).matched_count == 0
    up = coll.update_one({"_id": 2}, {"$inc": {"a": 1}}, upsert=True)
    assert up.upserted_id == 2 and coll.find_one({"_id": 2}) == {"_id": 2, "a": 1}


def test_update_one_in_place_errors(coll: Coll) -> None:
    coll.create_index("u", unique=True)
    coll.insert_many([{"_id": 1, "u": "x", "s": "str"}, {"_id": 2, "u": "y"}])
    with pytest.raises(DuplicateKeyError) as caught:
        coll.update_one({"_id": 2}, {"$set": {"u": "x"}})
    assert caught.value.details is not None and caught.value.details["keyValue"] == {"u": "x"}
    with pytest.raises(WriteError) as mismatch:
        coll.update_one({"_id": 1}, {"$inc": {"s": 1}})
    assert mismatch.value.code == 14
    with pytest.raises(WriteError):
        coll.update_one({"_id": 1}, {"$inc": {"u": 1}, "$set": {"u": 2}})
    coll.update_one({"_id": 1}, {"$set": {"n": Int64(2**63 - 1)}})
    with pytest.raises(WriteError):
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}})  # int64 overflow
    assert coll.find_one({"_id": 1}) == {"_id": 1, "u": "x", "s": "str", "n": 2**63 - 1}


def test_update_one_in_place_in_transaction(coll: Coll, client: Any) -> None:
    coll.insert_one({"_id": 1, "n": 1})
    with client.start_session() as session:
        session.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        assert coll.find_one({"_id": 1}, session=session) == {"_id": 1, "n": 2}
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}
        session.abort_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_update_one_in_place_answers_as_general_path(coll: Coll) -> None:
    # Write results and errors of update_one through the engine against the same update
    # through the general path (update_many of one document).
    coll.create_index("u", unique=True)
    coll.insert_many([{"_id": i, "u": f"u{i}", "ключ": 1} for i in range(1, 5)])
    failures = []
    for update in (coll.update_one, coll.update_many):
        with pytest.raises(DuplicateKeyError) as caught:
            update({"_id": 2 if update == coll.update_one else 3}, {"$set": {"u": "u1"}})
        details = caught.value.details
        assert details is not None
        failures.append((caught.value.code, details["keyPattern"], details["keyValue"]))
    assert failures[0] == failures[1] == (11000, {"u": 1}, {"u": "u1"})
    change = {"$inc": {"ключ": 2}, "$set": {"s": "é" * 200}}
    # each pair differs only in u's value, of the same length; 7 and 8 are upserted
    pairs = (({"_id": 1}, {"_id": 4}), ({"_id": 7, "u": "u7"}, {"_id": 8, "u": "u8"}))
    for first, second in pairs:
        fast = coll.update_one(first, change, upsert=True)
        slow = coll.update_many(second, change, upsert=True)
        assert (fast.matched_count, fast.modified_count) == (
            slow.matched_count,
            slow.modified_count,
        )
        assert (fast.upserted_id is None) == (slow.upserted_id is None)
        head = len(bson.encode({"_id": first["_id"], "u": "u1"})) - 1
        assert raw(coll, first["_id"])[head:] == raw(coll, second["_id"])[head:]
    same = {"$set": {"u": "u1"}}  # what the document holds already: nothing written
    assert coll.update_one({"_id": 1}, same).modified_count == 0
    assert coll.update_many({"_id": 1}, same).modified_count == 0


def test_update_one_after_a_refusal_recovers(coll: Coll) -> None:
    # $inc of a double: the engine function gives up on document 1, so the collection
    # takes the locking statement for inplace.Refusals.RETRY_AFTER updates, then the
    # plain one again (which gives up on document 1 once more). Every answer and every
    # document stays what the general path makes, across both switches.
    coll.insert_many([{"_id": 1, "n": 1.5}, {"_id": 2, "n": 0}])
    rounds = inplace.Refusals.RETRY_AFTER + 60
    for i in range(rounds):
        target = 1 if i % 50 == 0 else 2
        result = coll.update_one({"_id": target}, {"$inc": {"n": 1}})
        assert (result.matched_count, result.modified_count) == (1, 1)
    ones = len(range(0, rounds, 50))
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1.5 + ones}
    assert coll.find_one({"_id": 2}) == {"_id": 2, "n": rounds - ones}
    assert type(found_n(coll, 2)) is int
    assert coll.update_one({"_id": 3}, {"$inc": {"n": 1}}).matched_count == 0


def found_n(coll: Coll, key: int) -> Any:
    document = coll.find_one({"_id": key})
    assert document is not None
    return document["n"]
