"""Clients that pipeline GETs of big values and read their replies slowly.

The node runs pipelined plain GETs together, and a run's replies are held until the run
is answered; runs are sized from the replies of the connection's last run so that they
come to a few MiB, and once about 1 MiB of replies is unread the connection runs nothing
more until the client reads. Before, one run took up to 1,024 GETs: 800 pipelined GETs
of 2 MiB values held every reply at once (and then again, joined), over 3 GB. A run
sized from small replies still takes up to 1,024 GETs; the coalescer reads a few MiB of
values per round trip and the run ends where it stopped (before: 512 GETs of 4 MiB
values after small ones, over 4 GB).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import redis

from tests.integration.redis.conftest import connect
from tests.nodeproc import MemoryGrowth, serving_pids

K = Callable[[str], str]
VALUE_BYTES = 2 << 20
KEYS = 4
GETS = 800  # 1.6 GB of replies


def _command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def test_pipelined_big_gets_read_slowly_keep_the_node_memory_bounded(
    redis_port: int, rw_key: str, k: K
) -> None:
    """800 GETs of 2 MiB values sent at once, the replies read slowly: the node's memory
    grows by far less than the replies (bounded whatever the client sends), and every
    reply arrives whole and in order when the client reads."""
    other = connect(redis_port, rw_key)
    keys = [k(f"big{i}") for i in range(KEYS)]
    values = [os.urandom(VALUE_BYTES) for _ in keys]
    for key, value in zip(keys, values, strict=True):
        other.set(key, value)
    order = [i % KEYS for i in range(GETS)]
    with _slow_reader(redis_port, rw_key) as sock:
        (pid,) = set(serving_pids(redis_port))
        with MemoryGrowth(pid) as memory:
            sock.sendall(b"".join(_command(b"GET", keys[i].encode()) for i in order))
            stream = sock.makefile("rb", buffering=0)
            for n, i in enumerate(order):
                header = b"$%d\r\n" % VALUE_BYTES
                assert _read(stream, len(header)) == header, n
                assert _read(stream, VALUE_BYTES + 2) == values[i] + b"\r\n", n
    assert memory.growth < 1 << 30
    assert other.ping() is True  # the node goes on
    other.delete(*keys)
    other.close()


def test_big_gets_after_many_small_ones_keep_the_node_memory_bounded(
    redis_port: int, rw_key: str, k: K
) -> None:
    """A connection whose runs grew to 1,024 small GETs, then 1,024 pipelined GETs of
    4 MiB values read slowly: one engine round trip reads a few MiB of values, the rest
    in the following ones, so the node holds a few of them, not 1,024 (4 GiB); every
    reply arrives whole and in order."""
    growth = _big_gets_after_small_ones(redis_port, rw_key, k, gets=1024, getrange=False)
    assert growth < 1 << 30


def test_big_gets_behind_another_big_reply_keep_the_node_memory_bounded(
    redis_port: int, rw_key: str, k: K
) -> None:
    """As above, with a big GETRANGE first: the connection's own task runs the pipeline
    (a command that is no plain GET), and its runs of GETs are bounded the same way."""
    growth = _big_gets_after_small_ones(redis_port, rw_key, k, gets=512, getrange=True)
    assert growth < 1 << 30


def _big_gets_after_small_ones(port: int, password: str, k: K, gets: int, getrange: bool) -> int:
    """Warm a connection with 4,096 pipelined small GETs (runs of 16, 32 ... up to 1,024),
    then pipeline ``gets`` GETs of 4 MiB values (after a GETRANGE of one) and read the
    replies slowly, checking each; how much the node's RSS grew meanwhile."""
    other = connect(port, password)
    small = k("small")
    other.set(small, b"v")
    keys = [k(f"huge{i}") for i in range(KEYS)]
    values = [os.urandom(4 << 20) for _ in keys]
    for key, value in zip(keys, values, strict=True):
        other.set(key, value)
    order = [i % KEYS for i in range(gets)]
    with _slow_reader(port, password) as sock:
        stream = sock.makefile("rb", buffering=0)
        warm = 4096
        sock.sendall(_command(b"GET", small.encode()) * warm)
        assert _read(stream, 7 * warm) == b"$1\r\nv\r\n" * warm
        (pid,) = set(serving_pids(port))
        lead = _command(b"GETRANGE", keys[0].encode(), b"0", b"-1") if getrange else b""
        with MemoryGrowth(pid) as memory:
            sock.sendall(lead + b"".join(_command(b"GET", keys[i].encode()) for i in order))
            for n, i in enumerate([0, *order] if getrange else order):
                header = b"$%d\r\n" % len(values[i])
                assert _read(stream, len(header)) == header, n
                assert _read(stream, len(values[i]) + 2) == values[i] + b"\r\n", n
    assert other.ping() is True  # the node goes on
    other.delete(small, *keys)
    other.close()
    return memory.growth


def test_gets_of_values_small_and_big_answer_exactly_in_order(
    redis_port: int, rw_key: str, k: K
) -> None:
    """Values on either side of 8 KiB (what one lookup of many keys returns with the
    rows), big ones past what one round trip reads, missing keys and a hash among them:
    every GET of the pipeline answers as alone, in order, and a SET before them in the
    pipeline is seen."""
    client = connect(redis_port, rw_key)
    values = {
        k("tiny"): b"t",
        k("edge"): os.urandom(8192),
        k("over"): os.urandom(8193),
        k("mib"): os.urandom(1 << 20),
        k("three"): os.urandom(3 << 20),
    }
    client.mset(values)
    client.hset(k("hash"), "f", "v")
    names = [*values, k("missing"), k("hash"), k("new")]
    values[k("new")] = b"fresh"  # (set by the pipeline's first command)
    pipe = client.pipeline(transaction=False)
    pipe.set(k("new"), b"fresh")
    asked = [names[(n * 7) % len(names)] for n in range(200)]
    for name in asked:
        pipe.get(name)
    ok, *replies = pipe.execute(raise_on_error=False)
    assert ok is True
    for n, (name, reply) in enumerate(zip(asked, replies, strict=True)):
        if name == k("hash"):
            assert isinstance(reply, redis.ResponseError), n
            assert str(reply).startswith("WRONGTYPE"), n
        else:
            assert reply == values.get(name), n
    client.delete(*names)
    client.close()


@contextlib.contextmanager
def _slow_reader(port: int, password: str) -> Iterator[socket.socket]:
    """A raw connection, logged in, with a small receive buffer."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_command(b"AUTH", password.encode()))
        assert sock.recv(5) == b"+OK\r\n"
        yield sock


def _read(stream: socket.SocketIO, n: int) -> bytes:
    """``n`` bytes, read 256 KiB at a time (a slow reader)."""
    parts = []
    while n:
        part = stream.read(min(n, 1 << 18))
        assert part, "the node closed the connection"
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
