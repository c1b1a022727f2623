"""A bare-bytes PostgreSQL client for protocol tests: exactly what we send, exactly what we get."""

from __future__ import annotations

import socket
import struct

from heliosdb.security.scram import ClientExchange

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
GSSENC_REQUEST = struct.pack("!ii", 8, 80877104)


def startup_packet(params: dict[str, str], version: int = 196608) -> bytes:
    body = struct.pack("!i", version)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class RawClient:
    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_byte(self) -> bytes:
        return self.file.read(1)

    def read(self) -> tuple[bytes, bytes]:
        kind = self.file.read(1)
        if not kind:
            return b"", b""
        (length,) = struct.unpack("!i", self.file.read(4))
        return kind, self.file.read(length - 4)

    def read_until_closed(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        while True:
            kind, body = self.read()
            if not kind:
                return out
            out.append((kind, body))

    def login(
        self, password: str, version: int = 196608, **params: str
    ) -> list[tuple[bytes, bytes]]:
        """Startup + SCRAM; the messages after authentication up to ReadyForQuery."""
        self.send(startup_packet({"user": "apikey", "database": "heliosdb", **params}, version))
        kind, body = self.read()
        while kind == b"v":
            kind, body = self.read()
        assert (kind, body[:4]) == (b"R", struct.pack("!i", 10)), (kind, body)
        exchange = ClientExchange(password)
        first = exchange.first()
        self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        kind, body = self.read()
        assert kind == b"R", body
        self.send(message(b"p", exchange.final(body[4:])))
        kind, body = self.read()
        assert kind == b"R" and body[:4] == struct.pack("!i", 12), (kind, body)
        exchange.verify(body[4:])
        out = []
        while True:
            kind, body = self.read()
            out.append((kind, body))
            if kind in (b"Z", b"E", b""):
                return out


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields
