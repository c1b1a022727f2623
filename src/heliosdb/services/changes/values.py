"""Column text (as logical decoding writes it) -> the JSON form REST gives the same type.

The capture session runs with ``DateStyle=ISO``, ``IntervalStyle=iso_8601`` and
``TimeZone=UTC``, so the engine's text output is already close to the forms in
engine/codecs.py; this module finishes the job per type (numbers, booleans, JSON,
base64 bytea, ISO 8601 timestamps with a ``T``, arrays). Unknown types keep their text.
"""

from __future__ import annotations

import base64
import datetime as dt
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


def _int(text: str) -> Any:
    return int(text)


def _float(text: str) -> Any:
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    return float(text)


def _bool(text: str) -> Any:
    return text == "t"


def _json(text: str) -> Any:
    return orjson.loads(text)


def _bytea(text: str) -> Any:
    if text.startswith("\\x"):
        return base64.b64encode(bytes.fromhex(text[2:])).decode()
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
    "jsonb": _json,
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
    if info.element is not None:
        try:
            return _array(text, info.element, info.delimiter)
        except ValueError:
            return text
    converter = _SCALARS.get(info.name)
    if converter is None:
        return text
    try:
        return converter(text)
    except ValueError:
        return text


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
