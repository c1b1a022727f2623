"""Many clients at once: coalesced and group-committed writes stay exact and isolated."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.integration.redis.conftest import connect

K = Callable[[str], str]
CLIENTS = 8
EACH = 40


def test_concurrent_writes_are_exact(redis_port: int, rw_key: str, k: K) -> None:
    def worker(n: int) -> list[object]:
        client = connect(redis_port, rw_key)
        try:
            out: list[object] = []
            for i in range(EACH):
                out.append(client.incr(k("counter")))
                out.append(client.rpush(k("queue"), f"{n}:{i}"))
                out.append(client.hset(k("hash"), f"{n}:{i}", i))
                out.append(client.sadd(k("set"), f"{n}:{i}", "shared"))
                out.append(client.zadd(k("zset"), {f"{n}:{i}": i}))
                client.set(k(f"s{n}"), i)
                out.append(client.get(k(f"s{n}")))
            return out
        finally:
            client.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(worker, range(CLIENTS)))
    total = CLIENTS * EACH
    check = connect(redis_port, rw_key)
    try:
        assert check.get(k("counter")) == str(total).encode()
        counters = sorted(int(str(x)) for res in results for x in res[0::6])
        assert counters == list(range(1, total + 1))  # every INCR saw a distinct value
        assert check.llen(k("queue")) == total
        assert check.hlen(k("hash")) == total
        assert check.scard(k("set")) == total + 1
        assert check.zcard(k("zset")) == total
        for res in results:
            gets = res[5::6]
            assert gets == [str(i).encode() for i in range(EACH)]  # read your own writes
            assert all(x == 1 for x in res[2::6])  # each HSET added one new field
    finally:
        check.close()


def test_errors_in_a_group_touch_only_their_client(r2: redis.Redis, k: K) -> None:
    r2.hset(k("h"), "f", "v")
    with r2.pipeline(transaction=False) as pipe:
        pipe.incr(k("h"))
        pipe.incr(k("c"))
        pipe.lpush(k("h"), "x")
        pipe.lpush(k("l"), "x")
        pipe.sadd(k("h"), "m")
        pipe.zadd(k("h"), {"m": 1})
        pipe.hset(k("c"), "f", "v")
        results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError) and results[1] == 1
    assert isinstance(results[2], redis.ResponseError) and results[3] == 1
    assert all(isinstance(x, redis.ResponseError) for x in results[4:])
    assert r2.hgetall(k("h")) == {b"f": b"v"}


def test_pipelined_batched_writes_keep_order_and_errors(r2: redis.Redis, k: K) -> None:
    """Runs of INCR/LPUSH/HSET/SADD/ZADD are submitted together; replies keep the order."""
    with r2.pipeline(transaction=False) as pipe:
        pipe.lpush(k("l"), "a")
        pipe.incr(k("l"))  # WRONGTYPE: the list exists by then
        pipe.incr(k("c"))
        pipe.incrby(k("c"), 10)
        pipe.execute_command("INCRBY", k("c"), "x")
        pipe.decrby(k("c"), 2)
        pipe.rpush(k("l"), "b", "c")
        pipe.lpushx(k("none"), "x")
        pipe.hset(k("h"), mapping={"f": "1", "g": "2"})
        pipe.execute_command("HMSET", k("h"), "f", "3")
        pipe.sadd(k("s"), "m", "n", "m")
        pipe.zadd(k("z"), {"m": 1})
        pipe.zadd(k("z"), {"m": 5}, nx=True)
        pipe.execute_command("ZADD", k("z"), "notafloat", "m")
        pipe.execute_command("HSET", k("h"), "odd")
        pipe.get(k("c"))
        results = pipe.execute(raise_on_error=False)
    assert results[0] == 1
    assert isinstance(results[1], redis.ResponseError) and str(results[1]).startswith("WRONGTYPE")
    assert results[2:4] == [1, 11]
    assert str(results[4]) == "value is not an integer or out of range"
    assert results[5:12] == [9, 3, 0, 2, True, 2, 1]
    assert results[12] == 0
    assert str(results[13]) == "value is not a valid float"
    assert str(results[14]) == "wrong number of arguments for 'hset' command"
    assert results[15] == b"9"
    assert r2.lrange(k("l"), 0, -1) == [b"a", b"b", b"c"]
    assert r2.hgetall(k("h")) == {b"f": b"3", b"g": b"2"}
    assert r2.zscore(k("z"), "m") == 1.0


def test_batched_writes_of_a_read_only_key_are_refused(redis_port: int, ro_key: str, k: K) -> None:
    client = connect(redis_port, ro_key)
    try:
        for args in (("INCR", k("c")), ("LPUSH", k("l"), "a"), ("SADD", k("s"), "m")):
            with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
                client.execute_command(*args)
    finally:
        client.close()


def test_pipeline_of_large_replies_waits_for_the_reader(r2: redis.Redis, k: K) -> None:
    """Replies past the write limit make the connection wait for the client; none is lost."""
    big = b"v" * (1 << 20)
    r2.set(k("big"), big)
    with r2.pipeline(transaction=False) as pipe:
        for i in range(40):
            pipe.get(k("big"))
            pipe.set(k(f"n{i}"), i)
        results = pipe.execute()
    assert results[0::2] == [big] * 40
    assert results[1::2] == [True] * 40
    assert r2.get(k("n39")) == b"39"
