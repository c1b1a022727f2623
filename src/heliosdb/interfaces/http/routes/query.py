"""POST /query: one SQL statement with $1..$n parameters, or a script.

The route is the API's hot path, so it is served twice over the same code:

- :class:`QueryRoute`, a pure ASGI layer just inside the metrics and body-limit
  middleware, answers ``POST /api/v1/query`` without FastAPI's request object,
  dependency solving and response classes (they cost several times the query itself);
- the FastAPI route below documents the endpoint in OpenAPI and answers it if the
  ASGI layer is not installed.

Both authenticate with auth.principal_from_headers and run :func:`run_query`, so
behaviour and error bodies are one.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heliosdb.engine.codecs import json_default
from heliosdb.errors import HeliosError, invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep, principal_from_headers
from heliosdb.interfaces.http.errors import error_response
from heliosdb.interfaces.http.responses import parse_json_object, read_json_object
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
    sql = body.get("sql")
    params = body.get("params", [])
    script = body.get("script", False)
    row_format = body.get("row_format", "array")
    if not isinstance(sql, str):
        raise invalid("sql must be a string")
    if not isinstance(params, list):
        raise invalid("params must be a JSON array")
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


class QueryRoute:
    """``POST <prefix>/query`` in pure ASGI; every other request goes on to ``app``.

    Errors other than HeliosError propagate exactly as they do from a FastAPI route (the
    body-limit middleware and the app's error funnel handle them).
    """

    def __init__(self, app: ASGIApp, services: Services, path: str, route: Any) -> None:
        self.app = app
        self.services = services
        self.path = path
        self.route = route  # what the metrics middleware labels the request with

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            principal = await principal_from_headers(self.services, Headers(scope=scope))
            body = await _read_body(receive)
            if body is None:
                return  # the client went away
            payload = await run_query(self.services, principal, parse_json_object(body))
        except HeliosError as exc:
            await error_response(exc)(scope, receive, send)
            return
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes | None:
    message: Message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
