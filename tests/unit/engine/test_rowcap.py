"""engine/rowcap.py: a result's rows counted on their way in, fed engine bytes by hand."""

from __future__ import annotations

import random
import struct

import pytest

from heliosdb.engine.rowcap import CappedReader, RowCap, TooManyBytes


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


# -- the byte cap: DataRow bytes counted at each row's header ---------------------------


def _wide(n: int) -> bytes:
    """A DataRow of about ``10 * n`` bytes."""
    value = b"w" * (10 * n)
    return _msg(b"D", struct.pack("!hi", 1, len(value)) + value)


def _wide_answer(rows: int) -> list[bytes]:
    return [_msg(b"2"), *(_wide(n) for n in range(rows)), _msg(b"C", b"SELECT 9\0")]


@pytest.mark.parametrize("max_bytes", [1, 21, 40, 200, 500, 600, 10_000])
def test_bytes_past_the_cap_are_held_back_however_they_arrive(max_bytes: int) -> None:
    """Rows of 11..91 bytes, 459 in all: the first that would take the DataRows past
    ``max_bytes`` is held back with every row after it."""
    messages = _wide_answer(9)
    stream = b"".join(messages)
    assert sum(len(m) for m in messages if m[:1] == b"D") == 459
    expected, total = b"", 0
    for m in messages:
        if m[:1] == b"D":
            if total + len(m) > max_bytes or total < 0:
                total = -1  # held back: and all rows after it
                continue
            total += len(m)
        expected += m
    chances = random.Random(max_bytes)
    splits = [[], list(range(1, len(stream)))]
    for _ in range(200):
        splits.append(sorted(chances.sample(range(1, len(stream)), chances.randint(1, 12))))
    for cuts in splits:
        cap = RowCap(1000, max_bytes)
        out = _feed(cap, stream, cuts)
        if cap.torn:  # a row of more than half the cap began in bytes passed unwalked
            assert max_bytes < 2 * 91 and stream.startswith(out), cuts
            continue
        assert out == expected, cuts
        assert cap.over is (max_bytes < 459) and cap.by_bytes is cap.over
        assert cap.size <= max_bytes


def test_a_huge_row_is_held_back_at_its_header_without_its_bytes() -> None:
    cap = RowCap(1_000_000, 1000)
    start = _msg(b"2") + b"".join(_wide(3) for _ in range(20))  # 825 bytes: walked past 500
    assert cap.feed(start) is start
    huge = _msg(b"D", struct.pack("!hi", 1, 10**6) + b"w" * 10**6)
    assert cap.feed(huge[:100]) == b""
    assert cap.over and cap.by_bytes and cap.rows == 20 and cap.size == 820
    assert cap.feed(huge[100:65_636]) == b""
    end = _msg(b"E", b"SERROR\0C57014\0Mcanceled\0\0") + _msg(b"Z", b"I")
    assert cap.feed(huge[65_636:] + end) == end


def test_small_results_under_both_caps_are_not_walked() -> None:
    stream = b"".join(_wide_answer(3))  # 65 bytes
    cap = RowCap(1000, 200)  # walked past min(7 * 1000, 200 // 2) bytes
    assert cap.feed(stream) is stream
    assert not cap.over and cap.rows == 0 and cap.size == 0  # (not walked)


def test_a_row_over_the_cap_begun_in_unwalked_bytes_tears_the_stream() -> None:
    """The first 500 bytes passed on unwalked hold the header of a row of 1,000 bytes
    in a result capped at 1,000: it cannot be cut at its header any more."""
    cap = RowCap(1_000_000, 1000)
    first = _msg(b"2") + _wide(100)[:300]
    assert cap.feed(first) is first
    assert cap.feed(_wide(100)[300:]) == b""
    assert cap.over and cap.by_bytes and cap.torn
    assert cap.feed(_msg(b"Z", b"I")) == b""


class _Transport:
    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


def test_the_reader_drops_the_connection_of_a_torn_stream() -> None:
    protocol = _Protocol()
    stops: list[int] = []
    transport = _Transport()
    reader = CappedReader(protocol, 10, lambda: stops.append(1), 1000, transport)  # type: ignore[arg-type]
    first = _msg(b"2") + _wide(100)[:60]
    reader.data_received(first)
    reader.data_received(_wide(100)[60:])
    reader.data_received(_msg(b"Z", b"I"))
    assert stops == [1] and transport.aborted == 1
    assert protocol.data == [first]
    reader.connection_lost(None)
    assert protocol.lost == [None]
    assert isinstance(reader.cap.refusal(lost=True), TooManyBytes)
