"""A batch's one-key SET of a key that holds a string, and a batch's GETs of one key, go
out on the coalescer's pipelined engine connection (services/keyvalue/lane.py) once it is
open, and must answer and write exactly as the pooled connection's statements do: value,
TTL, database, WATCH's version bump, the fallback to the upsert when no row matched, nil,
WRONGTYPE, an expired key, an engine error's reply, and a lost pipelined connection.
``INFO stats`` ``helios_pipelined_sets`` / ``_gets`` say which way a command went.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import asyncpg
import pytest

from tests.integration.redis.test_lone_commands import K, Raw, command, raw, read_reply
from tests.nodeproc import NodeProcess


def pipelined(c: Raw, kind: str = "sets") -> int:
    """The node's helios_pipelined_sets (or _gets) so far."""
    info = c.lone(command("INFO", "stats")).decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return int(fields[f"helios_pipelined_{kind}"])


def warm(c: Raw, key: str) -> None:
    """SET and GET ``key`` until each went through the lane (its connections open and
    its statements are prepared in the background; the pooled connection answers
    meanwhile)."""
    assert c.lone(command("SET", key, "warm")) == b"+OK\r\n"
    for kind, case, reply in (
        ("sets", command("SET", key, "warm"), b"+OK\r\n"),
        ("gets", command("GET", key), b"$4\r\nwarm\r\n"),
    ):
        deadline = time.monotonic() + 30
        while True:
            before = pipelined(c, kind)
            assert c.lone(case) == reply
            if pipelined(c, kind) > before:
                break
            assert time.monotonic() < deadline, f"the lane never took {case!r}"
            time.sleep(0.02)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def c(request: pytest.FixtureRequest, redis_port: int, rw_key: str, k: K) -> Iterator[Raw]:
    with raw(redis_port, rw_key, request.param) as client:
        warm(client, k("warm"))
        yield client


def test_pipelined_get_reads_as_the_pooled_select(c: Raw, rw_key: str, k: K) -> None:
    key, empty, hashed, expired, missing = (k(n) for n in ("g", "g-e", "g-h", "g-x", "g-m"))
    value = bytes(range(256)) + b"\r\n$-1\r\n"
    assert c.lone(command("SET", key, value)) == b"+OK\r\n"
    assert c.lone(command("SET", empty, "")) == b"+OK\r\n"
    assert c.lone(command("HSET", hashed, "f", "v")) == b":1\r\n"
    assert c.lone(command("SET", expired, "old", "PX", "1")) == b"+OK\r\n"
    time.sleep(0.01)
    hello = c.lone(command("HELLO"))
    null = b"_\r\n" if b"proto" in hello and b":3\r\n" in hello else b"$-1\r\n"
    before = pipelined(c, "gets")
    replies = [c.lone(command("GET", name)) for name in (key, empty, hashed, expired, missing)]
    assert pipelined(c, "gets") == before + 5
    assert replies[:2] == [b"$%d\r\n%s\r\n" % (len(value), value), b"$0\r\n\r\n"]
    assert replies[2].startswith(b"-WRONGTYPE ")
    assert replies[3:] == [null, null]
    assert [c.along(command("GET", name)) for name in (key, empty, hashed, expired, missing)] == (
        replies
    )
    assert c.lone(command("SELECT", "5")) == b"+OK\r\n"
    assert c.lone(command("GET", key)) == null
    assert c.lone(command("SET", key, "five")) == b"+OK\r\n"
    assert c.lone(command("GET", key)) == b"$4\r\nfive\r\n"
    assert c.lone(command("SELECT", "0")) == b"+OK\r\n"
    assert c.lone(command("GET", key)) == replies[0]


def test_pipelined_set_writes_as_the_pooled_update(
    c: Raw, redis_port: int, rw_key: str, k: K
) -> None:
    key, expired, hashed, binary = k("p"), k("p-expired"), k("p-hash"), k("p-binary")
    value = bytes(range(256)) + b"\r\n$-1\r\n"
    assert c.lone(command("SET", key, "first", "PX", "100000")) == b"+OK\r\n"
    assert c.lone(command("SET", binary, "x")) == b"+OK\r\n"
    assert c.lone(command("HSET", hashed, "f", "v")) == b":1\r\n"
    assert c.lone(command("SET", expired, "old", "PX", "1")) == b"+OK\r\n"
    while c.lone(command("PTTL", expired)) != b":-2\r\n":
        pass
    before = pipelined(c)
    # the lane's UPDATE: plain value (and the TTL goes), binary and empty values
    assert c.lone(command("SET", key, "second")) == b"+OK\r\n"
    assert c.lone(command("GET", key)) == b"$6\r\nsecond\r\n"
    assert c.lone(command("PTTL", key)) == b":-1\r\n"
    assert c.lone(command("SET", binary, value)) == b"+OK\r\n"
    assert c.lone(command("GET", binary)) == b"$%d\r\n%s\r\n" % (len(value), value)
    assert c.lone(command("SET", binary, "")) == b"+OK\r\n"
    assert c.lone(command("GET", binary)) == b"$0\r\n\r\n"
    assert c.lone(command("SET", expired, "new")) == b"+OK\r\n"  # an expired string's row
    assert c.lone(command("GET", expired)) == b"$3\r\nnew\r\n"
    assert c.lone(command("PTTL", expired)) == b":-1\r\n"
    assert pipelined(c) == before + 4
    assert c.lone(command("SET", key, "third", "PX", "100000")) == b"+OK\r\n"  # (not here)
    ttl = int(c.lone(command("PTTL", key))[1:-2])
    assert 90000 < ttl <= 100000
    assert c.lone(command("SET", key, "third")) == b"+OK\r\n"
    assert c.lone(command("PTTL", key)) == b":-1\r\n"
    # WATCH sees a SET of the same value (the version bump)
    with raw(redis_port, rw_key) as watcher:
        assert watcher.lone(command("WATCH", key)) == b"+OK\r\n"
        before = pipelined(c)
        assert c.lone(command("SET", key, "third")) == b"+OK\r\n"
        assert pipelined(c) == before + 1
        assert watcher.lone(command("MULTI")) == b"+OK\r\n"
        assert watcher.lone(command("GET", key)) == b"+QUEUED\r\n"
        assert watcher.lone(command("EXEC")) == b"*-1\r\n"
    # no row matched (a hash, a new key): the upsert writes it, as before
    assert c.lone(command("SET", hashed, "now-a-string")) == b"+OK\r\n"
    assert c.lone(command("GET", hashed)) == b"$12\r\nnow-a-string\r\n"
    assert c.lone(command("HGET", hashed, "f")).startswith(b"-WRONGTYPE ")
    assert c.lone(command("SET", k("p-new"), "fresh")) == b"+OK\r\n"
    assert c.lone(command("GET", k("p-new"))) == b"$5\r\nfresh\r\n"
    # another database: the row of db 5, not db 0's
    assert c.lone(command("SELECT", "5")) == b"+OK\r\n"
    assert c.lone(command("SET", key, "in-five")) == b"+OK\r\n"  # new in db 5: the upsert
    before = pipelined(c)
    assert c.lone(command("SET", key, "in-five-again")) == b"+OK\r\n"
    assert pipelined(c) == before + 1
    assert c.lone(command("GET", key)) == b"$13\r\nin-five-again\r\n"
    assert c.lone(command("SELECT", "0")) == b"+OK\r\n"
    assert c.lone(command("GET", key)) == b"$5\r\nthird\r\n"


async def test_an_engine_error_answers_as_on_the_pooled_connection(
    c: Raw, node: NodeProcess, k: K
) -> None:
    """A trigger refuses writes of two keys: the one that holds a string fails in the
    lane's UPDATE, the new one in the pooled connection's upsert; same reply."""
    held, new = k("refused-held"), k("refused-new")
    assert c.lone(command("SET", held, "kept")) == b"+OK\r\n"
    suffix = held.split(":")[0]
    function, trigger = f"helios_test_refuse_{suffix}", f"helios_test_refuse_{suffix}"
    conn = await asyncpg.connect(node.engine_url)
    try:
        await conn.execute(
            f"CREATE FUNCTION public.{function}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'P0001'; END $$"
        )
        keys = ", ".join(f"'\\x{key.encode().hex()}'::bytea" for key in (held, new))
        await conn.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON helios_kv.keys FOR EACH ROW "
            f"WHEN (NEW.key IN ({keys})) EXECUTE FUNCTION public.{function}()"
        )
        try:
            before = pipelined(c)
            lane = c.lone(command("SET", held, "changed"))
            assert pipelined(c) == before + 1  # the lane's UPDATE answered it
            pooled = c.lone(command("SET", new, "value"))
        finally:
            await conn.execute(f"DROP TRIGGER {trigger} ON helios_kv.keys")
            await conn.execute(f"DROP FUNCTION public.{function}()")
    finally:
        await conn.close()
    assert lane == pooled == b"-ERR engine error: refused by the test\r\n"
    assert c.lone(command("GET", held)) == b"$4\r\nkept\r\n"
    assert c.lone(command("EXISTS", new)) == b":0\r\n"
    assert c.lone(command("SET", held, "changed")) == b"+OK\r\n"


async def test_sets_go_on_when_the_pipelined_connections_are_lost(
    c: Raw, node: NodeProcess, k: K
) -> None:
    key = k("lost")
    conn = await asyncpg.connect(node.engine_url)
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'heliosdb-kv'"
        )
        assert ended >= 1
    finally:
        await conn.close()
    for n in range(20):  # the pooled connection answers until the lane is open again
        assert c.lone(command("SET", key, str(n))) == b"+OK\r\n"
        assert c.lone(command("GET", key)) == b"$%d\r\n%d\r\n" % (len(str(n)), n)
    warm(c, key)


def batch(c: Raw, cases: list[bytes]) -> list[bytes]:
    """Commands sent in one write: one coalescer batch (GETs and SETs of many keys)."""
    c.sock.sendall(b"".join(cases))
    return [read_reply(c.stream) for _ in cases]


def test_a_batch_of_many_keys_writes_and_reads_as_the_pooled_statements(c: Raw, k: K) -> None:
    """Many keys' SETs are one upsert of strings, their GETs one ``key = ANY`` lookup, on
    the lane once it has them prepared (binary arrays of int2, bytea, int8 with NULLs)."""
    keys = [k(f"m{n}") for n in range(4)]
    value = bytes(range(256)) + b"\r\n"
    deadline = time.monotonic() + 30
    while True:  # the many-key statements are prepared in the background at first use
        before = pipelined(c, "sets"), pipelined(c, "gets")
        assert batch(c, [command("SET", key, "w") for key in keys]) == [b"+OK\r\n"] * 4
        assert batch(c, [command("GET", key) for key in keys]) == [b"$1\r\nw\r\n"] * 4
        if (pipelined(c, "sets"), pipelined(c, "gets")) >= (before[0] + 1, before[1] + 1):
            break
        assert time.monotonic() < deadline, "the lane never took a many-key batch"
        time.sleep(0.02)
    hashed, expired, missing = k("m-hash"), k("m-expired"), k("m-missing")
    assert c.lone(command("HSET", hashed, "f", "v")) == b":1\r\n"
    assert c.lone(command("SET", expired, "old", "PX", "1")) == b"+OK\r\n"
    time.sleep(0.01)
    sets = pipelined(c, "sets")
    replies = batch(
        c,
        [
            command("SET", keys[0], "first"),
            command("SET", keys[1], value),
            command("SET", keys[2], ""),
            command("SET", keys[0], "last"),  # the batch's last SET of a key wins
            command("PING"),
            command("GET", keys[3]),
            command("GET", keys[0]),
        ],
    )
    assert replies[:5] == [b"+OK\r\n"] * 4 + [b"+PONG\r\n"]
    assert replies[5:] == [b"$1\r\nw\r\n", b"$4\r\nlast\r\n"]
    assert pipelined(c, "sets") > sets
    gets = pipelined(c, "gets")
    found = batch(c, [command("GET", key) for key in (*keys, hashed, expired, missing)])
    assert pipelined(c, "gets") > gets
    assert found[:4] == [
        b"$4\r\nlast\r\n",
        b"$%d\r\n%s\r\n" % (len(value), value),
        b"$0\r\n\r\n",
        b"$1\r\nw\r\n",
    ]
    assert found[4].startswith(b"-WRONGTYPE ")
    assert found[5] == found[6] == c.lone(command("GET", missing))
    # a key of another type among many: the collection-aware upsert writes the batch
    assert batch(c, [command("SET", hashed, "s"), command("SET", keys[3], "t")]) == [b"+OK\r\n"] * 2
    assert batch(c, [command("GET", hashed), command("GET", keys[3])]) == [
        b"$1\r\ns\r\n",
        b"$1\r\nt\r\n",
    ]
    assert c.lone(command("HGET", hashed, "f")).startswith(b"-WRONGTYPE ")
    # another database: db 5's rows, not db 0's
    assert c.lone(command("SELECT", "5")) == b"+OK\r\n"
    assert batch(c, [command("GET", key) for key in keys[:2]]) == [found[5]] * 2
    assert batch(c, [command("SET", key, "five") for key in keys[:2]]) == [b"+OK\r\n"] * 2
    assert batch(c, [command("GET", key) for key in keys[:2]]) == [b"$4\r\nfive\r\n"] * 2
    assert c.lone(command("SELECT", "0")) == b"+OK\r\n"
    assert batch(c, [command("GET", key) for key in keys[:2]]) == found[:2]
