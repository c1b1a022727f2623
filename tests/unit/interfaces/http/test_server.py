"""The HTTP listener's transport sends what one loop step wrote as one write; its
protocol builds uvicorn's scope for the requests ASGI answers and keeps connections
alive as uvicorn does."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from heliosdb.interfaces.http.server import _BodyBudget, _CoalescingTransport, _HttpProtocol
from tests.unit.recording import RecordingTransport as _Recorder


async def test_writes_of_one_step_leave_together() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"{}"))
    assert inner.writes == []
    assert transport.get_write_buffer_size() >= 2
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[-1] == b"next"


async def test_close_sends_pending_bytes_first() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"]
    assert inner.closed and transport.is_closing()
    await asyncio.sleep(0)
    assert inner.writes == [b"last words"]


async def test_nothing_is_written_after_the_peer_went_away() -> None:
    inner = _Recorder()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"lost")
    inner.closed = True
    await asyncio.sleep(0)
    assert inner.writes == []
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)


class _EchoLane:
    """A lane that answers with the body it got."""

    limit = 100

    async def answer(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, [(b"content-length", b"%d" % len(body))], body


def _protocol(scopes: list[dict[str, Any]], keep_alive: float = 5) -> tuple[Any, _Recorder]:
    """The listener's protocol on a recording transport: the lane at /lane, and an ASGI
    app that records each scope and answers 204."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # as the listener makes it: its lanes, and the budget of unfinished request bodies
    budget = _BodyBudget(1 << 20)
    cls = type("P", (_HttpProtocol,), {"lanes": {b"/lane": _EchoLane()}, "budget": budget})
    config = uvicorn.Config(
        app,
        http=cls,
        lifespan="off",
        log_config=None,
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]  # typed int; seconds as a float work
    )
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    inner = _Recorder()
    protocol.connection_made(inner)
    return protocol, inner


def _lane_request(body: bytes) -> bytes:
    return b"POST /lane HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_asgi_requests_between_lane_requests_get_uvicorns_scope() -> None:
    scopes: list[dict[str, Any]] = []
    protocol, inner = _protocol(scopes)
    protocol.data_received(_lane_request(b"one"))
    await _settle()
    protocol.data_received(b"GET /other%20path?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing: A\r\n\r\n")
    await _settle()
    protocol.data_received(_lane_request(b"two"))
    await _settle()
    protocol.data_received(b"DELETE /lane HTTP/1.0\r\nHost: g\r\n\r\n")
    await _settle()
    sent = b"".join(inner.writes)
    assert sent.count(b"HTTP/1.1 200 OK") == 2 and sent.count(b"HTTP/1.1 204") == 2
    assert b"\r\n\r\none" in sent and b"\r\n\r\ntwo" in sent
    first, second = scopes
    assert (first["method"], first["path"], first["raw_path"]) == (
        "GET",
        "/other path",
        b"/other%20path",
    )
    assert first["query_string"] == b"x=1" and first["http_version"] == "1.1"
    assert first["headers"] == [(b"host", b"h"), (b"x-thing", b"A")]
    assert first["type"] == "http" and first["scheme"] == "http"
    assert first["client"] == ("127.0.0.1", 1)
    assert (second["method"], second["path"], second["http_version"]) == ("DELETE", "/lane", "1.0")
    assert second["headers"] == [(b"host", b"g")]


async def test_keep_alive_closes_an_idle_connection_not_a_busy_one() -> None:
    protocol, inner = _protocol([], keep_alive=0.3)
    for n in range(6):  # a request every 0.1 s for longer than the timeout: kept open
        protocol.data_received(_lane_request(b"%d" % n))
        await asyncio.sleep(0.1)
        assert not inner.closed
    assert b"".join(inner.writes).count(b"HTTP/1.1 200 OK") == 6
    await asyncio.sleep(0.6)  # idle past the timeout: closed
    assert inner.closed
    protocol.connection_lost(None)
    assert protocol.timeout_keep_alive_task is None
