"""SQLSTATE -> HeliosError: the one place engine errors become HeliosDB errors."""

from __future__ import annotations

import asyncio

import asyncpg

from heliosdb.errors import ErrorCode, HeliosError

# Exact codes first, then two-character classes.
_BY_CODE: dict[str, ErrorCode] = {
    "42501": ErrorCode.PERMISSION_DENIED,  # insufficient_privilege
    "25006": ErrorCode.PERMISSION_DENIED,  # read_only_sql_transaction
    "42P01": ErrorCode.NOT_FOUND,  # undefined_table
    "42P07": ErrorCode.ALREADY_EXISTS,  # duplicate_table
    "42710": ErrorCode.ALREADY_EXISTS,  # duplicate_object
    "42P06": ErrorCode.ALREADY_EXISTS,  # duplicate_schema
    "23505": ErrorCode.CONFLICT,  # unique_violation
    "40001": ErrorCode.CONFLICT,  # serialization_failure
    "40P01": ErrorCode.CONFLICT,  # deadlock_detected
    "57014": ErrorCode.QUERY_TIMEOUT,  # query_canceled (statement_timeout)
    "55P03": ErrorCode.CONFLICT,  # lock_not_available
    "54000": ErrorCode.RESOURCE_EXHAUSTED,  # program_limit_exceeded
}
_BY_CLASS: dict[str, ErrorCode] = {
    "22": ErrorCode.INVALID_ARGUMENT,  # data exception
    "23": ErrorCode.INVALID_ARGUMENT,  # integrity constraint violation
    "42": ErrorCode.INVALID_ARGUMENT,  # syntax error or access rule violation
    "0A": ErrorCode.INVALID_ARGUMENT,  # feature not supported
    "2B": ErrorCode.INVALID_ARGUMENT,
    "3D": ErrorCode.NOT_FOUND,  # invalid catalog name
    "3F": ErrorCode.NOT_FOUND,  # invalid schema name
    "25": ErrorCode.CONFLICT,  # invalid transaction state
    "53": ErrorCode.RESOURCE_EXHAUSTED,
    "08": ErrorCode.UNAVAILABLE,
    "57": ErrorCode.UNAVAILABLE,
}


def from_engine(exc: BaseException) -> HeliosError:
    """Translate an asyncpg or connection failure; message and details are the client's own."""
    if isinstance(exc, HeliosError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or "XX000"
        code = _BY_CODE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], ErrorCode.ENGINE_ERROR)
        return HeliosError(
            code,
            str(getattr(exc, "message", None) or exc),
            sqlstate=sqlstate,
            detail=getattr(exc, "detail", None),
            hint=getattr(exc, "hint", None),
            position=_int_or_none(getattr(exc, "position", None)),
        )
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return HeliosError(ErrorCode.QUERY_TIMEOUT, "the statement ran past the query timeout")
    if isinstance(exc, asyncpg.InterfaceError):
        return HeliosError(ErrorCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return HeliosError(ErrorCode.UNAVAILABLE, "the engine is not reachable")
    return HeliosError(ErrorCode.INTERNAL, "internal error")


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None
