"""The sans-IO RESP codec: bytes in, commands out; replies in, bytes out."""

from __future__ import annotations

import pytest

from heliosdb.interfaces.redis.codec import (
    NULL_ARRAY,
    OK,
    Double,
    Map,
    ProtocolError,
    Push,
    RequestParser,
    SetReply,
    Verbatim,
    encode,
    split_inline,
)
from heliosdb.interfaces.redis.errors import RedisError


def parse_all(*chunks: bytes) -> list[list[bytes]]:
    parser = RequestParser(max_inline=64 * 1024, max_buffer=1 << 20)
    out = []
    for chunk in chunks:
        parser.feed(chunk)
        while (command := parser.next()) is not None:
            out.append(command)
    return out


def test_multibulk_pipeline_split_anywhere() -> None:
    data = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n"
    for cut in range(len(data)):
        assert parse_all(data[:cut], data[cut:]) == [[b"GET", b"k"], [b"SET", b"k", b"\r\n"]]


def test_inline_commands_and_quoting() -> None:
    assert parse_all(b"PING\r\nECHO \"a b\" 'c d'\n\r\n") == [[b"PING"], [b"ECHO", b"a b", b"c d"]]
    assert split_inline(b'SET k "\\x41\\n"') == [b"SET", b"k", b"A\n"]
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        split_inline(b'SET "k')


def test_empty_arrays_are_skipped_and_has_data_tells_pending_bytes() -> None:
    parser = RequestParser(max_inline=64 * 1024, max_buffer=1 << 20)
    assert not parser.has_data()
    parser.feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI")
    assert parser.next() == [b"PING"]
    assert parser.has_data()  # the start of the next command
    assert parser.next() is None
    parser.feed(b"NG\r\n")
    assert parser.next() == [b"PING"]
    assert not parser.has_data()
    inline = RequestParser(max_inline=64 * 1024, max_buffer=1 << 20)
    inline.feed(b"PING\r\nEC")
    assert inline.next() == [b"PING"]
    assert inline.has_data()


def parse_lone_first(*chunks: bytes) -> tuple[list[list[bytes]], int]:
    """As parse_all, each chunk through lone() first (the session's read path); how many
    commands lone() answered itself."""
    parser = RequestParser(max_inline=64 * 1024, max_buffer=1 << 20)
    out, lone = [], 0
    for chunk in chunks:
        if (command := parser.lone(chunk)) is not None:
            out.append(command)
            lone += 1
            assert not parser.has_data()
        while (command := parser.next()) is not None:
            out.append(command)
    return out, lone


@pytest.mark.parametrize(
    "data",
    [
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n",
        b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        b"PING\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    ],
)
def test_lone_parses_as_feed_and_next_do(data: bytes) -> None:
    for cut in range(len(data)):
        for chunks in ((data[:cut], data[cut:]), (data,)):
            assert parse_lone_first(*chunks)[0] == parse_all(*chunks)


def test_lone_answers_only_a_whole_command_with_nothing_after_it() -> None:
    get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    # A connection's first bytes are judged inline or multibulk by next(), not lone().
    assert parse_lone_first(get, get, get) == ([[b"GET", b"k"]] * 3, 2)
    assert parse_lone_first(get[:5], get[5:], get + get[:3], get[3:]) == ([[b"GET", b"k"]] * 3, 2)
    assert parse_lone_first(b"*0\r\n", get) == ([[b"GET", b"k"]], 1)
    assert parse_lone_first(b"*-1\r\n" + get) == ([[b"GET", b"k"]], 0)
    with pytest.raises(ProtocolError, match="expected '\\$', got ':'"):
        parse_lone_first(b"*1\r\n:1\r\n")
    parser = RequestParser(max_inline=10, max_buffer=100)
    assert parser.lone(b"*1\r\n$1000\r\n") is None
    assert parser.next() is None  # now in multibulk mode, the bulk string incomplete
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        parser.lone(b"x" * 200)


def test_inline_then_multibulk() -> None:
    assert parse_all(b"PING\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"], [b"PING"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nk\r\n", "expected '$', got '*'"),
        (b"*2\r\n$3\r\nGET\r\n:5\r\n", "expected '$', got ':'"),
    ],
)
def test_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("$", "\\$")):
        parse_all(data)


def test_buffer_limit_and_inline_limit() -> None:
    parser = RequestParser(max_inline=10, max_buffer=100)
    parser.feed(b"x" * 11)
    with pytest.raises(ProtocolError, match="too big inline request"):
        parser.next()
    parser = RequestParser(max_inline=10, max_buffer=100)
    parser.feed(b"*1\r\n$1000\r\n")
    parser.next()
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        parser.feed(b"x" * 200)


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (b"v", b"$1\r\nv\r\n", b"$1\r\nv\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (7, b":7\r\n", b":7\r\n"),
        (Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Double(float("inf")), b"$3\r\ninf\r\n", b",inf\r\n"),
        (Double(3.0), b"$1\r\n3\r\n", b",3\r\n"),
        (Map([(b"a", 1)]), b"*2\r\n$1\r\na\r\n:1\r\n", b"%1\r\n$1\r\na\r\n:1\r\n"),
        (SetReply([b"m"]), b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (Verbatim("hi"), b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n"),
        (Push([b"message"]), b"*1\r\n$7\r\nmessage\r\n", b">1\r\n$7\r\nmessage\r\n"),
        (RedisError("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (
            [b"a", [1, None]],
            b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n",
            b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n_\r\n",
        ),
    ],
)
def test_encode_per_protocol(reply: object, resp2: bytes, resp3: bytes) -> None:
    assert encode(reply, 2) == resp2
    assert encode(reply, 3) == resp3
