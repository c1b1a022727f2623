"""Many clients at once: coalesced and group-committed writes stay exact and isolated."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
        pipe.incr(k("h")).incr(k("c")).lpush(k("h"), "x").lpush(k("l"), "x")
        pipe.sadd(k("h"), "m").zadd(k("h"), {"m": 1}).hset(k("c"), "f", "v")
        results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError) and results[1] == 1
    assert isinstance(results[2], redis.ResponseError) and results[3] == 1
    assert all(isinstance(x, redis.ResponseError) for x in results[4:])
    assert r2.hgetall(k("h")) == {b"f": b"v"}
