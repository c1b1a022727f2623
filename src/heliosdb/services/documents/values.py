"""BSON values in MongoDB's comparison order, and dotted-path access to documents."""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def type_rank(value: Any) -> int:
    if isinstance(value, MinKey):
        return 1
    if value is None or value is MISSING:
        return 2
    if isinstance(value, bool):
        return 9
    if isinstance(value, (int, float, Decimal128, Decimal)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, dict):
        return 5
    if isinstance(value, (list, tuple)):
        return 6
    if isinstance(value, (bytes, Binary, uuid.UUID)):
        return 7
    if isinstance(value, ObjectId):
        return 8
    if isinstance(value, (dt.datetime, DatetimeMS)):
        return 10
    if isinstance(value, Timestamp):
        return 11
    if isinstance(value, (Regex, re.Pattern)):
        return 12
    if isinstance(value, MaxKey):
        return 13
    return 14


def as_number(value: Any) -> float | int | Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return value  # type: ignore[no-any-return]


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 in MongoDB's order (numbers of every width compare by value)."""
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 3:
        x, y = as_number(a), as_number(b)
        if isinstance(x, float) and math.isnan(x):
            return 0 if isinstance(y, float) and math.isnan(y) else -1
        if isinstance(y, float) and math.isnan(y):
            return 1
        if isinstance(x, Decimal) or isinstance(y, Decimal):
            # a double's exact value: Decimal128("0.1") is below the double 0.1
            x, y = Decimal(x), Decimal(y)
        return (x > y) - (x < y)  # type: ignore[operator]
    if ra == 5:
        # MongoDB's order of documents: field by field, the values' types, then the
        # names, then the values; a document that is a prefix of the other first
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=False):
            ta, tb = type_rank(va), type_rank(vb)
            c = (ta > tb) - (ta < tb) or (ka > kb) - (ka < kb) or compare(va, vb)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 6:
        for va, vb in zip(a, b, strict=False):
            c = compare(va, vb)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 7:
        ba, bb = _binary_key(a), _binary_key(b)
        return (ba > bb) - (ba < bb)
    if ra == 8:
        return (a.binary > b.binary) - (a.binary < b.binary)  # type: ignore[no-any-return]
    if ra == 10:
        ma, mb = _millis(a), _millis(b)
        return (ma > mb) - (ma < mb)
    if ra == 11:
        return (a > b) - (a < b)  # type: ignore[no-any-return]
    if ra == 12:
        return (a.pattern > b.pattern) - (a.pattern < b.pattern)  # type: ignore[no-any-return]
    if ra in (1, 2, 13):
        return 0
    try:
        return (a > b) - (a < b)  # type: ignore[no-any-return]
    except TypeError:
        return 0


def _binary_key(value: Any) -> tuple[int, int, bytes]:
    data = value.bytes if isinstance(value, uuid.UUID) else bytes(value)
    subtype = (
        value.subtype if isinstance(value, Binary) else (4 if isinstance(value, uuid.UUID) else 0)
    )
    return len(data), subtype, data


def _millis(value: Any) -> int:
    from heliosdb.services.documents.bsonform import date_millis

    return date_millis(value)


def equal(a: Any, b: Any) -> bool:
    return type_rank(a) == type_rank(b) and compare(a, b) == 0


sort_key = functools.cmp_to_key(compare)


def hashable(value: Any) -> Any:
    """A dict key for a grouping value (a $group key, a $setWindowFields partition):
    documents and arrays by their parts, int and double numbers alike."""
    if isinstance(value, dict):
        return ("d", tuple((k, hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("l", tuple(hashable(v) for v in value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("n", float(value))
    return (type(value).__name__, repr(value))


def path_sort_key(document: Any, path: str, descending: bool) -> tuple[int, Any]:
    """The key a sort on ``path`` orders ``document`` by, as MongoDB's sort key generator
    makes it (the keys a multikey index would hold for the path): an array at the end
    of the path gives its elements, an array on the way each element's value there (an
    element that is no document, or lacks the rest of the path, gives null), and the
    sort takes the smallest of them (the largest when ``descending``). An empty array
    at the end of the path is undefined, below null and above MinKey; a missing value
    is null. Plain values (no array on the path) are themselves."""
    keys = list(_sort_keys(document, path.split(".")))
    best = (min if not descending else max)(keys, key=_bucketed)
    return _bucketed(best)


_UNDEFINED: Any = type("Undefined", (), {"__repr__": lambda self: "UNDEFINED"})()


def _bucketed(value: Any) -> tuple[int, Any]:
    # MinKey, then undefined (an empty array's key), then every other value
    if value is _UNDEFINED:
        return 1, sort_key(None)
    return (0 if isinstance(value, MinKey) else 2), sort_key(value)


def _sort_keys(current: Any, parts: list[str]) -> Iterator[Any]:
    if not isinstance(current, dict) or parts[0] not in current:
        yield None
        return
    value, rest = current[parts[0]], parts[1:]
    while rest and isinstance(value, list) and rest[0].isdigit():
        # a position into the array, not a walk over its elements
        index = int(rest[0])
        value, rest = (value[index] if index < len(value) else None), rest[1:]
    if not rest:
        if isinstance(value, list):
            yield from value or [_UNDEFINED]
        else:
            yield value
    elif isinstance(value, list):
        if not value:
            yield None
        for item in value:
            yield from _sort_keys(item, rest)
    else:
        yield from _sort_keys(value, rest)


def get_path(document: Any, path: str) -> Any:
    """The value at a dotted path without array traversal, or MISSING."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part, MISSING)
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            current = current[index] if index < len(current) else MISSING
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def candidates(document: Any, path: str) -> Iterator[Any]:
    """Every value a path reaches with MongoDB's array semantics (arrays and their items)."""
    yield from _walk(document, path.split(".") if path else [])


def _walk(current: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        yield current
        if isinstance(current, list):
            yield from current
        return
    head, rest = parts[0], parts[1:]
    if isinstance(current, dict):
        if head in current:
            yield from _walk(current[head], rest)
    elif isinstance(current, list):
        if head.isdigit() and int(head) < len(current):
            yield from _walk(current[int(head)], rest)
        for item in current:
            if isinstance(item, dict):
                yield from _walk(item, parts)
