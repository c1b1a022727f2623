"""HeliosError -> HTTP: the one table of statuses and the spec's error body.

{"error": {"code": "NOT_FOUND", "message": "...", ...details}}
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from heliosdb.engine.codecs import json_default
from heliosdb.errors import ErrorCode, HeliosError

log = logging.getLogger("heliosdb.http")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.QUERY_TIMEOUT: 408,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.ENGINE_ERROR: 500,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNIMPLEMENTED: 501,
    ErrorCode.RESOURCE_EXHAUSTED: 503,
    ErrorCode.UNAVAILABLE: 503,
}
_FROM_HTTP_STATUS = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_ARGUMENT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.PERMISSION_DENIED,
}


def error_body(error: HeliosError) -> dict[str, Any]:
    return {"error": {"code": error.code.value, "message": error.message, **error.details}}


def error_response(error: HeliosError, status: int | None = None) -> Response:
    headers = {}
    if error.code is ErrorCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after" in error.details:
        headers["Retry-After"] = str(error.details["retry_after"])
    return Response(
        orjson.dumps(error_body(error), default=json_default),
        status_code=status or STATUS[error.code],
        media_type="application/json",
        headers=headers,
    )


def internal_error_response(method: str, path: str, exc: BaseException) -> Response:
    """A bug: logged once with its traceback; the client sees only INTERNAL."""
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(HeliosError(ErrorCode.INTERNAL, "internal error"))


def install(app: FastAPI) -> None:
    async def on_helios(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeliosError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return error_response(
            HeliosError(ErrorCode.INVALID_ARGUMENT, "the request is not valid", problems=problems)
        )

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _FROM_HTTP_STATUS.get(exc.status_code, ErrorCode.INVALID_ARGUMENT)
        return error_response(HeliosError(code, str(exc.detail)), exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return internal_error_response(request.method, request.url.path, exc)

    app.add_exception_handler(HeliosError, on_helios)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
