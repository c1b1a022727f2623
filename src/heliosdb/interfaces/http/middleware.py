"""Pure ASGI middleware: request metrics and the body size limit."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.interfaces.http.errors import error_response
from heliosdb.observability.metrics import RequestRecorder, requests_gauge

OPEN_REQUESTS = requests_gauge("http")
_requests = RequestRecorder("http")


# record_request(route, status, seconds): count one finished request and its latency
# (observability.metrics.RequestRecorder), the bound method itself on the hot routes' path.
record_request = _requests.record


def too_large(limit: int) -> HeliosError:
    return HeliosError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is larger than the limit of {limit} bytes",
        limit=limit,
    )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        OPEN_REQUESTS.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            OPEN_REQUESTS.dec()
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            record_request(path, status, time.perf_counter() - started)


class BodyLimitMiddleware:
    """Refuse bodies past ``limit`` bytes, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(too_large(self.limit))(scope, receive, send)


class _TooLarge(Exception):
    pass
