"""POST /query: one SQL statement with $1..$n parameters, or a script.

The route is the API's hot path, so it is served twice over the same code:

- :class:`QueryEndpoint`, pure ASGI, answers ``POST /api/v1/query`` before FastAPI's
  middleware stack, request object, dependency solving and response classes (together
  they cost several times the query itself; see docs/benchmarks.md);
- the FastAPI route below documents the endpoint in OpenAPI and answers it when the
  app is mounted without the hot route.

Both authenticate with auth.principal_from_headers and run :func:`run_query`, so
behaviour and error bodies are one.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from heliosdb.engine.codecs import json_default
from heliosdb.errors import HeliosError, invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep, principal_from_headers
from heliosdb.interfaces.http.errors import error_response, internal_error_response
from heliosdb.interfaces.http.middleware import OPEN_REQUESTS, record_request, too_large
from heliosdb.interfaces.http.responses import parse_json_object, read_json_object, statement_of
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services

router = APIRouter(tags=["query"])
PATH = "/query"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class QueryRequest(BaseModel):
    sql: str = Field(description="One SQL statement, with $1..$n placeholders.")
    params: list[Any] = Field(default_factory=list, description="Values for $1..$n.")
    script: bool = Field(
        False, description="Run several ;-separated statements (no params, no rows back)."
    )
    row_format: str = Field("array", description="'array' (default) or 'object' per row.")


async def run_query(services: Services, principal: Principal, body: dict[str, Any]) -> bytes:
    """Check the request body, run the statement, and render the JSON response body."""
    sql, params = statement_of(body)
    script = body.get("script", False)
    row_format = body.get("row_format", "array")
    if not isinstance(script, bool):
        raise invalid("script must be true or false")
    if row_format not in ("array", "object"):
        raise invalid("row_format must be 'array' or 'object'")
    result = await services.query.execute(principal, sql, params, script=script)
    rows: list[Any] = result.rows
    if row_format == "object":
        names = [c.name for c in result.columns]
        rows = [dict(zip(names, row, strict=True)) for row in rows]
    return orjson.dumps(
        {
            "columns": [{"name": c.name, "type": c.type} for c in result.columns],
            "rows": rows,
            "affected_rows": result.affected_rows,
            "command": result.status,
            "metrics": {
                "execution_time_ms": result.execution_time_ms,
                "rows_returned": len(result.rows),
            },
        },
        default=json_default,
        option=orjson.OPT_NON_STR_KEYS,
    )


@router.post(
    PATH,
    summary="Execute a SQL statement",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": QueryRequest.model_json_schema()}},
        }
    },
)
async def execute_query(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    body = await read_json_object(request)
    return Response(await run_query(services, principal, body), media_type="application/json")


ROUTE = next(r for r in router.routes if getattr(r, "path", None) == PATH)
CLIENT_CLOSED = 499  # the metrics status of a request whose client left before the body
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class QueryEndpoint:
    """``POST /api/v1/query`` ahead of FastAPI's middleware stack, by two doors:

    - :meth:`answer`, the listener's lane (server.py): uvicorn's protocol has read the
      headers and the whole body (its Content-Length within the limit);
    - ``__call__``, pure ASGI, for every request the lane does not take.

    Both take the steps of the general pipeline in the same order: metrics, body size
    limit (by Content-Length first, then while reading), credentials, JSON body,
    statement; every error leaves as the same body and status the FastAPI route gives.
    """

    def __init__(self, services: Services, max_body_bytes: int, path: str = PATH) -> None:
        self.services = services
        self.limit = max_body_bytes
        self.path = path  # as the client sent it, for the log of an unexpected error
        self.label: str = getattr(ROUTE, "path", PATH)  # the label FastAPI's route gets

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
                principal = await principal_from_headers(self.services, headers)
                payload = await run_query(self.services, principal, parse_json_object(body))
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
            status, response_headers, payload = await self._answer(headers, None, receive)
            if status != CLIENT_CLOSED:
                start = {"type": "http.response.start", "status": status}
                await send({**start, "headers": response_headers})
                await send({"type": "http.response.body", "body": payload})
        finally:
            OPEN_REQUESTS.dec()
            record_request(self.label, status, time.perf_counter() - started)

    async def _answer(
        self, headers: dict[str, str], body: bytes | None, receive: Receive | None
    ) -> Answer:
        """Run the request; every error rendered as the error funnel renders it."""
        try:
            payload = await self._run(headers, body, receive)
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

    async def _run(
        self, headers: dict[str, str], body: bytes | None, receive: Receive | None
    ) -> bytes | None:
        length = headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                raise too_large(self.limit)
        principal = await principal_from_headers(self.services, headers)
        if body is None:
            assert receive is not None
            body = await self._read_body(receive)
            if body is None:
                return None
        return await run_query(self.services, principal, parse_json_object(body))

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
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
