"""A lane splits the engine's replies at each ReadyForQuery and gives each client its own,
in the order the Queries went, however the bytes are cut."""

from __future__ import annotations

import itertools
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heliosdb.interfaces.postgres import lanes as lanes_module
from heliosdb.interfaces.postgres.lanes import Lane
from heliosdb.interfaces.postgres.pooling import _solo_query
from tests.integration.postgres.rawclient import message as _msg


class _Client:
    def __init__(self) -> None:
        self.received = bytearray()
        self.done = 0

    def lane_reply(self, data: bytes) -> None:
        self.received += data

    def lane_done(self) -> None:
        self.done += 1


def _lane() -> Lane:
    session: Any = SimpleNamespace(writer=SimpleNamespace(transport=SimpleNamespace()))
    session.writer.transport.write = lambda data: None
    return Lane(SimpleNamespace(), session)  # type: ignore[arg-type]


def _reply(n: int, size: int) -> bytes:
    """A select's reply whose row holds ReadyForQuery's bytes (only boundaries count)."""
    row = (b"Z\0\0\0\x05I" * (size // 6 + 1))[:size] + str(n).encode()
    return (
        _msg(b"T", b"\0\x01x\0" + bytes(18))
        + _msg(b"D", b"\0\x01" + struct.pack("!i", len(row)) + row)
        + _msg(b"C", b"SELECT 1\0")
        + _msg(b"Z", b"I")
    )


@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 2000), max_size=12),
)
def test_each_client_gets_exactly_its_reply_whatever_the_chunks(
    sizes: list[int], cuts: list[int]
) -> None:
    lane = _lane()
    clients = [_Client() for _ in sizes]
    for client in clients:
        lane.queue.append((client, b"shape"))  # type: ignore[arg-type]
    replies = [_reply(i, size) for i, size in enumerate(sizes)]
    stream = b"".join(replies)
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        lane.data_received(stream[start:end])
    assert [bytes(c.received) for c in clients] == replies
    assert [c.done for c in clients] == [1] * len(clients)
    assert not lane.queue and not lane.carry and not lane.skip


def test_bytes_while_nothing_is_owed_go_to_no_one() -> None:
    lane = _lane()
    lane.data_received(_msg(b"N", b"SNOTICE\0\0"))  # an idle connection's notice
    client = _Client()
    lane.queue.append((client, b"shape"))  # type: ignore[arg-type]
    lane.data_received(_reply(1, 10))
    assert bytes(client.received) == _reply(1, 10)


def test_a_query_that_ran_long_makes_its_shape_slow() -> None:
    lane = _lane()
    lanes_module.solo_shapes.add(b"slow shape")
    client = _Client()
    lane.queue.append((client, b"slow shape"))  # type: ignore[arg-type]
    lane.started = lanes_module._now() - 2 * lanes_module.QUICK
    assert lane.stuck(lanes_module._now())
    lane.data_received(_reply(1, 0))
    assert b"slow shape" in lanes_module.slow_shapes
    assert b"slow shape" not in lanes_module.solo_shapes
    lanes_module.remember_solo(b"slow shape")  # once slow, never a lane's again
    assert b"slow shape" not in lanes_module.solo_shapes


@pytest.mark.parametrize(
    ("text", "solo"),
    [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 77;", True),
        ("select count(*) from t", True),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", False),  # row locks: may wait for a txn
        ("select * from t for no key update", False),
        ("SELECT * FROM t FOR SHARE", False),
        ("SELECT * FROM t for key share", False),
        ("SELECT 1; SELECT 2", False),  # several statements
        ("SELECT pg_advisory_lock(1)", False),  # session state
        ("INSERT INTO t VALUES (1)", False),
        ("BEGIN", False),
        ("  SELECT 1", False),  # not known without the full checks: the pool's way
    ],
)
def test_which_queries_may_take_a_lane(text: str, solo: bool) -> None:
    data = _msg(b"Q", text.encode() + b"\0")
    shape = data.translate(bytes.maketrans(b"123456789", b"000000000"))
    assert _solo_query(data, shape) is solo
    assert (shape in lanes_module.solo_shapes) is solo


def test_a_chunk_of_several_queries_or_part_of_one_takes_no_lane() -> None:
    one = _msg(b"Q", b"SELECT 'several'\0")
    for chunk in (one + _msg(b"Q", b"BEGIN\0"), one + one, one[:-3]):
        shape = chunk.translate(bytes.maketrans(b"123456789", b"000000000"))
        assert not _solo_query(chunk, shape)
        assert shape not in lanes_module.solo_shapes
