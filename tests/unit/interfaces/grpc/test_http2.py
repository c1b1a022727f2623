"""The gRPC front's HTTP/2 codec, fed bytes, asserting bytes (no sockets)."""

from __future__ import annotations

import pytest
from hpack import Encoder

from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.interfaces.grpc.front import _percent, _timeout


def test_frame_round_trips_through_reader() -> None:
    data = h2.frame(h2.HEADERS, h2.END_HEADERS, 3, b"abc") + h2.frame(h2.DATA, 1, 3, b"xy")
    reader = h2.FrameReader()
    assert reader.feed(data) == [(h2.HEADERS, h2.END_HEADERS, 3, b"abc"), (h2.DATA, 1, 3, b"xy")]


@pytest.mark.parametrize("stream_id", [1, 255, 65_537, 2**31 - 1])
def test_unary_frames_are_the_three_frames(stream_id: int) -> None:
    head, message, trailers = h2.response_headers(), b"\x00\x00\x00\x00\x03abc", b"\x00t"
    assert h2.unary_frames(stream_id, head, message, trailers) == (
        h2.frame(h2.HEADERS, h2.END_HEADERS, stream_id, head)
        + h2.frame(h2.DATA, 0, stream_id, message)
        + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream_id, trailers)
    )


def test_reader_keeps_partial_frames_until_complete() -> None:
    data = h2.frame(h2.DATA, 0, 1, b"x" * 100)
    reader = h2.FrameReader()
    frames = []
    for i in range(0, len(data), 7):
        frames += reader.feed(data[i : i + 7])
    assert frames == [(h2.DATA, 0, 1, b"x" * 100)]
    assert reader.buffer == b""


def test_reader_refuses_frame_larger_than_allowed() -> None:
    with pytest.raises(h2.ProtocolError) as caught:
        h2.FrameReader().feed(h2.frame(h2.DATA, 0, 1, b"x" * (h2.DEFAULT_MAX_FRAME + 1)))
    assert caught.value.code == h2.FRAME_SIZE_ERROR


def test_reader_ignores_reserved_stream_bit() -> None:
    data = bytearray(h2.frame(h2.DATA, 0, 5, b""))
    data[5] |= 0x80
    assert h2.FrameReader().feed(bytes(data)) == [(h2.DATA, 0, 5, b"")]


def test_headers_frames_split_large_blocks_into_continuations() -> None:
    block = bytes(range(256)) * 100
    frames = h2.FrameReader().feed(h2.headers_frames(7, block, True, 16_384))
    assert [k for k, *_ in frames] == [h2.HEADERS, h2.CONTINUATION]
    assert frames[0][1] == h2.END_STREAM  # END_HEADERS only on the last frame
    assert frames[1][1] == h2.END_HEADERS
    assert b"".join(f[3] for f in frames) == block


def test_strip_padding_and_priority() -> None:
    padded = bytes([3]) + b"data" + b"\0\0\0"
    assert h2.strip_padding(h2.PADDED, padded) == b"data"
    with_priority = bytes([2]) + b"\0\0\0\1\x10" + b"blk" + b"\0\0"
    assert h2.strip_padding(h2.PADDED | h2.PRIORITY_FLAG, with_priority, priority=True) == b"blk"
    with pytest.raises(h2.ProtocolError):
        h2.strip_padding(h2.PADDED, bytes([9]) + b"ab")


def test_settings_round_trip_and_bad_length() -> None:
    frame = h2.settings_frame({h2.INITIAL_WINDOW_SIZE: 1 << 20, h2.ENABLE_PUSH: 0})
    [(kind, _, stream_id, payload)] = h2.FrameReader().feed(frame)
    assert (kind, stream_id) == (h2.SETTINGS, 0)
    assert h2.parse_settings(payload) == {h2.INITIAL_WINDOW_SIZE: 1 << 20, h2.ENABLE_PUSH: 0}
    with pytest.raises(h2.ProtocolError):
        h2.parse_settings(b"\0\0\0")


def test_encoded_headers_decode_with_hpack() -> None:
    fields = [(b"grpc-status", b"3"), (b"grpc-message", b"x" * 200), (b"k" * 130, b"")]
    decoder = h2.HeaderDecoder(65_536)
    assert decoder.decode(h2.encode_headers(fields)) == fields
    assert decoder.decode(h2.response_headers([(b"a", b"b")])) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"a", b"b"),
    ]


def test_decoder_cache_cleared_when_a_block_adds_entries() -> None:
    """The same indexed bytes name other fields once the dynamic table has moved."""
    encoder = Encoder()
    decoder = h2.HeaderDecoder(65_536)
    decoder.decode(encoder.encode([(b"x-a", b"1")]))
    indexed = encoder.encode([(b"x-a", b"1")])  # one indexed field: dynamic entry 62
    assert decoder.decode(indexed) == [(b"x-a", b"1")]
    assert decoder.decode(indexed) == [(b"x-a", b"1")]
    decoder.decode(encoder.encode([(b"x-b", b"2")]))  # entry 62 is now x-b
    assert decoder.decode(indexed) == [(b"x-b", b"2")]


def test_decoder_refuses_bad_blocks() -> None:
    with pytest.raises(h2.ProtocolError) as caught:
        h2.HeaderDecoder(65_536).decode(b"\xff\xff\xff\xff")
    assert caught.value.code == h2.COMPRESSION_ERROR


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"5S", 5.0), (b"100m", 0.1), (b"2M", 120.0), (b"1H", 3600.0), (b"7u", 7e-6), (b"x", None)],
)
def test_grpc_timeout_header(value: bytes, seconds: float | None) -> None:
    assert _timeout([(b"grpc-timeout", value)]) == seconds


def test_grpc_message_percent_encoding() -> None:
    assert _percent("plain text") == b"plain text"
    assert _percent("100% ünïcode\n") == b"100%25 %C3%BCn%C3%AFcode%0A"
