"""Redis's exact error texts, and the one funnel from HeliosError to them.

Clients match these strings (redis-py maps prefixes such as NOAUTH, WRONGPASS, NOPERM and
EXECABORT to exception classes, and some full texts), so each is a named constant here.
"""

from __future__ import annotations

import logging

from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError

log = logging.getLogger("heliosdb.interfaces.redis")


class RedisError(Exception):
    """An error reply; ``text`` is everything after the leading ``-``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
OVERFLOW = "ERR increment or decrement would overflow"
NAN_OR_INFINITY = "ERR increment would produce NaN or Infinity"
HASH_NOT_INTEGER = "ERR hash value is not an integer"
HASH_NOT_FLOAT = "ERR hash value is not a float"
SYNTAX = "ERR syntax error"
NO_SUCH_KEY = "ERR no such key"
INDEX_OUT_OF_RANGE = "ERR index out of range"
MIN_MAX_NOT_FLOAT = "ERR min or max is not a float"
MIN_MAX_NOT_STRING_RANGE = "ERR min or max not valid string range item"
INVALID_CURSOR = "ERR invalid cursor"
BUSY_KEY = "BUSYKEY Target key name already exists."
NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
NOPERM_WRITE = "NOPERM this user has no permissions to run the '{}' command"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
DB_OUT_OF_RANGE = "ERR DB index is out of range"
MAX_CLIENTS = "ERR max number of clients reached"
NOT_SUPPORTED = "ERR {} is not supported by HeliosDB"
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
TIMEOUT_NOT_FLOAT = "ERR timeout is not a float or out of range"
TIMEOUT_NEGATIVE = "ERR timeout is negative"


def wrong_arity(name: str) -> RedisError:
    return RedisError(f"ERR wrong number of arguments for '{name}' command")


def unknown_command(name: bytes, args: list[bytes]) -> RedisError:
    shown = "".join(f"'{_text(a)[:128]}' " for a in args[:20])
    return RedisError(
        f"ERR unknown command '{_text(name)[:128]}', with args beginning with: {shown}"
    )


def unknown_subcommand(sub: bytes, command: str) -> RedisError:
    return RedisError(f"ERR unknown subcommand '{_text(sub)[:128]}'. Try {command.upper()} HELP.")


def invalid_expire(command: str) -> RedisError:
    return RedisError(f"ERR invalid expire time in '{command}' command")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")


_BY_REASON = {
    "wrong_type": WRONGTYPE,
    "not_integer": NOT_INTEGER,
    "not_float": NOT_FLOAT,
    "overflow": OVERFLOW,
    "nan_or_infinity": NAN_OR_INFINITY,
    "hash_not_integer": HASH_NOT_INTEGER,
    "hash_not_float": HASH_NOT_FLOAT,
    "no_such_key": NO_SUCH_KEY,
    "index_out_of_range": INDEX_OUT_OF_RANGE,
    "busy_key": BUSY_KEY,
    "syntax": SYNTAX,
    "string_too_long": STRING_TOO_LONG,
}

_BY_CODE: dict[ErrorCode, str] = {
    ErrorCode.INVALID_ARGUMENT: "ERR {}",
    ErrorCode.NOT_FOUND: "ERR {}",
    ErrorCode.ALREADY_EXISTS: "ERR {}",
    ErrorCode.CONFLICT: "ERR {}",
    ErrorCode.UNAUTHENTICATED: NOAUTH,
    ErrorCode.PERMISSION_DENIED: "NOPERM {}",
    ErrorCode.RATE_LIMIT_EXCEEDED: "ERR rate limit exceeded: {}",
    ErrorCode.PAYLOAD_TOO_LARGE: "ERR {}",
    ErrorCode.QUERY_TIMEOUT: "ERR {}",
    ErrorCode.RESOURCE_EXHAUSTED: "ERR {}",
    ErrorCode.ENGINE_ERROR: "ERR engine error: {}",
    ErrorCode.UNAVAILABLE: "ERR engine unavailable: {}",
    ErrorCode.UNIMPLEMENTED: "ERR {}",
    ErrorCode.INTERNAL: "ERR internal error",
}


def to_redis(exc: BaseException) -> RedisError:
    """The one place any failure becomes a Redis error reply."""
    if isinstance(exc, RedisError):
        return exc
    if isinstance(exc, HeliosError):
        reason = exc.details.get("reason")
        if reason in _BY_REASON:
            return RedisError(_BY_REASON[reason])
        template = _BY_CODE.get(exc.code, "ERR {}")
        return RedisError(template.format(exc.message))
    converted = from_engine(exc)
    if converted.code is ErrorCode.INTERNAL:
        log.error("unexpected failure in a Redis command", exc_info=exc)
    return to_redis(converted)
