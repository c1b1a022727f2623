"""Raw RESP, inline commands, protocol errors, fuzzed input, redis-cli, and SQL visibility."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Callable

import pytest
import redis

from tests.integration.redis.conftest import sql_rows
from tests.nodeproc import NodeProcess

K = Callable[[str], str]


def exchange(port: int, payload: bytes, *, read_until_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if not read_until_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_inline_commands(redis_port: int, rw_key: str) -> None:
    reply = exchange(redis_port, f'AUTH {rw_key}\r\nPING\r\nECHO "a b"\r\nQUIT\r\n'.encode())
    assert reply == b"+OK\r\n+PONG\r\n$3\r\na b\r\n+OK\r\n"


def test_hello_bytes_and_noproto(redis_port: int, rw_key: str) -> None:
    hello = f"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n${len(rw_key)}\r\n"
    hello4 = b"*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n"
    reply = exchange(redis_port, hello.encode() + rw_key.encode() + b"\r\n" + hello4)
    assert reply.startswith(
        b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.4.0\r\n"
    )
    assert b"$5\r\nproto\r\n:3\r\n" in reply
    assert reply.endswith(b"$7\r\nmodules\r\n*0\r\n-NOPROTO unsupported protocol version\r\n")


def test_noauth_before_auth(redis_port: int) -> None:
    reply = exchange(redis_port, b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n")
    assert reply == b"-NOAUTH Authentication required.\r\n"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:5\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b'SET "a\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ],
)
def test_protocol_errors_reply_then_close(redis_port: int, payload: bytes, error: bytes) -> None:
    assert exchange(redis_port, payload, read_until_close=True) == error


def test_unauthenticated_big_request_is_refused(redis_port: int) -> None:
    payload = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n" + b"x" * 400_000
    reply = exchange(redis_port, payload, read_until_close=True)
    assert reply.startswith(b"-ERR Protocol error")


def test_fuzzed_input_never_takes_the_node_down(redis_port: int, rw_key: str) -> None:
    rng = random.Random(4)
    pieces = [
        b"*", b"$", b"\r\n", b"-1", b"3", b"99999999999", b"GET", b"SET", b":", b"+OK",
        b"%2", b"\x00", b"\xff", b" ", b'"', b"'", b"PING", b"*-1", b"$-1", b"HELLO 3",
    ]  # fmt: skip
    for _ in range(60):
        payload = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        payload += bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 30)))
        exchange(redis_port, payload)
    client = redis.Redis(port=redis_port, password=rw_key)
    assert client.ping() is True
    client.close()


def test_values_are_rows_readable_through_sql(
    r2: redis.Redis, k: K, node: NodeProcess, rw_key: str
) -> None:
    r2.set(k("s"), "hello")
    r2.hset(k("h"), "f", "v")
    r2.zadd(k("z"), {"m": 2.5})
    rows = sql_rows(
        node,
        rw_key,
        "SELECT convert_from(k.key, 'UTF8') AS key, k.type, "
        "convert_from(k.value, 'UTF8') AS value FROM helios_kv.keys k "
        "WHERE k.db = 0 AND k.key = ANY(ARRAY[convert_to($1, 'UTF8'), "
        "convert_to($2, 'UTF8')]) ORDER BY 1",
        [k("h"), k("s")],
    )
    assert rows == [[k("h"), "hash", None], [k("s"), "string", "hello"]]
    sql = "SELECT score FROM helios_kv.zsets WHERE key = convert_to($1, 'UTF8')"
    assert sql_rows(node, rw_key, sql, [k("z")]) == [[2.5]]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-tools is not installed")
def test_redis_cli_scripted_session(redis_port: int, rw_key: str, k: K) -> None:
    script = "\n".join(
        [
            f"SET {k('a')} 1",
            f"INCRBY {k('a')} 41",
            f"GET {k('a')}",
            f"RPUSH {k('l')} x y z",
            f"LRANGE {k('l')} 0 -1",
            f"HSET {k('h')} field value",
            f"HGETALL {k('h')}",
            f"TYPE {k('l')}",
            f"GET {k('l')}",
            "NOSUCH",
        ]
    )
    result = subprocess.run(
        ["redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", rw_key],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[:11] == [
        "OK", "42", "42", "3", "x", "y", "z", "1", "field", "value", "list",
    ]  # fmt: skip
    assert lines[11].startswith("WRONGTYPE")
    assert lines[12].startswith("ERR unknown command 'NOSUCH'")
    for args in (["-3", "PING"], ["--scan", "--pattern", k("*")], ["INFO", "server"]):
        run = subprocess.run(
            ["redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", rw_key, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert run.stdout.strip()
    assert "redis_version:7.4.0" in run.stdout
