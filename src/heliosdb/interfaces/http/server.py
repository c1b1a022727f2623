"""The HTTP listener: uvicorn on a socket we bind, so port 0 works and we own shutdown.

Hot routes (``POST /api/v1/query``) take a lane inside uvicorn's httptools protocol: for
a plain HTTP/1.1 request with a Content-Length within the body limit, the protocol
collects the body itself and hands headers and body to the route's :class:`Lane`, then
writes the answer it gets as one response, with uvicorn's default headers, keep-alive
and pipelining rules. ASGI's scope, receive/send messages and response cycle are skipped:
on this machine they cost more than twice what uvicorn's own parsing does. Every other
request, and any hot request the lane does not take (HTTP/1.0, ``Expect``, chunked or
oversized bodies, pipelined behind an unfinished response), goes through ASGI as before,
where the same route answers it with the same bodies (routes/query.py).

Connections: at most ``http.max_connections`` at once (past it a new one gets 503 and is
closed, _tcp.ConnectionLimit); one with no request in progress closes after
``http.keep_alive_timeout`` (uvicorn arms that timer only after a response: a connection
that never sent a byte stayed open), and one whose request head or body stalls after
``http.read_timeout`` (uvicorn has no such timer: a client sending a header line a
minute held its connection for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator
from typing import Any, ClassVar, Protocol

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from heliosdb.interfaces._tcp import (
    ConnectionLimit,
    Refusal,
    http_refusal,
    too_many_connections,
)
from heliosdb.interfaces.http.errors import error_body, internal_error_response
from heliosdb.settings import HttpSettings, Settings

Headers = list[tuple[bytes, bytes]]


class Lane(Protocol):
    """A route answered in the protocol: whole body in, (status, headers, body) out.

    ``answer`` never raises for a client's or the engine's error: it renders it (the
    route's own error funnel). ``limit`` is the largest body the lane accepts.
    """

    limit: int

    async def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, Headers, bytes]: ...


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The node owns SIGINT/SIGTERM and stops every listener together.
        yield


class _CoalescingTransport(asyncio.Transport):
    """A transport whose writes within one event-loop step leave in one send.

    uvicorn writes a response's status line and headers, then its body, as two writes:
    two send() calls, two TCP segments. On the query hot path that second system call
    cost more than the JSON rendering; joined, the response leaves in one.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def write_now(self, data: bytes) -> None:
        """Send ``data``, a whole response, at once (after anything still pending)."""
        if self._pending:
            self._pending.append(data)
            self._flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class _NoEvent:
    """What uvicorn's protocol may call on a lane request's ``message_event``."""

    @staticmethod
    def set() -> None:
        return None


class _LaneCycle:
    """One lane request: stands in for uvicorn's RequestResponseCycle in its protocol
    (which reads ``response_complete`` and sets ``disconnected``, ``keep_alive``)."""

    __slots__ = (
        "chunks",
        "disconnected",
        "headers",
        "keep_alive",
        "lane",
        "path",
        "response_complete",
        "task",
    )
    message_event = _NoEvent
    task: asyncio.Task[None]

    def __init__(self, lane: Lane, path: bytes, headers: dict[str, str], keep_alive: bool) -> None:
        self.lane = lane
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.disconnected = False
        self.response_complete = False

    async def run(self, protocol: _HttpProtocol) -> None:
        try:
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = []
            try:
                status, headers, payload = await self.lane.answer(self.headers, body)
            except Exception as exc:  # noqa: BLE001 - answer() renders errors itself: a bug
                response = internal_error_response("POST", self.path.decode("latin-1"), exc)
                status, headers, payload = 500, response.raw_headers, bytes(response.body)
                self.keep_alive = False
            self.response_complete = True
            transport = protocol.coalescing
            if self.disconnected or transport._transport.is_closing():
                return
            defaults = protocol.server_state.default_headers
            if _joined_defaults[0] is not defaults:
                _join_defaults(defaults)
            parts = [STATUS_LINE[status], _joined_defaults[1]]
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            parts += (b"\r\n", payload)
            transport.write_now(b"".join(parts))
            if not self.keep_alive:
                transport.close()
            protocol.on_response_complete()
        finally:
            # Out of uvicorn's set of running requests (what its shutdown waits for) here,
            # not by a done callback (a loop turn more). A task cancelled before it ever
            # ran stays in the set: only past shutdown's grace period, when none waits.
            protocol.tasks.discard(self.task)


_joined_defaults: tuple[object, bytes] = (None, b"")
_Task = asyncio.Task
_LANE_TASK_NAME = "heliosdb-http-lane"


def _join_defaults(defaults: list[tuple[bytes, bytes]]) -> None:
    """uvicorn's default headers (the date, which its server loop replaces every second)
    as response header lines, joined once per new list."""
    global _joined_defaults
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
    _joined_defaults = (defaults, lines)


class _BodyBudget:
    """Request body bytes the listener's connections hold for requests whose body has
    not all arrived yet, and how many they may hold together."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


_OVER_BUDGET = (
    b'{"error":{"code":"RESOURCE_EXHAUSTED","message":"the node holds too many '
    b'unfinished request bodies; retry later"}}'
)


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the lane, an ASGI scope built only for requests
    ASGI answers, and one keep-alive timer per connection instead of one per response.

    Request bodies count against the listener's :class:`_BodyBudget` from their first
    byte until the last: each is at most ``http.max_body_bytes``, but many connections
    sending bodies slowly (no credentials needed) would otherwise have the node hold all
    of them. The request whose bytes pass the budget gets 503 and its connection closes."""

    lanes: ClassVar[dict[bytes, Lane]] = {}  # raw POST path -> lane (HttpListener sets it)
    # the listener's (HttpListener sets it); until then the default setting's, not 0,
    # which would refuse every request with a body
    budget: ClassVar[_BodyBudget] = _BodyBudget(
        HttpSettings.model_fields["max_pending_body_bytes"].default
    )
    # the listener's open connections (HttpListener sets it, and the refusal's bytes)
    limit: ClassVar[ConnectionLimit] = ConnectionLimit(
        "http", HttpSettings.model_fields["max_connections"].default
    )
    refusal: ClassVar[bytes] = b""
    read_timeout: ClassVar[float] = HttpSettings.model_fields["read_timeout"].default
    idle_since: float | None = None  # loop time the last response left; None: busy
    # loop time the request being read began arriving, or its body's last read; None:
    # no request being read (idle, or answering)
    reading_since: float | None = None
    held = 0  # body bytes of the request being read, counted in the budget
    refused = False  # over the budget: the rest of what the connection sends is ignored

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.limit.admit(transport, self._refusal):
            return
        self.coalescing = _CoalescingTransport(transport, self.loop)
        super().connection_made(self.coalescing)
        # idle until its first request: the keep-alive timer runs from here
        self.idle_since = self.loop.time()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self._check_keep_alive
        )

    def _refusal(self) -> Refusal:
        return Refusal(self.refusal)

    def handle_websocket_upgrade(self) -> None:
        # The connection leaves this protocol (and the count) for uvicorn's WebSocket one;
        # the REST API has no WebSocket route, so that one answers 403 and closes.
        self.limit.leave()
        self._unset_keepalive_if_required()
        self.reading_since = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limit.leave()
        if self.held:
            self.budget.held -= self.held
            self.held = 0
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_message_begin(self) -> None:
        # uvicorn's, minus the ASGI scope (a dict and a copy of the app state): built in
        # on_headers_complete when ASGI answers the request.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        lane = self.lanes.get(self.url)
        if lane is not None:
            headers = self._lane_headers(lane)
            if headers is not None:
                keep_alive = self.parser.should_keep_alive()
                self.cycle = _LaneCycle(lane, self.url, headers, keep_alive)  # type: ignore[assignment]
                return
        # uvicorn's own scope, around the request line and headers already read
        url, headers_read, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers_read, expect
        self.scope["headers"] = headers_read
        super().on_headers_complete()

    # Keep-alive: uvicorn arms a timer after every response and cancels it when the next
    # request's bytes arrive (a TimerHandle made and cancelled per request). Here a
    # connection notes when it went idle, and when the request it reads began arriving,
    # and one timer looks again when it fires.
    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls it for every read: bytes came in, busy until the next response is
        # complete; if idle until now, a request begins arriving.
        if self.idle_since is not None:
            self.idle_since = None
            self.reading_since = self.loop.time()

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timer above.
        self.server_state.total_requests += 1
        if self.coalescing._transport.is_closing():  # the transport under the coalescing one
            return
        self.idle_since = None
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._check_keep_alive
            )

    def _check_keep_alive(self) -> None:
        self.timeout_keep_alive_task = None
        now = self.loop.time()
        if self.idle_since is not None:
            left = self.idle_since + self.timeout_keep_alive - now
        elif self.reading_since is not None:
            if self.flow.read_paused:
                # The node stopped reading (the app has not taken the body yet): the
                # client's time starts again when it may send.
                self.reading_since = now
            left = self.reading_since + self.read_timeout - now
        else:
            return  # answering: the next complete response arms the timer again
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._check_keep_alive)
        else:
            self.timeout_keep_alive_handler()

    def _lane_headers(self, lane: Lane) -> dict[str, str] | None:
        """The request's headers if the lane takes it, else None (ASGI answers it)."""
        parser = self.parser
        cycle = self.cycle
        if (
            parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or self.expect_100_continue
            or (cycle is not None and not cycle.response_complete)  # pipelined
            or self.limit_concurrency is not None
        ):
            return None
        # ASGI header names are lower case; the first value wins, as in Starlette's Headers.
        headers: dict[str, str] = {}
        for name, value in self.headers:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        length = headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > lane.limit:
            return None
        if "transfer-encoding" in headers or "upgrade" in headers:
            return None
        return headers

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.reading_since = self.loop.time()
        n = len(body)
        self.held += n
        budget = self.budget
        budget.held += n
        if budget.held > budget.limit:
            self._refuse()
            return
        cycle: Any = self.cycle
        if type(cycle) is _LaneCycle:
            cycle.chunks.append(body)  # the parser stops at Content-Length, within the limit
            return
        super().on_body(body)

    def _refuse(self) -> None:
        self.refused = True
        self.budget.held -= self.held
        self.held = 0
        transport = self.coalescing
        if not transport.is_closing():
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_OVER_BUDGET)
            )
            transport.write_now(head + _OVER_BUDGET)
            transport.close()

    def on_message_complete(self) -> None:
        self.reading_since = None
        if self.held:
            self.budget.held -= self.held
            self.held = 0
        elif self.refused:
            return
        cycle: Any = self.cycle
        if type(cycle) is _LaneCycle:
            # A Task made here, named: loop.create_task would have the Task format a
            # "Task-<n>" name of its own, a string built per request.
            cycle.task = task = _Task(cycle.run(self), loop=self.loop, name=_LANE_TASK_NAME)
            self.tasks.add(task)
            return
        super().on_message_complete()


class HttpListener:
    name = "http"

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.settings = settings
        tls = settings.tls
        options: dict[str, object] = {}
        if tls.enabled:
            options = {
                "ssl_certfile": str(tls.cert_file),
                "ssl_keyfile": str(tls.key_file),
                "ssl_ca_certs": str(tls.client_ca_file) if tls.client_ca_file else None,
                "ssl_cert_reqs": {
                    "none": ssl.CERT_NONE,
                    "optional": ssl.CERT_OPTIONAL,
                    "require": ssl.CERT_REQUIRED,
                }[tls.client_auth],
            }
        lanes: dict[bytes, Lane] = getattr(app, "lanes", {})
        budget = _BodyBudget(settings.http.max_pending_body_bytes)
        limit = settings.http.max_connections
        refusal = http_refusal(orjson.dumps(error_body(too_many_connections("HTTP", limit))))
        protocol = type(
            "HttpProtocol",
            (_HttpProtocol,),
            {
                "lanes": lanes,
                "budget": budget,
                "limit": ConnectionLimit("http", limit),
                "refusal": refusal,
                "read_timeout": settings.http.read_timeout,
            },
        )
        self.config = uvicorn.Config(
            app,
            lifespan="off",
            http=protocol,  # httptools, the C parser: several times faster than h11
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(settings.http.shutdown_grace_seconds),
            timeout_keep_alive=settings.http.keep_alive_timeout,  # type: ignore[arg-type]
            # X-Forwarded-For from a local client must not rewrite the client address.
            proxy_headers=False,
            **options,  # type: ignore[arg-type]
        )
        self.server = _Server(self.config)
        self.socket: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.state = "stopped"

    @property
    def scheme(self) -> str:
        return "https" if self.settings.tls.enabled else "http"

    @property
    def address(self) -> tuple[str, int]:
        assert self.socket is not None
        host, port = self.socket.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.settings.workers > 1:
            # The node's worker processes bind the same port; the kernel spreads new
            # connections across them (workers.py).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.settings.host, self.settings.http.port))
        sock.listen(2048)
        sock.setblocking(False)
        self.socket = sock
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.state = "serving"

    async def stop(self) -> None:
        self.state = "draining"
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.state = "stopped"
