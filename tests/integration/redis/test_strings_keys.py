"""Strings, keys and expiry through redis-py on RESP2 and RESP3."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

K = Callable[[str], str]


def test_set_get_roundtrip_binary_safe(r: redis.Redis, k: K) -> None:
    value = bytes(range(256)) * 4 + b"\r\n$3\r\n"
    assert r.set(k("bin"), value) is True
    assert r.get(k("bin")) == value
    assert r.get(k("missing")) is None
    assert r.strlen(k("bin")) == len(value)


def test_set_options(r: redis.Redis, k: K) -> None:
    key = k("s")
    assert r.set(key, "1", nx=True) is True
    assert r.set(key, "2", nx=True) is None
    assert r.set(k("absent"), "x", xx=True) is None
    assert r.set(key, "3", xx=True, get=True) == b"1"
    assert r.set(key, "4", ex=100) is True
    assert 0 < r.ttl(key) <= 100
    assert r.set(key, "5", keepttl=True) is True
    assert r.ttl(key) > 0
    assert r.set(key, "6") is True
    assert r.ttl(key) == -1
    with pytest.raises(redis.ResponseError, match=r"^invalid expire time in 'set' command$"):
        r.set(key, "7", ex=0)
    with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
        r.execute_command("SET", key, "v", "NX", "XX")


def test_counters_and_errors(r: redis.Redis, k: K) -> None:
    key = k("n")
    assert r.incr(key) == 1
    assert r.incrby(key, 41) == 42
    assert r.decr(key) == 41
    assert r.decrby(key, 1) == 40
    assert r.incrbyfloat(key, 0.5) == 40.5
    assert r.get(key) == b"40.5"
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        r.incr(key)
    r.set(key, str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match=r"^increment or decrement would overflow$"):
        r.incr(key)
    r.set(key, " 1")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr(key)


def test_string_edits(r: redis.Redis, k: K) -> None:
    key = k("s")
    assert r.append(key, "Hello") == 5
    assert r.append(key, " World") == 11
    assert r.getrange(key, 0, 4) == b"Hello"
    assert r.getrange(key, -5, -1) == b"World"
    assert r.setrange(key, 6, "Redis") == 11
    assert r.get(key) == b"Hello Redis"
    assert r.setrange(k("pad"), 3, "x") == 4
    assert r.get(k("pad")) == b"\x00\x00\x00x"
    assert r.getset(key, "new") == b"Hello Redis"
    assert r.getdel(key) == b"new"
    assert r.exists(key) == 0
    assert r.mset({k("a"): "1", k("b"): "2"}) is True
    assert r.mget([k("a"), k("nope"), k("b")]) == [b"1", None, b"2"]
    assert r.msetnx({k("a"): "x", k("c"): "3"}) is False
    assert r.get(k("c")) is None
    assert r.setnx(k("c"), "3") is True
    assert r.getex(k("c"), px=50000) == b"3"
    assert r.pttl(k("c")) > 0


def test_keys_commands(r: redis.Redis, k: K) -> None:
    r.set(k("a"), "1")
    r.hset(k("h"), "f", "v")
    assert r.type(k("a")) == b"string"
    assert r.type(k("h")) == b"hash"
    assert r.type(k("none")) == b"none"
    assert r.exists(k("a"), k("a"), k("none")) == 2
    assert r.rename(k("a"), k("b")) is True
    assert r.get(k("b")) == b"1"
    with pytest.raises(redis.ResponseError, match=r"^no such key$"):
        r.rename(k("a"), k("c"))
    assert r.renamenx(k("b"), k("h")) is False
    assert r.copy(k("h"), k("h2")) is True
    assert r.hgetall(k("h2")) == {b"f": b"v"}
    assert sorted(r.keys(k("*"))) == sorted(x.encode() for x in (k("b"), k("h"), k("h2")))
    assert r.delete(k("b"), k("h"), k("nope")) == 2
    assert r.unlink(k("h2")) == 1
    assert r.keys(k("*")) == []


def test_expiry_is_exact_and_lazy(r: redis.Redis, k: K) -> None:
    key = k("e")
    r.set(key, "v", px=150)
    assert r.exists(key) == 1
    time.sleep(0.3)
    assert r.get(key) is None
    assert r.exists(key) == 0
    assert r.ttl(key) == -2
    assert r.keys(k("*")) == []
    r.set(key, "v")
    assert r.ttl(key) == -1
    assert r.expire(key, 100) is True
    assert r.expire(key, 50, gt=True) is False
    assert r.expire(key, 200, gt=True) is True
    assert r.expire(key, 10, nx=True) is False
    assert 0 < r.pttl(key) <= 200_000
    assert r.expiretime(key) > time.time()
    assert r.persist(key) is True
    assert r.persist(key) is False
    assert r.expire(key, -1) is True  # a time in the past deletes
    assert r.exists(key) == 0
    assert r.expire(k("missing"), 10) is False
    r.set(key, "v")
    assert r.pexpireat(key, int(time.time() * 1000) + 100_000) is True
    r.incr(k("c"))
    r.expire(k("c"), 100)
    r.incr(k("c"))  # in-place edits keep the TTL
    assert r.ttl(k("c")) > 0


def test_wrong_type(r: redis.Redis, k: K) -> None:
    r.lpush(k("l"), "x")
    with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE Operation against a key"):
        r.get(k("l"))
    with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE"):
        r.hset(k("l"), "f", "v")
    r.set(k("l"), "now a string")  # SET replaces any type
    assert r.get(k("l")) == b"now a string"
    assert r.type(k("l")) == b"string"


def test_set_batch_replacing_collections(r: redis.Redis, k: K) -> None:
    """Plain SETs of new keys, strings and collections in one coalesced batch."""
    r.hset(k("h"), mapping={"f": "v"})
    r.rpush(k("l"), "old")
    r.set(k("s"), "old")
    with r.pipeline(transaction=False) as pipe:
        for name in ("new", "h", "s", "l"):
            pipe.set(k(name), f"{name}!")
        pipe.get(k("h"))
        assert pipe.execute() == [True, True, True, True, b"h!"]
    assert [r.type(k(n)) for n in ("new", "h", "s", "l")] == [b"string"] * 4
    assert [r.get(k(n)) for n in ("new", "h", "s", "l")] == [b"new!", b"h!", b"s!", b"l!"]
    r.delete(k("l"), k("h"))
    r.rpush(k("l"), "fresh")
    assert r.lrange(k("l"), 0, -1) == [b"fresh"]  # the old items went with the SET
    assert r.hgetall(k("h")) == {}


def test_scan_returns_every_key_while_keys_change(r: redis.Redis, k: K) -> None:
    with r.pipeline(transaction=False) as pipe:
        for i in range(300):
            pipe.set(k(f"scan:{i}"), i)
        pipe.execute()
    seen: set[bytes] = set()
    for i, key in enumerate(r.scan_iter(match=k("scan:*"), count=25)):
        seen.add(key)
        if i % 3 == 0:
            r.delete(k(f"scan:{299 - i}"))
            r.set(k(f"new:{i}"), 1)
    kept = {k(f"scan:{i}").encode() for i in range(300)} - {
        k(f"scan:{299 - i}").encode() for i in range(0, 300, 3)
    }
    assert kept <= seen
    assert list(r.scan_iter(match=k("*"), _type="hash")) == []
    with pytest.raises(redis.ResponseError, match=r"^invalid cursor$"):
        r.execute_command("SCAN", "abc")
    cursor, _page = r.scan(cursor=12345678901234567, match=k("*"))
    assert isinstance(cursor, int)


def test_dbsize_select_flushdb(r: redis.Redis, k: K, redis_port: int, rw_key: str) -> None:
    other = redis.Redis(port=redis_port, password=rw_key, db=7)
    try:
        other.flushdb()
        assert other.dbsize() == 0
        other.set(k("x"), 1)
        assert other.dbsize() == 1
        assert r.get(k("x")) is None  # another database
        assert other.flushdb() is True
        assert other.dbsize() == 0
    finally:
        other.close()
    with pytest.raises(redis.ResponseError, match=r"^DB index is out of range$"):
        r.execute_command("SELECT", 16)
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        r.execute_command("SELECT", "x")


def test_unknown_command_and_arity(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError) as err:
        r.execute_command("FOO", "a", "b")
    assert str(err.value) == "unknown command 'FOO', with args beginning with: 'a' 'b' "
    with pytest.raises(redis.ResponseError) as err:
        r.execute_command("GET")
    assert str(err.value) == "wrong number of arguments for 'get' command"
    with pytest.raises(redis.ResponseError, match="not supported"):
        r.execute_command("EVAL", "return 1", 0)
    with pytest.raises(redis.ResponseError, match="not supported"):
        r.execute_command("XADD", "s", "*", "f", "v")
