"""MongoDB wire messages <-> Python, sans-IO.

    header      int32 messageLength, requestID, responseTo, opCode (little-endian)
    OP_MSG      2013: uint32 flagBits, sections (kind 0 body, kind 1 document sequence),
                optional CRC-32C checksum
    OP_QUERY    2004: legacy handshake only (``<db>.$cmd``), answered with OP_REPLY (1)
    OP_COMPRESSED 2012: originalOpcode, uncompressedSize, compressorId, payload:
                snappy (python-snappy), zlib, zstd (the standard library's
                compression.zstd, or its backports.zstd on Python < 3.14), the same
                libraries pymongo uses for ``compressors=``

Document sequences (kind 1) stay raw BSON bytes under their identifier so inserts can
store the client's exact bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from heliosdb.services.documents import bsonform

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013
HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
MAX_MESSAGE_BYTES = 48_000_000
CHECKSUM_PRESENT = 1
MORE_TO_COME = 2
EXHAUST_ALLOWED = 1 << 16
_KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED
SNAPPY, ZLIB, ZSTD = 1, 2, 3
# Every compressor is a declared dependency; the guards only keep a broken install
# talking (drivers then pick another compressor or none).
COMPRESSORS: dict[str, int] = {"zlib": ZLIB}
try:
    import snappy  # type: ignore[import-untyped]

    COMPRESSORS["snappy"] = SNAPPY
except ImportError:  # pragma: no cover
    snappy = None
try:
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # Python < 3.14
    try:
        from backports import zstd  # type: ignore[no-redef, unused-ignore]
    except ImportError:  # pragma: no cover
        zstd = None
if zstd is not None:
    COMPRESSORS["zstd"] = ZSTD


class ProtocolError(Exception):
    """The bytes are not a message we accept: the connection closes."""


@dataclass(slots=True)
class Header:
    length: int
    request_id: int
    response_to: int
    op_code: int


@dataclass(slots=True)
class Message:
    request_id: int
    op_code: int
    body: dict[str, Any]
    sequences: dict[str, list[bytes]] = field(default_factory=dict)
    more_to_come: bool = False
    compressor: int | None = None
    # OP_QUERY only
    namespace: str = ""


def parse_header(data: bytes) -> Header:
    length, request_id, response_to, op_code = HEADER.unpack(data)
    if length < HEADER.size or length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message length {length} out of range")
    return Header(length, request_id, response_to, op_code)


def parse_frame(data: bytes) -> Message:
    """A whole message (header included) whose length field is ``len(data)``."""
    header = parse_header(data[: HEADER.size])
    return parse_message(header, data[HEADER.size :])


def parse_message(header: Header, payload: bytes) -> Message:
    """``payload`` is the message after its 16-byte header."""
    if header.op_code == OP_COMPRESSED:
        if len(payload) < 9:
            raise ProtocolError("short OP_COMPRESSED")
        original, size, compressor = struct.unpack_from("<iiB", payload)
        if size < 0 or size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"OP_COMPRESSED uncompressed size {size} out of range")
        data = _decompress(compressor, payload[9:], size)
        if len(data) != size:
            raise ProtocolError("OP_COMPRESSED size mismatch")
        inner = Header(size + HEADER.size, header.request_id, header.response_to, original)
        if original == OP_COMPRESSED:
            raise ProtocolError("nested OP_COMPRESSED")
        message = parse_message(inner, data)
        message.compressor = compressor
        return message
    if header.op_code == OP_MSG:
        return _parse_op_msg(header, payload)
    if header.op_code == OP_QUERY:
        return _parse_op_query(header, payload)
    raise ProtocolError(f"unsupported opcode {header.op_code}")


def _decompress(compressor: int, data: bytes, size: int) -> bytes:
    """Inflate to at most ``size`` + 1 bytes: a message claiming a small size cannot
    make the node allocate a large one (the caller rejects any size mismatch)."""
    try:
        if compressor == 0:
            return data
        if compressor == ZLIB:
            return zlib.decompressobj().decompress(data, size + 1)
        if compressor == SNAPPY and snappy is not None:
            if _snappy_length(data) != size:
                raise ProtocolError("OP_COMPRESSED size mismatch")
            return bytes(snappy.uncompress(data))
        if compressor == ZSTD and zstd is not None:
            return bytes(zstd.ZstdDecompressor().decompress(data, max_length=size + 1))
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any codec failure is a bad message
        raise ProtocolError(f"cannot decompress: {exc}") from None
    raise ProtocolError(f"unknown compressor {compressor}")


def _snappy_length(data: bytes) -> int:
    """The uncompressed length a raw snappy block declares (its leading varint)."""
    length = shift = 0
    for index, byte in enumerate(data[:5]):
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length
        shift += 7
        if index == 4:
            break
    raise ProtocolError("malformed snappy length")


def _compress(compressor: int, data: bytes) -> bytes:
    if compressor == ZLIB:
        return zlib.compress(data, 1)  # replies: speed over ratio
    if compressor == SNAPPY and snappy is not None:
        return bytes(snappy.compress(data))
    if compressor == ZSTD and zstd is not None:
        return bytes(zstd.compress(data))
    return data


def _document_at(data: bytes, offset: int, end: int | None = None) -> tuple[bytes, int]:
    """The BSON document at ``offset``, which must end by ``end`` (default: the data's end;
    a bound instead of a slice, so a batch of documents is not copied once per document)."""
    limit = len(data) if end is None else end
    if offset + 4 > limit:
        raise ProtocolError("truncated document")
    (size,) = _INT32.unpack_from(data, offset)
    if size < 5 or offset + size > limit or data[offset + size - 1] != 0:
        raise ProtocolError("malformed document length")
    return data[offset : offset + size], offset + size


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        return bsonform.decode(raw)
    except Exception as exc:  # noqa: BLE001 - bson raises several types on bad input
        raise ProtocolError(f"invalid BSON: {exc}") from None


def _parse_op_msg(header: Header, payload: bytes) -> Message:
    if len(payload) < 5:
        raise ProtocolError("short OP_MSG")
    (flags,) = struct.unpack_from("<I", payload)
    if flags & 0xFFFF & ~_KNOWN_FLAGS:
        raise ProtocolError(f"unknown required OP_MSG flag bits {flags:#x}")
    end = len(payload)
    if not flags & CHECKSUM_PRESENT and payload[4] == 0 and end >= 10:
        # The usual command: one body section, the whole rest of the message.
        (size,) = _INT32.unpack_from(payload, 5)
        if size == end - 5 and payload[-1] == 0:
            only = _decode(payload[5:])
            return Message(header.request_id, OP_MSG, only, {}, bool(flags & MORE_TO_COME))
    if flags & CHECKSUM_PRESENT:
        end -= 4
        if end < 5:
            raise ProtocolError("short OP_MSG")
        (expected,) = struct.unpack_from("<I", payload, end)
        whole = HEADER.pack(header.length, header.request_id, header.response_to, header.op_code)
        if crc32c(whole + payload[:end]) != expected:
            raise ProtocolError("OP_MSG checksum mismatch")
    offset = 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[bytes]] = {}
    while offset < end:
        kind = payload[offset]
        offset += 1
        if kind == 0:
            if body is not None:
                raise ProtocolError("more than one body section")
            raw, offset = _document_at(payload, offset, end)
            body = _decode(raw)
        elif kind == 1:
            if offset + 4 > end:
                raise ProtocolError("truncated document sequence")
            (size,) = struct.unpack_from("<i", payload, offset)
            stop = offset + size
            if size < 5 or stop > end:
                raise ProtocolError("malformed document sequence")
            name_end = payload.find(b"\x00", offset + 4, stop)
            if name_end < 0:
                raise ProtocolError("malformed document sequence identifier")
            identifier = payload[offset + 4 : name_end].decode("utf-8", "replace")
            position = name_end + 1
            docs: list[bytes] = []
            while position < stop:
                raw, position = _document_at(payload, position, stop)
                docs.append(raw)
            if identifier in sequences:
                raise ProtocolError(f"duplicate document sequence {identifier}")
            sequences[identifier] = docs
            offset = stop
        else:
            raise ProtocolError(f"unknown section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a body")
    return Message(header.request_id, OP_MSG, body, sequences, bool(flags & MORE_TO_COME))


def _parse_op_query(header: Header, payload: bytes) -> Message:
    if len(payload) < 4:
        raise ProtocolError("short OP_QUERY")
    name_end = payload.find(b"\x00", 4)
    if name_end < 0:
        raise ProtocolError("malformed OP_QUERY namespace")
    namespace = payload[4:name_end].decode("utf-8", "replace")
    offset = name_end + 1 + 8
    raw, _ = _document_at(payload, offset)
    query = _decode(raw)
    if "$query" in query and isinstance(query["$query"], dict):
        query = query["$query"]
    return Message(header.request_id, OP_QUERY, query, namespace=namespace)


def encode_reply(
    request_id: int,
    response_to: int,
    document: dict[str, Any] | RawBSONDocument,
    op_code: int,
    compressor: int | None = None,
) -> bytes:
    data = bson.encode(document, codec_options=bsonform.CODEC_OPTIONS)
    if op_code == OP_QUERY:
        body = struct.pack("<iqii", 8, 0, 0, 1) + data
        inner_op = OP_REPLY
    else:
        body = struct.pack("<I", 0) + b"\x00" + data
        inner_op = OP_MSG
    if compressor is not None and compressor in COMPRESSORS.values() and compressor != 0:
        packed = _compress(compressor, body)
        body = struct.pack("<iiB", inner_op, len(body), compressor) + packed
        inner_op = OP_COMPRESSED
    return HEADER.pack(HEADER.size + len(body), request_id, response_to, inner_op) + body


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
