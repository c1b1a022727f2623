"""Which batched commands the hot path hands straight to the coalescer, and how.

Anything it declines (INCRBY, HMSET, an odd HSET, a ZADD score that is not a float ...)
runs its handler, which answers the error or the reply shape; the integration tests
(tests/integration/redis/test_group_writes.py) drive both paths against a real node.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from heliosdb.interfaces.redis.hotpath import _IntSlot, _Replies, _Slot, _submit_direct


class _Recorder:
    """Stands in for the coalescer's queueing methods (no engine is involved here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def incr_into(self, db: int, key: bytes, delta: int, sink: Any) -> None:
        self.calls.append(("incr", db, key, delta))

    def push_into(self, db: int, key: bytes, values: list[bytes], left: bool, sink: Any) -> None:
        self.calls.append(("push", db, key, values, left))

    def add_into(self, db: int, key: bytes, type_: str, elements: list[Any], sink: Any) -> None:
        self.calls.append(("add", db, key, type_, elements))


def _session(recorder: _Recorder) -> Any:
    done: list[bytes] = []
    session = SimpleNamespace(
        server=SimpleNamespace(kv=SimpleNamespace(coalescer=recorder)),
        client=SimpleNamespace(db=3),
        fast_done=done.append,
        done=done,
        cut=[],
    )
    session.run_cut = lambda replies, rest: session.cut.append((replies, rest))
    return session


@pytest.mark.parametrize(
    ("args", "call"),
    [
        ([b"INCR", b"k"], ("incr", 3, b"k", 1)),
        ([b"decr", b"k"], ("incr", 3, b"k", -1)),
        ([b"LPUSH", b"l", b"a", b"b"], ("push", 3, b"l", [b"a", b"b"], True)),
        ([b"rpush", b"l", b"a"], ("push", 3, b"l", [b"a"], False)),
        ([b"SADD", b"s", b"m", b"n"], ("add", 3, b"s", "set", [(b"m", None), (b"n", None)])),
        ([b"HSET", b"h", b"f", b"v"], ("add", 3, b"h", "hash", [(b"f", b"v")])),
        (
            [b"ZADD", b"z", b"1.5", b"a", b"-inf", b"b"],
            ("add", 3, b"z", "zset", [(b"a", 1.5), (b"b", float("-inf"))]),
        ),
    ],
)
def test_common_forms_go_straight_to_the_coalescer(args: list[bytes], call: tuple[Any]) -> None:
    recorder = _Recorder()
    session = _session(recorder)
    slot = _IntSlot(_Replies(session, [args]), 0, 2)
    assert _submit_direct(session, args, slot)
    assert recorder.calls == [call]


@pytest.mark.parametrize(
    "args",
    [
        [b"INCRBY", b"k", b"5"],
        [b"HMSET", b"h", b"f", b"v"],
        [b"HSET", b"h", b"f", b"v", b"g"],
        [b"ZADD", b"z", b"nan", b"a"],
        [b"ZADD", b"z", b"x", b"a"],
        [b"ZADD", b"z", b"1", b"a", b"2"],
        [b"LPUSHX", b"l", b"a"],
    ],
)
def test_other_forms_run_their_handlers(args: list[bytes]) -> None:
    recorder = _Recorder()
    session = _session(recorder)
    assert not _submit_direct(session, args, _IntSlot(_Replies(session, [args]), 0, 2))
    assert recorder.calls == []


def test_int_slot_replies_in_order() -> None:
    session = _session(_Recorder())
    replies = _Replies(session, [[b"INCR", b"a"], [b"INCR", b"b"]])
    second, first = _IntSlot(replies, 1, 3), _IntSlot(replies, 0, 3)
    second.set_exception(ValueError("boom"))
    assert session.done == []
    first.set_result(42)
    assert session.done[0].startswith(b":42\r\n-")
    assert first.done() and not first.cancel()


def test_a_run_ends_at_its_first_get_the_coalescer_left_for_later() -> None:
    """GETs past the coalescer's bytes bound for one round trip (defer): the replies
    before the first of them are written, and the run's commands from it on run again."""
    session = _session(_Recorder())
    run = [[b"GET", b"a"], [b"GET", b"big"], [b"GET", b"c"], [b"GET", b"big2"]]
    replies = _Replies(session, run)
    slots = [_Slot(replies, n, False, 2) for n in range(len(run))]
    assert slots[3].defer()
    slots[2].set_result(b"c")
    slots[0].set_result(b"a")
    assert slots[1].defer()
    assert session.done == []
    assert session.cut == [(b"$1\r\na\r\n", run[1:])]
    assert slots[1].done() and not slots[1].defer()


def test_a_run_of_one_leaves_a_later_get_to_the_coalescer() -> None:
    session = _session(_Recorder())
    assert not _Slot(session, 0, False, 2).defer()
