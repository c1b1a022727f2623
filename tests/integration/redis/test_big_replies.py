"""A client that pipelines GETs of big values and reads its replies slowly.

The node runs pipelined plain GETs together, and a run's replies are held until the run
is answered; runs are sized from the replies of the connection's last run so that they
come to a few MiB, and once about 1 MiB of replies is unread the connection runs nothing
more until the client reads. Before, one run took up to 1,024 GETs: 800 pipelined GETs
of 2 MiB values held every reply at once (and then again, joined), over 3 GB.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

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
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", redis_port))
        sock.sendall(_command(b"AUTH", rw_key.encode()))
        assert sock.recv(5) == b"+OK\r\n"
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


def _read(stream: socket.SocketIO, n: int) -> bytes:
    """``n`` bytes, read 256 KiB at a time (a slow reader)."""
    parts = []
    while n:
        part = stream.read(min(n, 1 << 18))
        assert part, "the node closed the connection"
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
