"""POST /query: one SQL statement with $1..$n parameters, or a script.

The route is the API's hot path, so it is served twice over the same code:

- :func:`hot_route` answers ``POST /api/v1/query`` in the listener's lane or in pure
  ASGI, before FastAPI's middleware stack, request object, dependency solving and
  response classes (interfaces/http/hotroutes.py);
- the FastAPI route below documents the endpoint in OpenAPI and answers it when the
  app is mounted without the hot route.

Both run :func:`run_query`, so behaviour and error bodies are one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from heliosdb.engine.codecs import json_default
from heliosdb.errors import invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.hotroutes import HotRoute
from heliosdb.interfaces.http.responses import read_json_object, statement_of
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.query import Column

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
            "columns": _columns_json(result.columns),
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


_rendered: dict[int, tuple[Sequence[Column], list[dict[str, str]]]] = {}


def _columns_json(columns: Sequence[Column]) -> list[dict[str, str]]:
    """The ``columns`` of a response; a prepared statement's (a tuple its plan keeps) made
    once, as orjson only reads them."""
    hit = _rendered.get(id(columns))
    if hit is not None and hit[0] is columns:
        return hit[1]
    rendered = [{"name": c.name, "type": c.type} for c in columns]
    if isinstance(columns, tuple):
        if len(_rendered) >= 4096:
            _rendered.clear()
        _rendered[id(columns)] = (columns, rendered)  # kept alive: its id is not reused
    return rendered


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


def hot_route(services: Services, max_body_bytes: int, path: str) -> HotRoute:
    """``POST /api/v1/query`` ahead of FastAPI (hotroutes.py), under FastAPI's label."""
    return HotRoute(services, max_body_bytes, path, getattr(ROUTE, "path", PATH), run_query)
