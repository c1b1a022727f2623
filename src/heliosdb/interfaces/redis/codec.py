"""RESP2/RESP3 bytes <-> messages, with no sockets and no asyncio.

Requests: multibulk arrays are parsed by hiredis's C reader; a connection whose input
starts with anything else speaks inline commands (``PING\\r\\n``, telnet style) until it
sends a ``*``. Replies are plain Python values plus a few marker types:

    bytes -> bulk string      int -> integer        None -> null bulk / RESP3 null
    list  -> array            Status -> +simple     RedisError -> -error
    Map   -> %map (RESP2 flat array)               SetReply -> ~set (RESP2 array)
    Double -> ,double (RESP2 bulk)                 Verbatim -> =txt: (RESP2 bulk)
    NULL_ARRAY -> *-1 / _                          Push -> >push (RESP2 array)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import hiredis

from heliosdb.interfaces.redis.errors import RedisError


class ProtocolError(Exception):
    """Input that is not RESP: reply with the message once, then close the connection."""


@dataclass(frozen=True, slots=True)
class Status:
    text: str


@dataclass(frozen=True, slots=True)
class Map:
    pairs: list[tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class SetReply:
    items: list[Any]


@dataclass(frozen=True, slots=True)
class Double:
    value: float


@dataclass(frozen=True, slots=True)
class Verbatim:
    text: str


@dataclass(frozen=True, slots=True)
class Push:
    items: list[Any]


class _NullArray:
    __slots__ = ()


NULL_ARRAY = _NullArray()
NO_REPLY = _NullArray()  # the handler already queued its own frames (SUBSCRIBE)
OK = Status("OK")
QUEUED = Status("QUEUED")
PONG = Status("PONG")

_OK_BYTES = b"+OK\r\n"


def format_double(value: float) -> bytes:
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if math.isnan(value):
        return b"nan"
    if value == int(value) and abs(value) < 1e17:
        return str(int(value)).encode()
    return repr(value).encode()


def encode(reply: Any, proto: int) -> bytes:
    out: list[bytes] = []
    _encode(reply, proto, out)
    return b"".join(out)


def _encode(reply: Any, proto: int, out: list[bytes]) -> None:
    if isinstance(reply, bytes):
        out.append(b"$%d\r\n%s\r\n" % (len(reply), reply))
    elif reply is NO_REPLY:
        pass
    elif reply is OK:
        out.append(_OK_BYTES)
    elif isinstance(reply, bool):
        out.append((b"#t\r\n" if reply else b"#f\r\n") if proto == 3 else b":%d\r\n" % reply)
    elif isinstance(reply, int):
        out.append(b":%d\r\n" % reply)
    elif reply is None:
        out.append(b"_\r\n" if proto == 3 else b"$-1\r\n")
    elif isinstance(reply, list | tuple):
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            _encode(item, proto, out)
    elif isinstance(reply, Status):
        out.append(b"+%s\r\n" % reply.text.encode())
    elif isinstance(reply, RedisError):
        text = reply.text.replace("\r", " ").replace("\n", " ")
        out.append(b"-%s\r\n" % text.encode())
    elif isinstance(reply, Map):
        if proto == 3:
            out.append(b"%%%d\r\n" % len(reply.pairs))
        else:
            out.append(b"*%d\r\n" % (2 * len(reply.pairs)))
        for key, value in reply.pairs:
            _encode(key, proto, out)
            _encode(value, proto, out)
    elif isinstance(reply, SetReply):
        out.append((b"~%d\r\n" if proto == 3 else b"*%d\r\n") % len(reply.items))
        for item in reply.items:
            _encode(item, proto, out)
    elif isinstance(reply, Double):
        number = format_double(reply.value)
        if proto == 3:
            out.append(b",%s\r\n" % number)
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(number), number))
    elif isinstance(reply, Verbatim):
        data = reply.text.encode()
        if proto == 3:
            out.append(b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data))
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    elif reply is NULL_ARRAY:
        out.append(b"_\r\n" if proto == 3 else b"*-1\r\n")
    elif isinstance(reply, Push):
        out.append((b">%d\r\n" if proto == 3 else b"*%d\r\n") % len(reply.items))
        for item in reply.items:
            _encode(item, proto, out)
    elif isinstance(reply, float):
        _encode(Double(reply), proto, out)
    elif isinstance(reply, str):
        _encode(reply.encode(), proto, out)
    else:
        raise TypeError(f"cannot encode {type(reply).__name__} as RESP")


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command like redis-server's sdssplitargs: spaces, "..." and '...'."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i : i + 1].isspace():
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = line[i : i + 1] if line[i : i + 1] in (b'"', b"'") else b""
        if quote:
            i += 1
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i : i + 1]
            if quote == b'"' and c == b"\\" and i + 1 < n:
                nxt = line[i + 1 : i + 2]
                if nxt == b"x" and i + 3 < n:
                    try:
                        current.append(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    except ValueError:
                        pass
                current += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}.get(
                    nxt, nxt
                )
                i += 2
                continue
            if quote == b"'" and c == b"\\" and line[i + 1 : i + 2] == b"'":
                current += b"'"
                i += 2
                continue
            if quote and c == quote:
                i += 1
                if i < n and not line[i : i + 1].isspace():
                    raise ProtocolError("unbalanced quotes in request")
                break
            if not quote and c.isspace():
                break
            current += c
            i += 1
        args.append(bytes(current))


class RequestParser:
    """Feed bytes, take complete commands (lists of bytes) in order."""

    def __init__(self, *, max_inline: int, max_buffer: int) -> None:
        self.max_inline = max_inline
        self.max_buffer = max_buffer
        self._reader = hiredis.Reader()
        self._inline = bytearray()
        self._multibulk = False
        self._pending = 0
        self._held: list[Any] = []  # a message lone() took from the reader, for next()

    def feed(self, data: bytes) -> None:
        if self._multibulk:
            self._pending += len(data)
            if self._pending > self.max_buffer:
                raise ProtocolError("invalid bulk length")
            self._reader.feed(data)
        else:
            self._inline += data

    def lone(self, data: bytes) -> list[bytes] | None:
        """feed(data), then the command it completed if that is all there is to parse
        (one command per read: the commonest case); else None, and next() goes on."""
        if not self._multibulk or self._held:
            self.feed(data)
            return None
        self._pending += len(data)
        if self._pending > self.max_buffer:
            raise ProtocolError("invalid bulk length")
        reader = self._reader
        reader.feed(data)
        try:
            message = reader.gets()
        except hiredis.ProtocolError as exc:
            raise ProtocolError(_hiredis_message(str(exc))) from None
        if message is False:
            return None
        if (
            type(message) is list
            and message
            and _BULKS.issuperset(map(type, message))
            and not reader.has_data()
        ):
            self._pending = 0
            return message
        self._held.append(message)  # next() judges it as it judges every message
        return None

    def has_data(self) -> bool:
        """Bytes fed and not yet returned as a command (maybe only part of one)."""
        if self._multibulk:
            return bool(self._held) or self._reader.has_data()
        return bool(self._inline)

    def next(self) -> list[bytes] | None:
        """The next complete command, None when more bytes are needed."""
        while True:
            if self._multibulk:
                if self._held:
                    message = self._held.pop()
                else:
                    try:
                        message = self._reader.gets()
                    except hiredis.ProtocolError as exc:
                        raise ProtocolError(_hiredis_message(str(exc))) from None
                    if message is False:
                        return None
                self._pending = 0
                if type(message) is list and message and _BULKS.issuperset(map(type, message)):
                    return message
                if message is None or message == []:
                    continue  # *-1 / *0: Redis skips it
                raise ProtocolError(f"expected '$', got '{_type_of(message)}'")
            if not self._inline:
                return None
            if self._inline[:1] == b"*":
                self._multibulk = True
                data = bytes(self._inline)
                self._inline.clear()
                self.feed(data)
                continue
            end = self._inline.find(b"\n")
            if end == -1:
                if len(self._inline) > self.max_inline:
                    raise ProtocolError("too big inline request")
                return None
            line = bytes(self._inline[:end]).rstrip(b"\r")
            del self._inline[: end + 1]
            args = split_inline(line)
            if args:
                return args


_BULKS = frozenset({bytes})  # a request's words: bulk strings only


def _hiredis_message(text: str) -> str:
    if "length" in text.lower() and "multi" in text.lower():
        return "invalid multibulk length"
    if "bulk" in text.lower():
        return "invalid bulk length"
    if 'got "' in text:
        return f"expected '$', got '{text.split(chr(34))[1]}'"
    return "invalid multibulk length"


def _type_of(message: Any) -> str:
    if isinstance(message, list):
        for item in message:
            if isinstance(item, int):
                return ":"
            if isinstance(item, list):
                return "*"
        return "*"
    return "+"
