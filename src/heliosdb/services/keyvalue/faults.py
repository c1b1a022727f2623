"""Failures of the key-value model, each a HeliosError with a stable ``reason``.

The Redis interface turns each reason into Redis's exact error text (interfaces/redis/errors.py);
other interfaces see an ordinary INVALID_ARGUMENT / NOT_FOUND / ALREADY_EXISTS.
"""

from __future__ import annotations

import enum

from heliosdb.errors import ErrorCode, HeliosError


class Reason(enum.StrEnum):
    WRONG_TYPE = "wrong_type"
    NOT_INTEGER = "not_integer"
    NOT_FLOAT = "not_float"
    OVERFLOW = "overflow"
    NAN_OR_INFINITY = "nan_or_infinity"
    HASH_NOT_INTEGER = "hash_not_integer"
    HASH_NOT_FLOAT = "hash_not_float"
    NO_SUCH_KEY = "no_such_key"
    INDEX_OUT_OF_RANGE = "index_out_of_range"
    BUSY_KEY = "busy_key"
    SYNTAX = "syntax"
    STRING_TOO_LONG = "string_too_long"


_CODES = {
    Reason.NO_SUCH_KEY: ErrorCode.NOT_FOUND,
    Reason.BUSY_KEY: ErrorCode.ALREADY_EXISTS,
}

_MESSAGES = {
    Reason.WRONG_TYPE: "operation against a key holding the wrong kind of value",
    Reason.NOT_INTEGER: "value is not an integer or out of range",
    Reason.NOT_FLOAT: "value is not a valid float",
    Reason.OVERFLOW: "increment or decrement would overflow",
    Reason.NAN_OR_INFINITY: "increment would produce NaN or Infinity",
    Reason.HASH_NOT_INTEGER: "hash value is not an integer",
    Reason.HASH_NOT_FLOAT: "hash value is not a float",
    Reason.NO_SUCH_KEY: "no such key",
    Reason.INDEX_OUT_OF_RANGE: "index out of range",
    Reason.BUSY_KEY: "target key name already exists",
    Reason.SYNTAX: "syntax error",
    Reason.STRING_TOO_LONG: "string exceeds maximum allowed size (proto-max-bulk-len)",
}


def fault(reason: Reason) -> HeliosError:
    return HeliosError(
        _CODES.get(reason, ErrorCode.INVALID_ARGUMENT), _MESSAGES[reason], reason=reason.value
    )
