"""The coalescer's GET/SET batches: one upsert per batch with each key's last value, each
key read once, and GETs of a key the batch's SETs wrote answered from those SETs; and the
expiry sweep, which deletes what reads already hide.

A client's pipeline of plain GET/SET arrives in one read and lands in one batch, so these
pipelines drive the batch paths; many clients at once put several clients' commands in one
batch. The answers must be what Redis gives one command at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.integration.redis.conftest import connect, sql_rows
from tests.nodeproc import NodeProcess

K = Callable[[str], str]


def _sql_value(node: NodeProcess, rw_key: str, key: str) -> tuple[str, str | None] | None:
    rows = sql_rows(
        node,
        rw_key,
        "SELECT type, convert_from(value, 'UTF8') FROM helios_kv.keys "
        "WHERE db = 0 AND key = convert_to($1, 'UTF8')",
        [key],
    )
    return None if not rows else (rows[0][0], rows[0][1])


def test_many_sets_of_one_key_in_a_batch_keep_the_last(
    r: redis.Redis, k: K, node: NodeProcess, rw_key: str
) -> None:
    with r.pipeline(transaction=False) as pipe:
        for n in range(50):
            pipe.set(k("s"), f"v{n}")
        pipe.get(k("s"))
        pipe.get(k("s"))
        pipe.get(k("other"))
        replies = pipe.execute()
    assert replies[:50] == [True] * 50
    assert replies[50:] == [b"v49", b"v49", None]
    assert r.get(k("s")) == b"v49"
    assert _sql_value(node, rw_key, k("s")) == ("string", "v49")


def test_reads_before_and_after_writes_of_the_same_key(r2: redis.Redis, k: K) -> None:
    r2.set(k("a"), "old")
    with r2.pipeline(transaction=False) as pipe:
        # The GETs before the first SET see the old value; those after see the last SET.
        pipe.get(k("a"))
        pipe.get(k("a"))
        pipe.set(k("a"), "new1")
        pipe.set(k("a"), "new2")
        pipe.get(k("a"))
        pipe.set(k("a"), "new3")
        pipe.get(k("a"))
        pipe.get(k("b"))
        assert pipe.execute() == [b"old", b"old", True, True, b"new2", True, b"new3", None]
    assert r2.get(k("a")) == b"new3"


def test_set_with_get_option_and_plain_sets_in_one_pipeline(r2: redis.Redis, k: K) -> None:
    with r2.pipeline(transaction=False) as pipe:
        pipe.set(k("a"), "1")
        pipe.set(k("a"), "2")
        pipe.set(k("a"), "3", get=True)
        pipe.get(k("a"))
        pipe.set(k("a"), "4")
        pipe.set(k("a"), "5", get=True)
        pipe.set(k("a"), "6")
        pipe.get(k("a"))
        assert pipe.execute() == [True, True, b"2", b"3", True, b"4", True, b"6"]


def test_mixed_types_in_one_batch(r: redis.Redis, k: K, node: NodeProcess, rw_key: str) -> None:
    r.hset(k("h"), "f", "v")
    r.rpush(k("l"), "x")
    with r.pipeline(transaction=False) as pipe:
        pipe.get(k("h"))
        pipe.set(k("s"), "plain")
        pipe.get(k("s"))
        replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], redis.ResponseError)
    assert str(replies[0]).startswith("WRONGTYPE")
    assert replies[1:] == [True, b"plain"]
    with r.pipeline(transaction=False) as pipe:
        # SET replaces a key of another type (its items go) and the batch's GET sees it.
        pipe.set(k("h"), "now a string")
        pipe.set(k("l"), "l1")
        pipe.set(k("l"), "l2")
        pipe.get(k("h"))
        pipe.get(k("l"))
        assert pipe.execute() == [True, True, True, b"now a string", b"l2"]
    assert r.type(k("h")) == b"string"
    assert _sql_value(node, rw_key, k("l")) == ("string", "l2")
    sql = "SELECT count(*) FROM helios_kv.hashes WHERE key = convert_to($1, 'UTF8')"
    assert sql_rows(node, rw_key, sql, [k("h")]) == [[0]]


def test_expired_key_in_a_batch_reads_as_missing_until_set(r2: redis.Redis, k: K) -> None:
    r2.set(k("e"), "old", px=1)
    while r2.pttl(k("e")) > 0:  # PTTL turns -2 once the key has expired
        pass
    with r2.pipeline(transaction=False) as pipe:
        pipe.get(k("e"))
        pipe.get(k("e"))
        pipe.set(k("e"), "again")
        pipe.get(k("e"))
        assert pipe.execute() == [None, None, True, b"again"]
    assert r2.ttl(k("e")) == -1


def test_the_sweep_deletes_expired_rows(
    r2: redis.Redis, k: K, node: NodeProcess, rw_key: str
) -> None:
    """The sweep sleeps until the next key expires, or SWEEP_IDLE_SECONDS (2 s) for keys
    given a TTL since its last round; the rows go from the table either way."""
    r2.set(k("soon"), "v", px=300)
    r2.set(k("later"), "v", px=1500)
    r2.set(k("kept"), "v")
    deadline = time.monotonic() + 60
    while _sql_value(node, rw_key, k("soon")) or _sql_value(node, rw_key, k("later")):
        assert time.monotonic() < deadline, "expired rows were never swept"
        time.sleep(0.1)
    assert r2.get(k("soon")) is None
    assert _sql_value(node, rw_key, k("kept")) == ("string", "v")


def test_many_clients_writing_and_reading_one_key(redis_port: int, rw_key: str, k: K) -> None:
    """Every client's own sequence holds: after its SET it reads its value or a later
    client's; every GET answers one of the values written (or the start value)."""
    start = connect(redis_port, rw_key)
    start.set(k("hot"), "start")
    start.close()
    written = {b"start"} | {f"c{c}-{n}".encode() for c in range(20) for n in range(30)}

    def client(c: int) -> list[bytes | None]:
        conn = connect(redis_port, rw_key, 3 if c % 2 else 2)
        seen = []
        try:
            for n in range(30):
                with conn.pipeline(transaction=False) as pipe:
                    pipe.set(k("hot"), f"c{c}-{n}")
                    pipe.get(k("hot"))
                    pipe.get(k("hot"))
                    ok, *values = pipe.execute()
                    assert ok is True
                    seen.extend(values)
                seen.append(conn.get(k("hot")))
        finally:
            conn.close()
        return seen

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20)))
    for seen in results:
        assert all(value in written for value in seen)
