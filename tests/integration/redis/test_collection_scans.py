"""HSCAN / SSCAN / ZSCAN are real cursors: COUNT pages, MATCH filters, the SCAN guarantee."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

K = Callable[[str], str]


def test_hscan_pages_by_count_and_returns_every_field(r: redis.Redis, k: K) -> None:
    key = k("h")
    r.hset(key, mapping={f"f{i}": str(i) for i in range(250)})
    cursor, page = r.hscan(key, 0, count=20)
    assert cursor != 0
    assert 0 < len(page) < 250
    seen: dict[bytes | str, bytes | str] = {}
    pages = 0
    cursor = 0
    while True:
        cursor, page = r.hscan(key, cursor, count=20)
        assert isinstance(page, dict)
        seen.update(page)
        pages += 1
        if cursor == 0:
            break
    assert seen == {f"f{i}".encode(): str(i).encode() for i in range(250)}
    assert pages > 5
    assert set(r.hscan_iter(key, match="f1?", count=7)) == {
        (f"f1{i}".encode(), f"1{i}".encode()) for i in range(10)
    }
    assert sorted(r.hscan_iter(key, match="f2?", no_values=True)) == sorted(
        f"f2{i}".encode() for i in range(10)
    )


def test_sscan_keeps_the_guarantee_while_members_change(r: redis.Redis, k: K) -> None:
    key = k("s")
    r.sadd(key, *[f"m{i}" for i in range(300)])
    seen: set[bytes] = set()
    removed: set[bytes] = set()
    for n, member in enumerate(r.sscan_iter(key, count=25)):
        seen.add(member)
        if n % 3 == 0:  # remove some members and add others mid-iteration
            removed.add(f"m{299 - n}".encode())
            r.srem(key, f"m{299 - n}")
            r.sadd(key, f"new{n}")
    assert {f"m{i}".encode() for i in range(300)} - removed <= seen


def test_zscan_pages_member_score_pairs(r: redis.Redis, k: K) -> None:
    key = k("z")
    r.zadd(key, {f"m{i}": i + 0.5 for i in range(120)})
    cursor, page = r.zscan(key, 0, count=10)
    assert cursor != 0
    assert len(page) < 120
    assert dict(r.zscan_iter(key, count=10)) == {f"m{i}".encode(): i + 0.5 for i in range(120)}
    assert dict(r.zscan_iter(key, match="m11*")) == {
        b"m11": 11.5,
        **{f"m11{i}".encode(): 110 + i + 0.5 for i in range(10)},
    }


def test_scans_of_missing_and_wrong_type_keys(r: redis.Redis, k: K) -> None:
    assert r.hscan(k("missing")) == (0, {})
    assert r.sscan(k("missing")) == (0, [])
    assert r.zscan(k("missing")) == (0, [])
    r.set(k("str"), "x")
    for command in ("HSCAN", "SSCAN", "ZSCAN"):
        with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE"):
            r.execute_command(command, k("str"), 0)
        with pytest.raises(redis.ResponseError, match=r"^invalid cursor$"):
            r.execute_command(command, k("str"), "abc")
        with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
            r.execute_command(command, k("missing"), 0, "COUNT", 0)
        with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
            r.execute_command(command, k("missing"), 0, "COUNT", "x")
        with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
            r.execute_command(command, k("missing"), 0, "MATCH")
    r.sadd(k("s"), "a", "b")
    # Any numeric cursor is accepted; the largest one is the end of the walk.
    assert r.sscan(k("s"), 2**64 - 1) == (0, [])
