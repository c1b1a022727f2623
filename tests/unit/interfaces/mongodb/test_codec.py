"""The MongoDB codec on bytes alone: OP_MSG sections, checksum, flags, OP_QUERY,
OP_COMPRESSED, and what makes a message unacceptable."""

from __future__ import annotations

import struct
import zlib

import bson
import pytest

from heliosdb.interfaces.mongodb import codec
from heliosdb.interfaces.mongodb.codec import ProtocolError


def op_msg(flags: int, *sections: bytes, request_id: int = 1, checksum: bool = False) -> bytes:
    payload = struct.pack("<I", flags | (codec.CHECKSUM_PRESENT if checksum else 0))
    payload += b"".join(sections)
    length = 16 + len(payload) + (4 if checksum else 0)
    header = struct.pack("<iiii", length, request_id, 0, codec.OP_MSG)
    if checksum:
        return header + payload + struct.pack("<I", codec.crc32c(header + payload))
    return header + payload


def body(doc: dict[str, object]) -> bytes:
    return b"\x00" + bson.encode(doc)


def sequence(name: str, *docs: dict[str, object]) -> bytes:
    raw = b"".join(bson.encode(d) for d in docs)
    ident = name.encode() + b"\x00"
    return b"\x01" + struct.pack("<i", 4 + len(ident) + len(raw)) + ident + raw


def parse(data: bytes) -> codec.Message:
    header = codec.parse_header(data[:16])
    assert header.length == len(data)
    return codec.parse_message(header, data[16:])


def test_body_and_document_sequence() -> None:
    data = op_msg(0, body({"insert": "c", "$db": "d"}), sequence("documents", {"a": 1}, {"b": 2}))
    message = parse(data)
    assert message.body == {"insert": "c", "$db": "d"}
    assert [bson.decode(d) for d in message.sequences["documents"]] == [{"a": 1}, {"b": 2}]
    assert message.sequences["documents"][0] == bson.encode({"a": 1})
    assert not message.more_to_come


def test_checksum_verified() -> None:
    data = op_msg(0, body({"ping": 1, "$db": "admin"}), checksum=True)
    assert parse(data).body["ping"] == 1
    broken = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(ProtocolError):
        parse(broken)


def test_crc32c_known_value() -> None:
    assert codec.crc32c(b"123456789") == 0xE3069283


def test_more_to_come_and_exhaust_flags() -> None:
    assert parse(op_msg(codec.MORE_TO_COME, body({"insert": "c"}))).more_to_come
    assert parse(op_msg(codec.EXHAUST_ALLOWED, body({"hello": 1}))).body == {"hello": 1}


@pytest.mark.parametrize(
    "data",
    [
        op_msg(1 << 3, body({"ping": 1})),  # unknown required flag bit
        op_msg(0, sequence("documents", {"a": 1})),  # no body
        op_msg(0, body({"a": 1}), body({"b": 1})),  # two bodies
        op_msg(0, b"\x05" + bson.encode({"a": 1})),  # unknown section kind
        op_msg(0, b"\x00" + b"\x10\x00\x00\x00\x00"),  # document length past the end
        op_msg(0, body({"a": 1}), sequence("d", {"x": 1}), sequence("d", {"y": 1})),
    ],
)
def test_bad_op_msg(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_header_limits() -> None:
    with pytest.raises(ProtocolError):
        codec.parse_header(struct.pack("<iiii", 10, 1, 0, codec.OP_MSG))
    with pytest.raises(ProtocolError):
        codec.parse_header(struct.pack("<iiii", 48_000_001, 1, 0, codec.OP_MSG))
    with pytest.raises(ProtocolError):
        codec.parse_message(codec.Header(20, 1, 0, 2002), b"\x00" * 4)  # OP_INSERT


def test_op_query_handshake_and_reply() -> None:
    query = bson.encode({"$query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    message = codec.parse_message(codec.Header(16 + len(payload), 9, 0, codec.OP_QUERY), payload)
    assert message.namespace == "admin.$cmd" and message.body == {"isMaster": 1}
    reply = codec.encode_reply(5, 9, {"ok": 1.0}, codec.OP_QUERY)
    length, request_id, response_to, op_code = struct.unpack_from("<iiii", reply)
    assert (length, request_id, response_to, op_code) == (len(reply), 5, 9, codec.OP_REPLY)
    flags, cursor_id, start, count = struct.unpack_from("<iqii", reply, 16)
    assert (flags, cursor_id, start, count) == (8, 0, 0, 1)
    assert bson.decode(reply[36:]) == {"ok": 1.0}


def test_op_compressed_zlib_both_ways() -> None:
    inner = op_msg(0, body({"ping": 1, "$db": "admin"}))[16:]
    packed = struct.pack("<iiB", codec.OP_MSG, len(inner), 2) + zlib.compress(inner)
    message = codec.parse_message(codec.Header(16 + len(packed), 3, 0, codec.OP_COMPRESSED), packed)
    assert message.body["ping"] == 1 and message.compressor == 2
    reply = codec.encode_reply(1, 3, {"ok": 1.0}, codec.OP_MSG, compressor=2)
    assert struct.unpack_from("<i", reply, 12)[0] == codec.OP_COMPRESSED
    original, _size, compressor = struct.unpack_from("<iiB", reply, 16)
    assert (original, compressor) == (codec.OP_MSG, 2)
    assert bson.decode(zlib.decompress(reply[25:])[5:]) == {"ok": 1.0}
    with pytest.raises(ProtocolError):
        bad = struct.pack("<iiB", codec.OP_MSG, 10, 2) + b"not zlib"
        codec.parse_message(codec.Header(16 + len(bad), 3, 0, codec.OP_COMPRESSED), bad)


def _compressed(compressor: int, packed_inner: bytes, size: int) -> codec.Message:
    payload = struct.pack("<iiB", codec.OP_MSG, size, compressor) + packed_inner
    return codec.parse_message(codec.Header(16 + len(payload), 3, 0, codec.OP_COMPRESSED), payload)


@pytest.mark.parametrize("name", ["snappy", "zlib", "zstd"])
def test_op_compressed_every_compressor_both_ways(name: str) -> None:
    number = codec.COMPRESSORS[name]
    inner = op_msg(0, body({"ping": 1, "$db": "admin", "pad": "x" * 500}))[16:]
    message = _compressed(number, codec._compress(number, inner), len(inner))
    assert message.body["ping"] == 1 and message.compressor == number
    reply = codec.encode_reply(1, 3, {"ok": 1.0, "pad": "y" * 500}, codec.OP_MSG, number)
    original, size, compressor = struct.unpack_from("<iiB", reply, 16)
    assert (original, compressor) == (codec.OP_MSG, number)
    assert len(reply) < 16 + 9 + size  # it did compress
    unpacked = codec._decompress(number, reply[25:], size)
    assert bson.decode(unpacked[5:])["pad"] == "y" * 500


@pytest.mark.parametrize("name", ["snappy", "zlib", "zstd"])
def test_op_compressed_size_must_match(name: str) -> None:
    number = codec.COMPRESSORS[name]
    inner = op_msg(0, body({"ping": 1, "$db": "admin", "pad": "x" * 5000}))[16:]
    packed = codec._compress(number, inner)
    for claimed in (len(inner) - 1, len(inner) + 1, 10):
        with pytest.raises(ProtocolError):
            _compressed(number, packed, claimed)
    with pytest.raises(ProtocolError):
        _compressed(number, packed, codec.MAX_MESSAGE_BYTES + 1)
    with pytest.raises(ProtocolError):
        _compressed(number, b"\xff\xff\xff\xff\xff\xff garbage", 100)


def test_op_compressed_unknown_compressor_closes() -> None:
    with pytest.raises(ProtocolError):
        _compressed(9, b"abc", 3)
