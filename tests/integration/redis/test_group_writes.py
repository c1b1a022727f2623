"""The coalescer's one-call group writes (INCR upsert, helios_kv.push_group / add_group).

A client's pipelined run of one kind of write lands in one group, so these pipelines
drive the one-call forms and the cases they hand back to the group transaction
(repeated keys, expired keys, LPUSHX, keys of another type) in a single group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.integration.redis.conftest import connect

K = Callable[[str], str]


def _expire_now(r: redis.Redis, *keys: str) -> None:
    for key in keys:
        r.pexpire(key, 1)
    time.sleep(0.01)


def test_repeated_counters_in_one_group_apply_in_order(r2: redis.Redis, k: K) -> None:
    with r2.pipeline(transaction=False) as pipe:
        pipe.incr(k("c"))
        pipe.incr(k("c"))
        pipe.incrby(k("c"), 5)
        pipe.decr(k("d"))
        pipe.incr(k("c"))
        assert pipe.execute() == [1, 2, 7, -1, 8]
    assert r2.get(k("c")) == b"8"


def test_counter_of_an_expired_key_starts_again_without_ttl(r2: redis.Redis, k: K) -> None:
    r2.set(k("c"), 41)
    r2.set(k("e"), 100)
    r2.expire(k("e"), 1000)
    _expire_now(r2, k("c"))
    with r2.pipeline(transaction=False) as pipe:
        pipe.incr(k("c"))
        pipe.incr(k("c"))
        pipe.incr(k("e"))
        assert pipe.execute() == [1, 2, 101]
    assert r2.ttl(k("c")) == -1
    assert 0 < r2.ttl(k("e")) <= 1000  # INCR keeps a live key's TTL


def test_counter_errors_in_one_group(r2: redis.Redis, k: K) -> None:
    r2.set(k("text"), "abc")
    r2.set(k("big"), 2**63 - 1)
    r2.set(k("spaced"), " 1")
    r2.rpush(k("list"), "x")
    with r2.pipeline(transaction=False) as pipe:
        pipe.incr(k("text"))
        pipe.incr(k("big"))
        pipe.incr(k("spaced"))
        pipe.incr(k("list"))
        pipe.incr(k("ok"))
        pipe.decrby(k("big"), 1)
        results = pipe.execute(raise_on_error=False)
    assert [str(x) for x in results[:4]] == [
        "value is not an integer or out of range",
        "increment or decrement would overflow",
        "value is not an integer or out of range",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    ]
    assert results[4:] == [1, 2**63 - 2]


def test_left_and_right_pushes_in_one_group(r2: redis.Redis, k: K) -> None:
    r2.rpush(k("old"), "m")
    with r2.pipeline(transaction=False) as pipe:
        pipe.lpush(k("l"), "a")
        pipe.rpush(k("l"), "b")
        pipe.lpush(k("l"), "c", "d")
        pipe.rpush(k("old"), "n")
        pipe.lpush(k("old"), "l")
        pipe.rpush(k("l"), "e")
        assert pipe.execute() == [1, 2, 4, 2, 3, 5]
    assert r2.lrange(k("l"), 0, -1) == [b"d", b"c", b"a", b"b", b"e"]
    assert r2.lrange(k("old"), 0, -1) == [b"l", b"m", b"n"]


def test_pushes_to_expired_and_wrong_typed_keys(r2: redis.Redis, k: K) -> None:
    r2.rpush(k("gone"), "old1", "old2")
    r2.set(k("was_string"), "v")
    r2.set(k("string"), "v")
    _expire_now(r2, k("gone"), k("was_string"))
    with r2.pipeline(transaction=False) as pipe:
        pipe.lpush(k("gone"), "a")
        pipe.rpush(k("was_string"), "b")
        pipe.lpush(k("string"), "c")
        pipe.lpush(k("gone"), "e")
        results = pipe.execute(raise_on_error=False)
    assert results[:2] == [1, 1]
    assert str(results[2]).startswith("WRONGTYPE")
    assert results[3] == 2
    with r2.pipeline(transaction=False) as pipe:  # LPUSHX takes the group transaction
        pipe.lpushx(k("missing"), "d")
        pipe.rpushx(k("gone"), "f")
        pipe.lpush(k("missing2"), "g")
        assert pipe.execute() == [0, 3, 1]
    assert r2.lrange(k("gone"), 0, -1) == [b"e", b"a", b"f"]
    assert r2.type(k("was_string")) == b"list"
    assert r2.exists(k("missing")) == 0
    assert r2.get(k("string")) == b"v"


def test_adds_in_one_group_count_each_new_element_once(r2: redis.Redis, k: K) -> None:
    r2.hset(k("h"), "old", "1")
    with r2.pipeline(transaction=False) as pipe:
        pipe.hset(k("h"), mapping={"f": "1", "old": "2"})
        pipe.hset(k("h"), "f", "3")
        pipe.hset(k("h"), mapping={"g": "4", "g2": "5"})
        pipe.hset(k("h2"), "x", "y")
        assert pipe.execute() == [1, 0, 2, 1]
    assert r2.hgetall(k("h")) == {b"old": b"2", b"f": b"3", b"g": b"4", b"g2": b"5"}
    with r2.pipeline(transaction=False) as pipe:
        pipe.sadd(k("s"), "a", "b", "a")
        pipe.sadd(k("s"), "b", "c")
        pipe.sadd(k("s2"), "z")
        assert pipe.execute() == [2, 1, 1]
    assert r2.smembers(k("s")) == {b"a", b"b", b"c"}
    with r2.pipeline(transaction=False) as pipe:
        pipe.zadd(k("z"), {"a": 1, "b": 2})
        pipe.zadd(k("z"), {"a": 5, "c": 3})
        pipe.zadd(k("z"), {"c": 1})
        assert pipe.execute() == [2, 1, 0]
    assert r2.zrange(k("z"), 0, -1, withscores=True) == [(b"c", 1.0), (b"b", 2.0), (b"a", 5.0)]


def test_adds_of_one_type_and_of_several_in_one_group(r2: redis.Redis, k: K) -> None:
    """All HSET, all SADD or all ZADD: the one-type calls (add_hash_group ...); mixed: the
    general add_group. Same answers either way."""
    r2.sadd(k("s"), "a")
    r2.zadd(k("z"), {"a": 1})
    for mixed in (False, True):
        n = "m" if mixed else "o"
        with r2.pipeline(transaction=False) as pipe:
            pipe.hset(k(f"h{n}"), "f", "1")
            pipe.hset(k(f"h{n}"), mapping={"f": "2", "g": "3"})
            if mixed:
                pipe.sadd(k("s"), "a", "b")
                pipe.zadd(k("z"), {"a": 2, "c": 3})
                pipe.hset(k("s"), "f", "v")
            replies = pipe.execute(raise_on_error=False)
        assert replies[:2] == [1, 1]
        if mixed:
            assert replies[2:4] == [1, 1]
            assert str(replies[4]).startswith("WRONGTYPE")
        assert r2.hgetall(k(f"h{n}")) == {b"f": b"2", b"g": b"3"}
    assert r2.smembers(k("s")) == {b"a", b"b"}
    assert r2.zrange(k("z"), 0, -1, withscores=True) == [(b"a", 2.0), (b"c", 3.0)]


def test_adds_to_expired_and_wrong_typed_keys(r2: redis.Redis, k: K) -> None:
    r2.hset(k("gone"), mapping={"a": "1", "b": "2"})
    r2.rpush(k("list"), "x")
    _expire_now(r2, k("gone"))
    with r2.pipeline(transaction=False) as pipe:
        pipe.hset(k("gone"), "a", "3")
        pipe.hset(k("list"), "f", "v")
        pipe.hset(k("ok"), "f", "v")
        results = pipe.execute(raise_on_error=False)
    assert results[0] == 1
    assert str(results[1]).startswith("WRONGTYPE")
    assert results[2] == 1
    assert r2.hgetall(k("gone")) == {b"a": b"3"}
    assert r2.ttl(k("gone")) == -1
    with r2.pipeline(transaction=False) as pipe:  # two types for one key in one group
        pipe.sadd(k("mixed"), "m")
        pipe.zadd(k("mixed"), {"m": 1})
        pipe.sadd(k("mixed"), "n")
        results = pipe.execute(raise_on_error=False)
    assert results[0] == 1 and results[2] == 1
    assert str(results[1]).startswith("WRONGTYPE")


def test_group_writes_from_many_clients_bump_versions(
    redis_port: int, rw_key: str, r2: redis.Redis, k: K
) -> None:
    """WATCH sees a key changed by another client's grouped write."""
    for key, setup in (("l", r2.rpush), ("h", r2.hset), ("c", r2.set)):
        args = ("f", "v") if key == "h" else ("1",)
        setup(k(key), *args)  # type: ignore[operator]
    watcher = connect(redis_port, rw_key)
    try:
        for key, write in (
            ("l", lambda c: c.lpush(k("l"), "x")),
            ("h", lambda c: c.hset(k("h"), "f2", "v")),
            ("c", lambda c: c.incr(k("c"))),
        ):
            with watcher.pipeline() as pipe:
                pipe.watch(k(key))
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda _, w=write: _run(redis_port, rw_key, w), range(4)))
                pipe.multi()
                pipe.get(k("c"))
                try:
                    pipe.execute()
                    raise AssertionError(f"EXEC ran although {key} changed")
                except redis.WatchError:
                    pass
    finally:
        watcher.close()
    assert r2.llen(k("l")) == 5 and r2.hlen(k("h")) == 2 and r2.get(k("c")) == b"5"


def _run(port: int, password: str, write: Callable[[redis.Redis], object]) -> None:
    client = connect(port, password)
    try:
        write(client)
    finally:
        client.close()


def test_counters_of_one_key_summed_in_one_group(r: redis.Redis, k: K) -> None:
    """INCRBYs of a key that all go one way are applied as their total; each reply is the
    value after it, in the order sent; mixed directions and overflow answer as one by one."""
    with r.pipeline(transaction=False) as pipe:
        for _ in range(20):
            pipe.incr(k("up"))
        pipe.incrby(k("up"), 0)
        pipe.incrby(k("up"), 10)
        pipe.decr(k("down"))
        pipe.decrby(k("down"), 4)
        pipe.incr(k("mixed"))
        pipe.decr(k("mixed"))
        pipe.incrby(k("mixed"), 7)
        pipe.decrby(k("mixed"), 2)
        assert pipe.execute() == [*range(1, 21), 20, 30, -1, -5, 1, 0, 7, 5]
    r.set(k("edge"), 2**63 - 3)
    r.set(k("low"), -(2**63) + 1)
    with r.pipeline(transaction=False) as pipe:
        pipe.incr(k("edge"))
        pipe.incr(k("edge"))
        pipe.incr(k("edge"))
        pipe.incr(k("edge"))
        pipe.decr(k("low"))
        pipe.decr(k("low"))
        pipe.incrby(k("big"), 2**62)
        pipe.incrby(k("big"), 2**62)
        results = pipe.execute(raise_on_error=False)
    assert results[:2] == [2**63 - 2, 2**63 - 1]
    assert [str(x) for x in results[2:4]] == ["increment or decrement would overflow"] * 2
    assert results[4] == -(2**63)
    assert str(results[5]) == "increment or decrement would overflow"
    assert results[6] == 2**62
    assert str(results[7]) == "increment or decrement would overflow"
    assert r.get(k("edge")) == str(2**63 - 1).encode()
    assert r.get(k("big")) == str(2**62).encode()
    assert [r.get(k(n)) for n in ("up", "down", "mixed")] == [b"30", b"-5", b"5"]


def test_many_clients_counting_one_key(redis_port: int, rw_key: str, k: K) -> None:
    def client(n: int) -> list[int]:
        conn = connect(redis_port, rw_key)
        try:
            return [int(conn.incr(k("hot"))) for _ in range(25)]
        finally:
            conn.close()

    with ThreadPoolExecutor(16) as pool:
        seen = [value for values in pool.map(client, range(16)) for value in values]
    assert sorted(seen) == list(range(1, 16 * 25 + 1))  # each INCR saw its own value
