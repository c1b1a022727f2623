"""A client that sends commands without reading their replies.

Replies the client has not read wait in the node's socket buffer; past ``WRITE_LIMIT``
the connection stops running commands until the client reads (as it does between
batches of commands). Before, a batch of pipelined commands with big replies (up to
1024 of them, such as ``LRANGE key 0 -1``) ran to its end whatever the client read: 30
pipelined LRANGEs of a 10 MB list grew the node's RSS by 618 MB.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis

from tests.integration.redis.conftest import connect

K = Callable[[str], str]
COMMANDS = 100
ELEMENT = b"v" * 1000


def _processed(client: redis.Redis) -> int:
    info: dict[str, int] = client.info("stats")  # type: ignore[assignment]
    return info["total_commands_processed"]


def test_replies_not_read_stop_the_connection_not_the_node(
    redis_port: int, rw_key: str, k: K
) -> None:
    other = connect(redis_port, rw_key)
    key = k("list")
    other.rpush(key, *[ELEMENT] * 2000)  # a 2 MB reply per LRANGE
    command = b"*4\r\n$6\r\nLRANGE\r\n$%d\r\n%s\r\n$1\r\n0\r\n$2\r\n-1\r\n" % (
        len(key),
        key.encode(),
    )
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", redis_port))
        sock.sendall(b"AUTH %s\r\n" % rw_key.encode())
        assert sock.recv(5) == b"+OK\r\n"
        before = _processed(other)
        sock.sendall(command * COMMANDS)
        # Until the count stops moving: the node runs what its write limit lets it.
        counts = [-1]
        while True:
            time.sleep(0.5)
            counts.append(_processed(other) - len(counts))  # less this loop's own INFOs
            if counts[-1] == counts[-2]:
                break
        assert counts[-1] - before < COMMANDS / 2
        assert other.ping() is True  # the node answers other clients meanwhile
        reply_size = len(b"*2000\r\n") + 2000 * len(b"$1000\r\n%s\r\n" % ELEMENT)
        received = 0
        while received < COMMANDS * reply_size:
            data = sock.recv(1 << 20)
            assert data, "the node closed the connection"
            received += len(data)
        assert received == COMMANDS * reply_size  # every reply, whole, once read
    other.delete(key)
    other.close()
