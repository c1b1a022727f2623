"""JSON in and out through orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from heliosdb.engine.codecs import json_default
from heliosdb.errors import invalid


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, default=json_default, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a clear INVALID_ARGUMENT."""
    return parse_json_object(await request.body())


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise invalid("the request needs a JSON body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    return data


def statement_of(body: dict[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` and ``params`` of a query body (/query, /query/async, /query/stream)."""
    sql = body.get("sql")
    params = body.get("params", [])
    if not isinstance(sql, str):
        raise invalid("sql must be a string")
    if not isinstance(params, list):
        raise invalid("params must be a JSON array")
    return sql, params
