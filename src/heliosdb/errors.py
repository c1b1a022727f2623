"""The one error vocabulary of HeliosDB.

Every failure a client can see is a :class:`HeliosError` carrying one code from the
closed set :class:`ErrorCode`. Each interface maps the codes exactly once (REST to HTTP
statuses and the spec's ``{"error": {...}}`` body, wire protocols to their own error
frames), and a totality test checks that every code is mapped everywhere.

    HeliosError
      code: ErrorCode        stable, part of the API
      message: str           for humans, never contains secrets or SQL text of others
      details: dict          extra machine-readable fields (sqlstate, retry_after, ...)
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CONFLICT = "CONFLICT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    QUERY_TIMEOUT = "QUERY_TIMEOUT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ENGINE_ERROR = "ENGINE_ERROR"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


class HeliosError(Exception):
    """A failure with a stable code that every interface knows how to render."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def __repr__(self) -> str:
        return f"HeliosError({self.code.value}, {self.message!r}, {self.details!r})"


def invalid(message: str, **details: Any) -> HeliosError:
    return HeliosError(ErrorCode.INVALID_ARGUMENT, message, **details)


def not_found(message: str, **details: Any) -> HeliosError:
    return HeliosError(ErrorCode.NOT_FOUND, message, **details)


def denied(message: str, **details: Any) -> HeliosError:
    return HeliosError(ErrorCode.PERMISSION_DENIED, message, **details)


def unauthenticated(message: str = "missing or invalid credentials") -> HeliosError:
    return HeliosError(ErrorCode.UNAUTHENTICATED, message)
