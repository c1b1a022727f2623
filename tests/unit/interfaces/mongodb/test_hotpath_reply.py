"""The hot path's reply assembly (hotpath._first_batch, one item or several) against what
the normal path encodes for the same first batch (codec.encode_reply of the reply
document), byte for byte."""

from __future__ import annotations

import datetime
import functools
import itertools
import struct
from datetime import UTC
from types import SimpleNamespace
from typing import Any

import bson
import pytest
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from heliosdb.interfaces.mongodb import codec, hotpath

DOCS: list[dict[str, Any]] = [
    {},
    {"_id": 1},
    {"_id": "d5", "k": "key-5", "n": 5, "tags": ["a", "b"], "price": 7.5},
    {"_id": ObjectId(), "when": datetime.datetime(2024, 5, 1, tzinfo=UTC), "n": Int64(2)},
    {"_id": {"x": 1}, "bin": Binary(b"\x01\x02", 5), "nested": {"a": [1, {"c": 2}]}},
    {"_id": "big", "s": "x" * 70_000},  # lengths past 65,535 bytes
]
NAMESPACES = ["bench.items", "hp_1.itémś", "db." + "c" * 200, "d.√.x"]


def normal(items: list[bytes], namespace: str) -> bytes:
    """The reply's OP_MSG as the normal path frames it (commands/crud.find)."""
    batch = [RawBSONDocument(item) for item in items]
    reply = {"cursor": {"firstBatch": batch, "id": Int64(0), "ns": namespace}, "ok": 1.0}
    return codec.encode_reply(7, 9, reply, codec.OP_MSG)


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("count", [1, 2, 3])
def test_first_batch_is_the_normal_paths_reply(namespace: str, count: int) -> None:
    for start in range(len(DOCS)):
        items = [bson.encode(DOCS[(start + i) % len(DOCS)]) for i in range(count)]
        document = hotpath._first_batch(items, namespace)
        assert document is not None
        assert hotpath._frame(7, 9, document) == normal(items, namespace)
        # ... and again, from the namespace's kept tail
        assert hotpath._frame(7, 9, hotpath._first_batch(items, namespace) or b"") == normal(
            items, namespace
        )


def test_first_batch_leaves_items_that_are_not_raw() -> None:
    assert hotpath._first_batch([{"_id": 1}], "a.b") is None
    assert hotpath._first_batch([bytearray(bson.encode({"_id": 1}))], "a.b") is None


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_lone_reply_of_one_item_is_the_normal_paths_reply(namespace: str) -> None:
    """lone_reply with ``item`` packs the message's header and the document's head at
    once: the same message as the general assembly framed, and as the normal path."""
    for doc in DOCS:
        item = bson.encode(doc)
        transport = _Transport()
        ended: list[bool] = []
        state = SimpleNamespace(
            opcounters={"command": 0, "query": 0}, request_ids=itertools.count(7)
        )
        protocol = SimpleNamespace(
            transport=transport, lone_done=functools.partial(ended.append, True)
        )
        message = struct.pack("<ii", 0, 9)  # the client's message: its request id 9
        hotpath.lone_reply(
            SimpleNamespace(state=state),  # type: ignore[arg-type]
            protocol,  # type: ignore[arg-type]
            message,
            "query",
            hotpath._tail(namespace),
            item,
        )
        assert transport.written == [normal([item], namespace)]
        assert ended == [True] and state.opcounters == {"command": 1, "query": 1}
