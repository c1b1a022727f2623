"""Item rows follow their key row in the engine (migration 15's triggers): deleted with it
(DEL, expiry, FLUSHDB, a SET over a collection), moved with it (RENAME, SWAPDB)."""

from __future__ import annotations

from collections.abc import Callable

import redis

from tests.integration.redis.conftest import sql_rows
from tests.nodeproc import NodeProcess

K = Callable[[str], str]
TABLES = ("hashes", "lists", "sets", "zsets")


def _items(node: NodeProcess, rw_key: str, key: str) -> dict[str, list[int]]:
    """Per item table: the dbs of the rows held under ``key`` (empty tables left out)."""
    found = {}
    for table in TABLES:
        rows = sql_rows(
            node,
            rw_key,
            f"SELECT db FROM helios_kv.{table} WHERE key = convert_to($1, 'UTF8') ORDER BY 1",
            [key],
        )
        if rows:
            found[table] = [row[0] for row in rows]
    return found


def _fill(r: redis.Redis, k: K, name: str) -> None:
    r.hset(k(f"{name}h"), mapping={"a": 1, "b": 2})
    r.rpush(k(f"{name}l"), "x", "y")
    r.sadd(k(f"{name}s"), "m")
    r.zadd(k(f"{name}z"), {"m": 1.0})


def test_deleted_keys_take_their_items(
    r2: redis.Redis, k: K, node: NodeProcess, rw_key: str
) -> None:
    _fill(r2, k, "d")
    assert _items(node, rw_key, k("dh")) == {"hashes": [0, 0]}
    assert _items(node, rw_key, k("dl")) == {"lists": [0, 0]}
    assert r2.delete(k("dh"), k("dl"), k("ds")) == 3
    r2.pexpire(k("dz"), 1)
    r2.hset(k("sh"), "f", "v")
    r2.set(k("sh"), "now a string")  # SET replaces a hash: its fields go
    for name in ("dh", "dl", "ds", "sh"):
        assert _items(node, rw_key, k(name)) == {}
    assert r2.zcard(k("dz")) == 0  # expired: invisible at once, its rows swept soon after
    r2.hset(k("dh"), "c", 3)  # a new key of the same name starts empty
    assert r2.hgetall(k("dh")) == {b"c": b"3"}


def test_renamed_and_moved_keys_keep_their_items(
    redis_port: int, r2: redis.Redis, k: K, node: NodeProcess, rw_key: str
) -> None:
    _fill(r2, k, "m")
    r2.rename(k("mh"), k("mh2"))
    r2.set(k("ml2"), "in the way")
    r2.rename(k("ml"), k("ml2"))  # replaces a string key
    assert _items(node, rw_key, k("mh")) == {}
    assert _items(node, rw_key, k("mh2")) == {"hashes": [0, 0]}
    assert _items(node, rw_key, k("ml2")) == {"lists": [0, 0]}
    assert r2.hgetall(k("mh2")) == {b"a": b"1", b"b": b"2"}
    assert r2.lrange(k("ml2"), 0, -1) == [b"x", b"y"]
    six = redis.Redis(port=redis_port, password=rw_key, db=6)
    try:
        six.sadd(k("ms6"), "m")
        assert six.swapdb(6, 7) is True
        assert _items(node, rw_key, k("ms6")) == {"sets": [7]}
        assert six.exists(k("ms6")) == 0
        six.execute_command("SELECT", 7)
        assert six.smembers(k("ms6")) == {b"m"}
        assert six.flushdb() is True
    finally:
        six.close()
    assert _items(node, rw_key, k("ms6")) == {}
    assert _items(node, rw_key, k("mz")) == {"zsets": [0]}  # db 0 untouched
