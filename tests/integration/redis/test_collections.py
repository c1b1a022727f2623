"""Hashes, lists, sets and sorted sets through redis-py on RESP2 and RESP3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

K = Callable[[str], str]


def pairs(reply: Any) -> list[tuple[bytes, float]]:
    """(member, score) pairs whether redis-py gave tuples (RESP2) or lists (RESP3)."""
    if reply and not isinstance(reply[0], list | tuple):
        reply = [reply]
    return [(m, float(s)) for m, s in reply]


def test_hashes(r: redis.Redis, k: K) -> None:
    key = k("h")
    assert r.hset(key, mapping={"a": "1", "b": "2"}) == 2
    assert r.hset(key, "a", "10") == 0
    assert r.hgetall(key) == {b"a": b"10", b"b": b"2"}
    assert r.hget(key, "a") == b"10"
    assert r.hmget(key, ["a", "zz", "b"]) == [b"10", None, b"2"]
    assert r.hexists(key, "b") is True
    assert r.hlen(key) == 2
    assert sorted(r.hkeys(key)) == [b"a", b"b"]
    assert r.hincrby(key, "a", 5) == 15
    assert r.hincrbyfloat(key, "f", 1.5) == 1.5
    with pytest.raises(redis.ResponseError, match=r"^hash value is not an integer$"):
        r.hincrby(key, "f", 1)
    assert r.hsetnx(key, "a", "x") == 0
    assert r.hstrlen(key, "a") == 2
    assert r.hrandfield(key) in (b"a", b"b", b"f")
    cursor, fields = r.hscan(key, match="a")
    assert (cursor, fields) == (0, {b"a": b"15"})
    assert r.hdel(key, "a", "b", "f", "nope") == 3
    assert r.exists(key) == 0  # an emptied hash is gone
    assert r.hgetall(key) == {}


def test_lists(r: redis.Redis, k: K) -> None:
    key = k("l")
    assert r.rpush(key, "a", "b", "c") == 3
    assert r.lpush(key, "z") == 4
    assert r.lrange(key, 0, -1) == [b"z", b"a", b"b", b"c"]
    assert r.lrange(key, -2, 100) == [b"b", b"c"]
    assert r.llen(key) == 4
    assert r.lindex(key, -1) == b"c"
    assert r.lindex(key, 10) is None
    assert r.lset(key, 1, "A") is True
    with pytest.raises(redis.ResponseError, match=r"^index out of range$"):
        r.lset(key, 10, "x")
    with pytest.raises(redis.ResponseError, match=r"^no such key$"):
        r.lset(k("none"), 0, "x")
    assert r.linsert(key, "before", "b", "B") == 5
    assert r.linsert(key, "after", "nope", "x") == -1
    assert r.lrange(key, 0, -1) == [b"z", b"A", b"B", b"b", b"c"]
    assert r.lpos(key, "b") == 3
    r.rpush(key, "A")
    assert r.lrem(key, -1, "A") == 1
    assert r.ltrim(key, 1, -1) is True
    assert r.lrange(key, 0, -1) == [b"A", b"B", b"b", b"c"]
    assert r.lpop(key) == b"A"
    assert r.rpop(key, 2) == [b"c", b"b"]
    assert r.lmove(key, k("l2"), "LEFT", "RIGHT") == b"B"
    assert r.exists(key) == 0
    assert r.lpop(key) is None
    assert r.lpop(key, 2) is None
    assert r.rpushx(key, "x") == 0
    assert r.lmpop(2, key, k("l2"), direction="LEFT") == [k("l2").encode(), [b"B"]]


def test_sets(r: redis.Redis, k: K) -> None:
    a, b = k("a"), k("b")
    assert r.sadd(a, "1", "2", "3", "3") == 3
    assert r.sadd(b, "2", "3", "4") == 3
    assert r.smembers(a) == {b"1", b"2", b"3"}
    assert r.sismember(a, "1")
    assert [bool(x) for x in r.smismember(a, ["1", "9"])] == [True, False]
    assert r.scard(a) == 3
    assert r.sinter([a, b]) == {b"2", b"3"}
    assert r.sunion([a, b]) == {b"1", b"2", b"3", b"4"}
    assert r.sdiff([a, b]) == {b"1"}
    assert r.sinterstore(k("c"), [a, b]) == 2
    assert r.smembers(k("c")) == {b"2", b"3"}
    assert r.sintercard(2, [a, b]) == 2
    assert r.smove(a, b, "1") is True
    assert r.srem(a, "2", "nope") == 1
    popped = r.spop(a)
    assert popped == b"3"
    assert r.exists(a) == 0
    assert r.srandmember(b) in {b"1", b"2", b"3", b"4"}
    assert r.sscan(b, match="1") == (0, [b"1"])


def test_sorted_sets(r: redis.Redis, k: K) -> None:
    key = k("z")
    assert r.zadd(key, {"a": 1, "b": 2, "c": 3.5}) == 3
    assert r.zadd(key, {"a": 5}, nx=True) == 0
    assert r.zadd(key, {"a": 0.5}, gt=True, ch=True) == 0
    assert r.zadd(key, {"a": 1.5}, xx=True, ch=True) == 1
    assert r.zscore(key, "a") == 1.5
    assert r.zmscore(key, ["a", "nope"]) == [1.5, None]
    assert r.zincrby(key, 2, "a") == 3.5
    assert r.zcard(key) == 3
    assert pairs(r.zrange(key, 0, -1, withscores=True)) == [(b"b", 2.0), (b"a", 3.5), (b"c", 3.5)]
    assert r.zrange(key, 0, 0, desc=True) == [b"c"]
    assert r.zrangebyscore(key, "(2", "+inf") == [b"a", b"c"]
    assert r.zrevrangebyscore(key, 10, 0, start=0, num=1) == [b"c"]
    assert r.zcount(key, "-inf", "(3.5") == 1
    assert r.zrank(key, "a") == 1
    assert r.zrevrank(key, "a") == 1
    assert r.zrank(key, "nope") is None
    with pytest.raises(redis.ResponseError, match=r"^min or max is not a float$"):
        r.zrangebyscore(key, "x", 1)
    assert pairs(r.zpopmin(key)) == [(b"b", 2.0)]
    assert r.zadd(k("lex"), {"a": 0, "b": 0, "c": 0, "d": 0}) == 4
    assert r.zrangebylex(k("lex"), "[b", "(d") == [b"b", b"c"]
    assert r.zlexcount(k("lex"), "-", "+") == 4
    assert r.zremrangebylex(k("lex"), "-", "[b") == 2
    assert r.zunionstore(k("u"), {key: 2, k("lex"): 1}) == 3
    assert pairs(r.zrange(k("u"), 0, -1, withscores=True)) == [
        (b"d", 0.0),
        (b"a", 7.0),
        (b"c", 7.0),
    ]
    assert r.zinterstore(k("i"), [key, k("u")], aggregate="MAX") == 2
    assert pairs(r.zpopmax(key, 2)) == [(b"c", 3.5), (b"a", 3.5)]
    assert r.exists(key) == 0
    assert r.zrangestore(k("rs"), k("u"), 0, 1) == 2
    assert r.zremrangebyrank(k("u"), 0, 0) == 1
    assert r.zscan(k("i"))[0] == 0


def test_resp3_shapes(r3: redis.Redis, k: K) -> None:
    r3.zadd(k("z"), {"a": 1.25})
    raw = r3.execute_command("ZSCORE", k("z"), "a")
    assert raw == 1.25
    r3.hset(k("h"), "f", "v")
    assert r3.execute_command("HGETALL", k("h")) == {b"f": b"v"}
    r3.sadd(k("s"), "m")
    assert r3.execute_command("SMEMBERS", k("s")) == {b"m"}
    assert r3.execute_command("ZRANGE", k("z"), 0, -1, "WITHSCORES") == [[b"a", 1.25]]
