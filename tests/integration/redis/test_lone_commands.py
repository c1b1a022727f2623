"""A lone GET or SET (nothing else received with it) takes the node's shortest path
(Session.received -> hotpath.submit_lone -> the coalescer); the same command followed by
another in one write takes the ordinary one (advance -> submit_run). Both must answer
byte for byte alike, and the lone path must step aside wherever the connection's state
decides the answer: before AUTH, for read-only keys, inside MULTI, in subscriber mode.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pytest

K = Callable[[str], str]


def command(*words: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def read_reply(stream: BinaryIO) -> bytes:
    """One whole reply, exactly as sent (simple types, bulk strings, arrays, maps)."""
    line = stream.readline()
    assert line.endswith(b"\r\n"), line
    kind, rest = line[:1], line[1:-2]
    if kind in b"$=" and rest != b"-1":
        return line + stream.read(int(rest) + 2)
    if kind in b"*>~%" and rest != b"-1":
        count = int(rest) * (2 if kind == b"%" else 1)
        return line + b"".join(read_reply(stream) for _ in range(count))
    return line


class Raw:
    """A client socket that sends exactly the bytes given, in one write."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")

    def lone(self, payload: bytes) -> bytes:
        """One command alone: the lone path when it is a plain GET/SET."""
        self.sock.sendall(payload)
        return read_reply(self.stream)

    def along(self, payload: bytes, pong: bytes = b"+PONG\r\n") -> bytes:
        """The same command with a PING behind it in one write: the ordinary path."""
        self.sock.sendall(payload + command("PING"))
        reply = read_reply(self.stream)
        assert read_reply(self.stream) == pong
        return reply

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@contextmanager
def raw(port: int, password: str | None = None, proto: int = 2) -> Iterator[Raw]:
    client = Raw(port)
    try:
        if proto == 3:
            assert password is not None
            client.sock.sendall(command("HELLO", "3", "AUTH", "default", password))
            assert read_reply(client.stream).startswith(b"%")
        elif password is not None:
            assert client.lone(command("AUTH", password)) == b"+OK\r\n"
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("proto", [2, 3])
def test_lone_and_pipelined_get_set_answer_alike(
    redis_port: int, rw_key: str, k: K, proto: int
) -> None:
    key, other = k("lone"), k("lone-missing")
    value = bytes(range(256)) + b"\r\n$-1\r\n"

    def cases(hashed: str) -> list[bytes]:
        return [
            command("SET", key, value),
            command("GET", key),
            command("get", key),
            command("gEt", other),
            command("GET", hashed),  # WRONGTYPE
            command("set", key, b""),
            command("GET", key),
            command("GET", key, "extra"),  # wrong arity: not a plain GET
            command("SET", key),
            command("SET", key, "v", "PX", "100000"),  # options: not a plain SET
            command("SET", hashed, "now-a-string"),
            command("GET", hashed),
        ]

    replies: dict[str, list[bytes]] = {}
    for way in ("lone", "along"):
        hashed = k(f"lone-hash-{way}")
        with raw(redis_port, rw_key, proto) as c:
            assert c.lone(command("HSET", hashed, "f", "v")) == b":1\r\n"
            send = c.lone if way == "lone" else c.along
            replies[way] = [send(case) for case in cases(hashed)]
    lone, along = replies["lone"], replies["along"]
    assert lone == along
    null = b"_\r\n" if proto == 3 else b"$-1\r\n"
    assert lone[:4] == [b"+OK\r\n", b"$%d\r\n%s\r\n" % (len(value), value), lone[1], null]
    assert lone[4].startswith(b"-WRONGTYPE ")
    assert lone[5:7] == [b"+OK\r\n", b"$0\r\n\r\n"]
    assert lone[7] == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert lone[8] == b"-ERR wrong number of arguments for 'set' command\r\n"
    assert lone[9:] == [b"+OK\r\n", b"+OK\r\n", b"$12\r\nnow-a-string\r\n"]


def test_lone_commands_before_auth_get_noauth(redis_port: int) -> None:
    with raw(redis_port) as c:
        for case in (command("GET", "x"), command("SET", "x", "y")):
            assert c.lone(case) == b"-NOAUTH Authentication required.\r\n"
            noauth = b"-NOAUTH Authentication required.\r\n"
            assert c.along(case, pong=noauth) == noauth


def test_lone_set_with_a_read_only_key_is_refused_and_get_answers(
    redis_port: int, rw_key: str, ro_key: str, k: K
) -> None:
    key = k("lone-ro")
    with raw(redis_port, rw_key) as c:
        assert c.lone(command("SET", key, "v")) == b"+OK\r\n"
    with raw(redis_port, ro_key) as c:
        lone = c.lone(command("SET", key, "w"))
        assert lone.startswith(b"-NOPERM ")
        assert c.along(command("SET", key, "w")) == lone
        assert c.lone(command("GET", key)) == b"$1\r\nv\r\n"
        assert c.along(command("GET", key)) == b"$1\r\nv\r\n"


def test_lone_commands_inside_multi_are_queued(redis_port: int, rw_key: str, k: K) -> None:
    key = k("lone-multi")
    with raw(redis_port, rw_key) as c:
        assert c.lone(command("MULTI")) == b"+OK\r\n"
        assert c.lone(command("SET", key, "1")) == b"+QUEUED\r\n"
        assert c.lone(command("GET", key)) == b"+QUEUED\r\n"
        assert c.lone(command("EXEC")) == b"*2\r\n+OK\r\n$1\r\n1\r\n"
        assert c.lone(command("GET", key)) == b"$1\r\n1\r\n"


def test_lone_get_in_resp2_subscriber_mode_is_refused(redis_port: int, rw_key: str) -> None:
    with raw(redis_port, rw_key) as c:
        c.sock.sendall(command("SUBSCRIBE", "lone-channel"))
        assert read_reply(c.stream).startswith(b"*3\r\n$9\r\nsubscribe\r\n")
        reply = c.lone(command("GET", "x"))
        assert reply.startswith(b"-ERR Can't execute 'get'")
        assert c.lone(command("UNSUBSCRIBE")).startswith(b"*3\r\n$11\r\nunsubscribe\r\n")
        assert c.lone(command("SET", "lone-after-sub", "v")) == b"+OK\r\n"


@pytest.mark.parametrize("way", ["lone", "along"])
def test_set_over_an_existing_string_rewrites_value_ttl_and_version(
    redis_port: int, rw_key: str, k: K, way: str
) -> None:
    """A lone SET of a key that holds a string is an UPDATE of its row (coalesce.py
    _UPDATE_ONE_STRING); with a PING behind it, the same SET. Either way the value is
    replaced, a TTL goes, an expired string is written anew, and WATCH sees the write
    even when the value is the same."""
    key, expired = k(f"over-{way}"), k(f"over-expired-{way}")
    with raw(redis_port, rw_key) as c, raw(redis_port, rw_key) as watcher:
        send = c.lone if way == "lone" else c.along
        assert c.lone(command("SET", key, "first", "PX", "100000")) == b"+OK\r\n"
        assert send(command("SET", key, "second")) == b"+OK\r\n"
        assert c.lone(command("GET", key)) == b"$6\r\nsecond\r\n"
        assert c.lone(command("PTTL", key)) == b":-1\r\n"
        assert watcher.lone(command("WATCH", key)) == b"+OK\r\n"
        assert send(command("SET", key, "second")) == b"+OK\r\n"  # the same value
        assert watcher.lone(command("MULTI")) == b"+OK\r\n"
        assert watcher.lone(command("GET", key)) == b"+QUEUED\r\n"
        assert watcher.lone(command("EXEC")) == b"*-1\r\n"  # the key changed: aborted
        assert c.lone(command("SET", expired, "old", "PX", "1")) == b"+OK\r\n"
        while c.lone(command("PTTL", expired)) != b":-2\r\n":
            pass
        assert send(command("SET", expired, "new")) == b"+OK\r\n"
        assert c.lone(command("GET", expired)) == b"$3\r\nnew\r\n"
        assert c.lone(command("PTTL", expired)) == b":-1\r\n"
