"""How engine values become JSON and JSON values become engine parameters.

The JSON form of each PostgreSQL type is part of the API (docs/rest.md):

    smallint, integer, bigint   number (exact: JSON numbers have no size limit)
    real, double precision      number; NaN and infinities as "NaN", "Infinity", "-Infinity"
    numeric, money              string with the exact decimal text
    boolean                     true / false
    text, varchar, char, name   string
    timestamp[tz], date, time   ISO 8601 string
    interval                    ISO 8601 duration string ("P1Y2M3DT4H")
    bytea                       base64 string
    json, jsonb                 the JSON value itself
    uuid, inet, cidr, macaddr   string
    arrays                      JSON arrays of the element form
    vector (pgvector)           array of numbers
    anything else               the engine's text form
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from heliosdb.errors import invalid

INT_TYPES = frozenset({"int2", "int4", "int8", "oid"})
FLOAT_TYPES = frozenset({"float4", "float8"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "unknown", "citext"})


async def register_codecs(conn: asyncpg.Connection) -> None:
    """Per-connection codecs: JSON through orjson, interval and vector as text."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=dump_json, decoder=orjson.loads, format="text"
        )
    await conn.set_type_codec(
        "interval", schema="pg_catalog", encoder=str, decoder=str, format="text"
    )
    has_vector = await conn.fetchval(
        "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typname = 'vector' AND n.nspname = 'public'"
    )
    if has_vector:
        await conn.set_type_codec(
            "vector", schema="public", encoder=_encode_vector, decoder=orjson.loads, format="text"
        )


def dump_json(value: Any) -> str:
    """A JSON/JSONB parameter's text, as the codec sends it."""
    return orjson.dumps(value, default=json_default).decode()


def _encode_vector(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps([float(v) for v in value]).decode()


def json_default(value: Any) -> Any:
    """orjson's fallback for the Python types asyncpg decodes to."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(value)
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, asyncpg.Range):
        return {
            "lower": value.lower,
            "upper": value.upper,
            "lower_inc": value.lower_inc,
            "upper_inc": value.upper_inc,
            "empty": value.isempty,
        }
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _iso_duration(value: dt.timedelta) -> str:
    seconds = value.total_seconds()
    return f"P{value.days}DT{seconds - value.days * 86400:g}S"


def type_name(pgtype: Any) -> str:
    """A readable type name: ``int4``, ``text[]``, ``vector``."""
    name: str = pgtype.name
    if pgtype.kind == "array" and name.startswith("_"):
        return name[1:] + "[]"
    return name


def non_finite_fixer(column_types: Sequence[str]) -> Callable[[list[Any]], list[Any]] | None:
    """A row transform for float columns, whose NaN/Infinity JSON cannot carry."""
    positions = [i for i, t in enumerate(column_types) if t in FLOAT_TYPES]
    if not positions:
        return None

    def fix(row: list[Any]) -> list[Any]:
        for i in positions:
            value = row[i]
            if value is not None and not math.isfinite(value):
                row[i] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return row

    return fix


def to_param(value: Any, pgtype: Any, position: int) -> Any:
    """Turn one JSON parameter into what asyncpg expects for ``pgtype``."""
    if value is None:
        return None
    name = pgtype.name
    try:
        if pgtype.kind == "array" and name.startswith("_"):
            if not isinstance(value, list):
                raise ValueError("expected a JSON array")
            element = _ElementType(name[1:])
            return [to_param(v, element, position) for v in value]
        return _convert_scalar(value, name)
    except (ValueError, TypeError, decimal.InvalidOperation, ArithmeticError) as exc:
        raise invalid(
            f"parameter ${position} is not a valid {type_name(pgtype)}: {exc}",
            parameter=position,
        ) from None


class _ElementType:
    kind = "scalar"

    def __init__(self, name: str) -> None:
        self.name = name


def _convert_scalar(value: Any, name: str) -> Any:
    if name in ("json", "jsonb"):
        return value
    if name in INT_TYPES:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        return int(value)
    if name in FLOAT_TYPES:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value)
    if name == "numeric":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return decimal.Decimal(str(value))
    if name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "t", "f"):
            return value.lower() in ("true", "t")
        raise ValueError("expected true or false")
    if name in TEXT_TYPES:
        if isinstance(value, dict | list):
            raise ValueError("expected a string")
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if name == "bytea":
        return base64.b64decode(value, validate=True)
    if name == "uuid":
        return uuid.UUID(str(value))
    if name == "timestamptz":
        parsed = dt.datetime.fromisoformat(_text(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if name == "timestamp":
        return dt.datetime.fromisoformat(_text(value)).replace(tzinfo=None)
    if name == "date":
        return dt.date.fromisoformat(_text(value))
    if name == "time":
        return dt.time.fromisoformat(_text(value))
    if name == "timetz":
        parsed_time = dt.time.fromisoformat(_text(value))
        return parsed_time if parsed_time.tzinfo else parsed_time.replace(tzinfo=dt.UTC)
    if name in ("inet", "cidr"):
        return (
            ipaddress.ip_interface(_text(value))
            if name == "inet"
            else ipaddress.ip_network(_text(value))
        )
    if name == "interval":
        return _text(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value
