"""Column text (as logical decoding writes it) -> the JSON form REST gives the same type.

The capture session runs with ``DateStyle=ISO``, ``IntervalStyle=iso_8601`` and
``TimeZone=UTC``, so the engine's text output is already close to the forms in
engine/codecs.py; this module finishes the job per type (numbers, booleans, JSON,
base64 bytea, ISO 8601 timestamps with a ``T``, arrays). Unknown types keep their text.
"""

from __future__ import annotations

import datetime as dt
from binascii import b2a_base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

Converter = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    element: TypeInfo | None = None  # arrays
    delimiter: str = ","


# Each converter gives the text back where it cannot read it (a value the type's text
# form allows but JSON has no form for), so a column's converter is called without a
# try block of its own.


def _int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _float(text: str) -> Any:
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _bool(text: str) -> Any:
    return text == "t"


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except ValueError:
        return text


def _bytea(text: str) -> Any:
    if text.startswith("\\x"):
        try:
            return b2a_base64(bytes.fromhex(text[2:]), newline=False).decode()
        except ValueError:
            return text
    return text


def _timestamp(text: str) -> Any:
    try:
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text  # infinity, -infinity, BC dates


def _time(text: str) -> Any:
    try:
        return dt.time.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _text(text: str) -> Any:
    return text


_SCALARS: dict[str, Converter] = {
    "int2": _int,
    "int4": _int,
    "int8": _int,
    "oid": _int,
    "float4": _float,
    "float8": _float,
    "bool": _bool,
    "json": _json,
    # The engine's jsonb text is JSON already (normalized: no raw newline, no duplicate
    # key), so it goes into the event as it is, not parsed and encoded again: a
    # document column's old and new values were most of an update event's decoding.
    "jsonb": orjson.Fragment,
    "vector": _json,
    "bytea": _bytea,
    "timestamp": _timestamp,
    "timestamptz": _timestamp,
    "time": _time,
    "timetz": _time,
}

# Built-in types by OID, so the common case needs no catalog lookup.
BUILTIN_TYPES: dict[int, TypeInfo] = {
    oid: TypeInfo(name)
    for oid, name in {
        16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4",
        25: "text", 26: "oid", 114: "json", 700: "float4", 701: "float8", 1042: "bpchar",
        1043: "varchar", 1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz",
        1186: "interval", 1266: "timetz", 1700: "numeric", 2950: "uuid", 3802: "jsonb",
        869: "inet", 650: "cidr", 829: "macaddr",
    }.items()
}  # fmt: skip
for _oid, _element in {
    1000: 16, 1001: 17, 1005: 21, 1007: 23, 1016: 20, 1009: 25, 1015: 1043, 1014: 1042,
    1021: 700, 1022: 701, 1231: 1700, 199: 114, 3807: 3802, 2951: 2950, 1115: 1114,
    1185: 1184, 1182: 1082, 1183: 1083, 1187: 1186,
}.items():  # fmt: skip
    BUILTIN_TYPES[_oid] = TypeInfo("_" + BUILTIN_TYPES[_element].name, BUILTIN_TYPES[_element])


def convert(text: str | None, info: TypeInfo) -> Any:
    """The JSON form of one column value given as the engine's text."""
    if text is None:
        return None
    return converter(info)(text)


def converter(info: TypeInfo) -> Converter:
    """:func:`convert` for non-NULL values of one type, chosen once: the capture takes a
    table's converters when its relation arrives, not a type lookup per value."""
    if info.element is None:
        return _SCALARS.get(info.name, _text)
    element, delimiter = info.element, info.delimiter

    def array(text: str) -> Any:
        try:
            return _array(text, element, delimiter)
        except ValueError:
            return text

    return array


def _array(text: str, element: TypeInfo, delimiter: str) -> Any:
    if text.startswith("["):  # explicit bounds: [0:2]={...}
        text = text[text.index("=") + 1 :]
    value, end = _parse_array(text, 0, element, delimiter)
    if end != len(text):
        raise ValueError("trailing characters after an array")
    return value


def _parse_array(text: str, pos: int, element: TypeInfo, delimiter: str) -> tuple[list[Any], int]:
    if text[pos] != "{":
        raise ValueError("an array starts with {")
    pos += 1
    items: list[Any] = []
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            nested, pos = _parse_array(text, pos, element, delimiter)
            items.append(nested)
        elif char == '"':
            pos += 1
            chars: list[str] = []
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chars.append(text[pos])
                pos += 1
            pos += 1
            items.append(convert("".join(chars), element))
        else:
            start = pos
            while text[pos] not in (delimiter, "}"):
                pos += 1
            raw = text[start:pos].strip()
            items.append(None if raw == "NULL" else convert(raw, element))
        if text[pos] == delimiter:
            pos += 1
            continue
        if text[pos] == "}":
            return items, pos + 1
        raise ValueError("malformed array")
