"""engine/rowcap.py: a result's rows counted on their way in, fed engine bytes by hand."""

from __future__ import annotations

import random
import struct

import pytest

from heliosdb.engine.rowcap import CappedReader, RowCap


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _row(n: int) -> bytes:
    value = b"x" * (n % 7) + str(n).encode()
    return _msg(b"D", struct.pack("!hi", 1, len(value)) + value)


def _answer(rows: int) -> list[bytes]:
    """What the engine sends for Bind, Execute and Sync of a statement with ``rows`` rows
    (a notice among them, as a function's RAISE NOTICE sends one)."""
    messages = [_msg(b"2")]
    for n in range(rows):
        messages.append(_row(n))
        if n == rows // 2:
            messages.append(_msg(b"N", b"SNOTICE\0Mhalf way\0\0"))
    return [*messages, _msg(b"C", b"SELECT %d\0" % rows), _msg(b"Z", b"I")]


def _feed(cap: RowCap, stream: bytes, cuts: list[int]) -> bytes:
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out.append(cap.feed(stream[last:cut]))
        last = cut
    return b"".join(out)


@pytest.mark.parametrize("keep", [0, 1, 5, 9, 10, 11, 40])
def test_rows_past_the_cap_are_held_back_however_the_bytes_arrive(keep: int) -> None:
    messages = _answer(10)
    stream = b"".join(messages)
    expected = b""
    seen = 0
    for m in messages:
        if m[:1] == b"D":
            seen += 1
            if seen > keep:
                continue
        expected += m
    chances = random.Random(keep)
    splits = [[], list(range(1, len(stream)))]  # one chunk; a byte at a time
    for _ in range(200):
        splits.append(sorted(chances.sample(range(1, len(stream)), chances.randint(1, 12))))
    for cuts in splits:
        cap = RowCap(keep)
        assert _feed(cap, stream, cuts) == expected, cuts
        assert cap.over is (keep < 10)
        assert cap.rows == min(keep, 10) or len(stream) <= 7 * keep  # (not walked)


@pytest.mark.parametrize("keep", [3, 4, 40])
def test_whole_chunks_under_the_cap_pass_as_they_are(keep: int) -> None:
    stream = b"".join(_answer(3))
    cap = RowCap(keep)
    first, second = stream[:17], stream[17:]
    assert cap.feed(first) is first
    assert cap.feed(second) is second
    assert not cap.over
    assert cap.rows == (0 if len(stream) <= 7 * keep else 3)  # walked only past 7 * keep


class _Protocol:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def test_the_reader_stops_the_statement_once_and_passes_the_rest_on() -> None:
    protocol = _Protocol()
    stops: list[int] = []
    reader = CappedReader(protocol, 2, lambda: stops.append(1))
    messages = _answer(6)
    for m in messages:
        reader.data_received(m)
    assert stops == [1]
    assert b"".join(protocol.data) == b"".join([*messages[:3], messages[5], *messages[-2:]])
    assert [m[:1] for m in protocol.data] == [b"2", b"D", b"D", b"N", b"C", b"Z"]
    reader.connection_lost(None)
    assert protocol.lost == [None]
