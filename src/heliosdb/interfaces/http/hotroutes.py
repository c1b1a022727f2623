"""JSON POST routes answered ahead of FastAPI: ``POST /query`` and ``POST /vectors/search``.

A hot route is served twice over the same code: by :meth:`HotRoute.answer`, the
listener's lane (server.py: uvicorn's protocol has read the headers and the whole body,
its Content-Length within the limit), and by ``__call__``, pure ASGI, for every request
the lane does not take. Both skip FastAPI's middleware stack, request object,
dependency solving and response classes (together several times the work of a point
select; docs/benchmarks.md), and take the general pipeline's steps in its order:
metrics, body size limit (by Content-Length first, then while reading), credentials,
JSON body, the route's own work. Every error leaves with the body and status the
FastAPI route (which documents the endpoint in OpenAPI) gives.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from heliosdb.errors import HeliosError
from heliosdb.interfaces.http.auth import principal_from_headers, recent_principal
from heliosdb.interfaces.http.errors import error_response, internal_error_response
from heliosdb.interfaces.http.middleware import OPEN_REQUESTS, record_request, too_large
from heliosdb.interfaces.http.responses import parse_json_object
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services

CLIENT_CLOSED = 499  # the metrics status of a request whose client left before the body
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Run = Callable[[Services, Principal, dict[str, Any]], Awaitable[bytes]]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class HotRoute:
    """One JSON POST route: ``run(services, principal, body)`` renders the 200 body."""

    def __init__(
        self, services: Services, max_body_bytes: int, path: str, label: str, run: Run
    ) -> None:
        self.services = services
        self.limit = max_body_bytes
        self.path = path  # as the client sent it, for the log of an unexpected error
        self.label = label  # the metrics label FastAPI's route gets
        self.run = run

    async def answer(self, headers: dict[str, str], body: bytes) -> Answer:
        # The steps of _answer, flattened: each coroutine level is paid again on every
        # resumption, and this one is resumed for the pool and for the engine's answer.
        started = time.perf_counter()
        status = 500
        OPEN_REQUESTS.inc()
        try:
            try:
                if len(body) > self.limit:
                    raise too_large(self.limit)
                # a coroutine made and awaited only when the credentials are not fresh
                principal = recent_principal(self.services, headers)
                if principal is None:
                    principal = await principal_from_headers(self.services, headers)
                payload = await self.run(self.services, principal, parse_json_object(body))
            except Exception as exc:  # noqa: BLE001 - the error funnel (HeliosError or a bug)
                result = self._failure(exc)
                status = result[0]
                return result
            status = 200
            return 200, [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))], payload
        finally:
            OPEN_REQUESTS.dec()
            record_request(self.label, status, time.perf_counter() - started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        OPEN_REQUESTS.inc()
        try:
            # ASGI header names are lower case; a plain dict (first value wins, as in
            # Starlette's Headers) is cheaper than Headers on this path.
            headers: dict[str, str] = {}
            for name, value in scope["headers"]:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
            status, response_headers, payload = await self._answer(headers, receive)
            if status != CLIENT_CLOSED:
                start = {"type": "http.response.start", "status": status}
                await send({**start, "headers": response_headers})
                await send({"type": "http.response.body", "body": payload})
        finally:
            OPEN_REQUESTS.dec()
            record_request(self.label, status, time.perf_counter() - started)

    async def _answer(self, headers: dict[str, str], receive: Receive) -> Answer:
        """Run the request; every error rendered as the error funnel renders it."""
        try:
            payload = await self._run(headers, receive)
        except Exception as exc:  # noqa: BLE001 - the error funnel (HeliosError or a bug)
            return self._failure(exc)
        if payload is None:
            return CLIENT_CLOSED, [], b""
        return 200, [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))], payload

    def _failure(self, exc: Exception) -> Answer:
        """An error as the error funnel renders it; anything but a HeliosError is a bug,
        logged, and INTERNAL to the client."""
        if isinstance(exc, HeliosError):
            response = error_response(exc)
        else:
            response = internal_error_response("POST", self.path, exc)
        return response.status_code, response.raw_headers, bytes(response.body)

    async def _run(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        length = headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                raise too_large(self.limit)
        principal = await principal_from_headers(self.services, headers)
        body = await self._read_body(receive)
        if body is None:
            return None
        return await self.run(self.services, principal, parse_json_object(body))

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, None if the client went away, PAYLOAD_TOO_LARGE past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise too_large(self.limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
