"""HTTP/2 framing and header blocks for the gRPC front (sans-IO: bytes in, bytes out).

Only what a gRPC peer uses (RFC 9113): the frames, SETTINGS, flow-control windows and
HPACK. Header blocks are decoded by ``hpack`` (Huffman codes, the dynamic table) and
encoded here as literals that never enter a table, so this side keeps no encoder state.

    FrameReader   buffered bytes -> (type, flags, stream id, payload)
    frame()       one frame's bytes; headers_frames() splits a block into CONTINUATIONs
    HeaderDecoder hpack's decoder, with repeated blocks answered from a small cache
    encode_headers() a block of literal fields
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from hpack import Decoder
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6

# Error codes (RST_STREAM, GOAWAY)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 5, 6, 7, 8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 9, 11

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

Headers = list[tuple[bytes, bytes]]

_HEADER = struct.Struct(">BHBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY(code)."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


_HEADERS_ONLY = bytes((HEADERS, END_HEADERS))
_DATA_PLAIN = bytes((DATA, 0))
_HEADERS_LAST = bytes((HEADERS, END_HEADERS | END_STREAM))


def unary_frames(stream_id: int, head: bytes, message: bytes, trailers: bytes) -> bytes:
    """A whole unary answer: HEADERS ``head``, one DATA frame ``message``, then HEADERS
    ``trailers`` ending the stream (what three ``frame()`` calls make, in one join). The
    caller checks that the message fits one frame and the windows."""
    sid = stream_id.to_bytes(4)
    return b"".join(
        (
            len(head).to_bytes(3), _HEADERS_ONLY, sid, head,
            len(message).to_bytes(3), _DATA_PLAIN, sid, message,
            len(trailers).to_bytes(3), _HEADERS_LAST, sid, trailers,
        )
    )  # fmt: skip


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (and CONTINUATION frames when the block is larger than ``max_frame``)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    for i, part in enumerate(parts[1:], start=2):
        out.append(frame(CONTINUATION, END_HEADERS if i == len(parts) else 0, stream_id, part))
    return b"".join(out)


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def parse_settings(payload: bytes) -> dict[int, int]:
    if len(payload) % 6:
        raise ProtocolError("SETTINGS payload is not a multiple of 6", FRAME_SIZE_ERROR)
    return dict(_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def parse_u32(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError("frame payload must be 4 bytes", FRAME_SIZE_ERROR)
    value: int = _U32.unpack(payload)[0] & 0x7FFFFFFF
    return value


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def strip_padding(flags: int, payload: bytes, *, priority: bool = False) -> bytes:
    """A DATA or HEADERS payload without its padding (and HEADERS' priority fields)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise ProtocolError("PADDED frame without a pad length")
        start, end = 1, end - payload[0]
    if priority and flags & PRIORITY_FLAG:
        start += 5
    if end < start:
        raise ProtocolError("padding longer than the frame")
    return payload[start:end] if (start, end) != (0, len(payload)) else payload


class FrameReader:
    """Frames out of a byte stream; ``max_frame`` is the largest payload this side allows."""

    __slots__ = ("buffer", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.buffer = b""
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buffer = self.buffer + data if self.buffer else data
        frames = []
        pos, size = 0, len(buffer)
        unpack = _HEADER.unpack_from
        while size - pos >= 9:
            hi, lo, kind, flags, stream_id = unpack(buffer, pos)
            length = hi << 16 | lo
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes", FRAME_SIZE_ERROR)
            end = pos + 9 + length
            if end > size:
                break
            frames.append((kind, flags, stream_id & 0x7FFFFFFF, buffer[pos + 9 : end]))
            pos = end
        self.buffer = buffer[pos:]
        return frames


class HeaderDecoder:
    """HPACK decoding; a block seen before while the dynamic table did not move is
    answered from a cache (a client repeats the same indexed fields on every call)."""

    __slots__ = ("_cache", "_decoder", "_first", "_size")

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = Decoder()
        self._decoder.max_header_list_size = max_header_list_size
        self._cache: dict[bytes, Headers] = {}
        self._first: object = None
        self._size = 0

    def decode(self, block: bytes) -> Headers:
        hit = self._cache.get(block)
        if hit is not None:
            return hit
        try:
            headers: Headers = self._decoder.decode(block, raw=True)  # type: ignore[assignment]
        except HPACKError as exc:
            raise ProtocolError(f"header block: {exc}", COMPRESSION_ERROR) from None
        table = self._decoder.header_table
        entries = table.dynamic_entries
        first = entries[0] if entries else None
        if first is not self._first or table._current_size != self._size:
            # The block changed the table: every cached answer may now be wrong.
            self._cache.clear()
            self._first, self._size = first, table._current_size
        elif len(self._cache) < 256:
            self._cache[bytes(block)] = headers
        return headers


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Literal header fields without indexing (new names, no Huffman coding)."""
    out = []
    for name, value in headers:
        out.append(b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value)
    return b"".join(out)


STATUS_200 = b"\x88"  # ":status: 200", static table entry 8
CONTENT_TYPE_GRPC = b"\x0f\x10" + _integer(16, 7, 0) + b"application/grpc"


def response_headers(extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A gRPC response's leading header block (``:status 200``, the content type)."""
    return STATUS_200 + CONTENT_TYPE_GRPC + encode_headers(extra)
