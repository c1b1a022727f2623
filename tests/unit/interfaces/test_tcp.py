"""The connection limit shared by the REST, gRPC and WebSocket listeners: admitted
connections are counted until they leave; one past the limit is handed to the refusal,
which writes its reply at once, half-closes, drops what the client sends and closes when
the client does. And the open-files limit the node raises at start."""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import pytest

from heliosdb.interfaces._tcp import (
    ConnectionLimit,
    Refusal,
    http_refusal,
    raise_file_limit,
    too_many_connections,
)
from heliosdb.settings import Settings
from tests.unit.recording import RecordingTransport


class _Transport(RecordingTransport):
    """A recording transport that can half-close and hand over to another protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.eof = False
        self.protocol: Any = None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


def _refusal() -> Refusal:
    return Refusal(b"no room")


async def test_connections_past_the_limit_are_refused_until_one_leaves() -> None:
    limit = ConnectionLimit("unit-tcp", 2)
    first, second, third = _Transport(), _Transport(), _Transport()
    assert limit.admit(first, _refusal) and limit.admit(second, _refusal)
    assert not limit.admit(third, _refusal)
    assert limit.open == 2
    assert isinstance(third.protocol, Refusal)
    assert third.writes == [b"no room"] and third.eof and not third.closed
    assert first.protocol is None and first.writes == []

    limit.leave()
    assert limit.admit(_Transport(), _refusal)
    assert limit.open == 2


async def test_refusal_closes_when_the_client_does_and_drops_what_it_sent() -> None:
    transport = _Transport()
    refusal = Refusal(b"no room")
    refusal.connection_made(transport)
    refusal.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert refusal.eof_received() is False  # asyncio closes the transport
    refusal.connection_lost(None)
    assert refusal.timer is not None and refusal.timer.cancelled()
    await asyncio.sleep(0)
    assert transport.writes == [b"no room"]


def test_http_refusal_is_a_whole_503_with_retry_after() -> None:
    error = too_many_connections("HTTP", 7)
    assert error.details == {"limit": 7, "retry_after": 1}
    reply = http_refusal(b'{"error":{}}')
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 503 Service Unavailable",
        b"content-type: application/json",
        b"retry-after: 1",
        b"connection: close",
        b"content-length: 12",
    ]
    assert body == b'{"error":{}}'


def test_open_files_limit_is_raised_and_a_shortfall_named(caplog: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 600:
        pytest.skip("needs a finite hard limit above 600")
    resource.setrlimit(resource.RLIMIT_NOFILE, (500, hard))
    try:
        small = Settings.model_validate(
            {name: {"max_connections": 10} for name in ("http", "grpc", "websocket")}
            | {"postgres": {"max_connections": 10}, "mongodb": {"max_connections": 10}}
            | {"redis": {"max_clients": 10}}
        )
        with caplog.at_level(logging.INFO, logger="heliosdb.interfaces.tcp"):
            assert raise_file_limit(small) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert "open-files limit raised from 500" in caplog.text
        assert "below what the connection limits allow" not in caplog.text

        crowded = Settings.model_validate({"http": {"max_connections": hard}})
        with caplog.at_level(logging.WARNING, logger="heliosdb.interfaces.tcp"):
            raise_file_limit(crowded)
        assert f"http.max_connections {hard}" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
