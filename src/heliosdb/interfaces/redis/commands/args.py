"""Argument parsing shared by the command families: numbers, options, bounds."""

from __future__ import annotations

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.services.keyvalue.numbers import float_or_none, int_or_none
from heliosdb.services.keyvalue.zsets import LexBound, ScoreBound


def integer(raw: bytes) -> int:
    value = int_or_none(raw)
    if value is None:
        raise RedisError(errors.NOT_INTEGER)
    return value


def positive(raw: bytes, message: str = errors.NOT_INTEGER) -> int:
    value = int_or_none(raw)
    if value is None or value < 0:
        raise RedisError(message)
    return value


def real(raw: bytes) -> float:
    value = float_or_none(raw)
    if value is None:
        raise RedisError(errors.NOT_FLOAT)
    return value


def timeout(raw: bytes) -> float | None:
    """A blocking timeout in seconds; None means wait forever (0)."""
    value = float_or_none(raw)
    if value is None:
        raise RedisError(errors.TIMEOUT_NOT_FLOAT)
    if value < 0:
        raise RedisError(errors.TIMEOUT_NEGATIVE)
    return None if value == 0 else value


def word(raw: bytes) -> bytes:
    return raw.upper()


def score_bound(raw: bytes) -> ScoreBound:
    exclusive = raw.startswith(b"(")
    text = raw[1:] if exclusive else raw
    value = float_or_none(text)
    if value is None:
        raise RedisError(errors.MIN_MAX_NOT_FLOAT)
    return ScoreBound(value, exclusive)


def lex_bound(raw: bytes) -> LexBound:
    if raw == b"-":
        return LexBound(b"", infinite=-1)
    if raw == b"+":
        return LexBound(b"", infinite=1)
    if raw[:1] == b"(":
        return LexBound(raw[1:], exclusive=True)
    if raw[:1] == b"[":
        return LexBound(raw[1:])
    raise RedisError(errors.MIN_MAX_NOT_STRING_RANGE)


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
