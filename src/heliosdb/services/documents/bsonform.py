"""Documents as the engine holds them: exact BSON bytes beside a JSONB query form.

A collection row is ``(_id jsonb, bson bytea, doc jsonb)``. ``bson`` is the source of
truth: it round-trips every BSON type, numeric width and field order exactly. ``doc``
is the query form, derived from it on every write, which filters, sorts and indexes
read and which SQL users see. It is relaxed Extended JSON:

    double, int32, int64, Decimal128   JSON number (a double past 2**53 as its integer;
                                       NaN, infinities of both: {"$numberDouble": "NaN"};
                                       a decimal no double equals: decimal_form)
    string                             itself; NUL and U+0001 escaped (query_string)
    bool, null                         themselves
    document, array                    object, array (JSONB sorts object keys)
    ObjectId                           {"$oid": "<24 hex>"}
    Date                               {"$date": <ms since epoch>}
    Binary                             {"$binary": {"base64": "...", "subType": "<hex>"}}
    Regex                              {"$regex": "<pattern>", "$options": "<flags>"}
    Timestamp                          {"$timestamp": {"t": <s>, "i": <n>}}
    MinKey, MaxKey                     {"$minKey": 1}, {"$maxKey": 1}
    Code                               {"$code": "..."}

JSONB text cannot hold NUL, so a string with NUL or U+0001 has them escaped by the
escape character U+0001: NUL as U+0001 U+0001, U+0001 as U+0001 U+0002
(``query_string``). That is injective (a NUL string never equals another string's
form, in a filter, the primary key or a unique index) and keeps code point order, which
is MongoDB's string order and the engine's (the C.UTF-8 collation, jsonpath): the
escape character is the smallest one left, and both of its sequences sort where the
character they stand for does. Every other string is its own form.

The ``_id`` column holds the query form of the document's ``_id``; a null ``_id`` is
JSON ``null`` there (never SQL NULL), bound through ``id_bind``. An ``_id`` holding an
embedded document of two or more fields is ``{"$ordered": <its ordered form>}`` there
instead (``ordered_form``), since MongoDB tells ``{a: 1, b: 2}`` and ``{b: 2, a: 1}``
apart. (Not a bare array, which no other ``_id`` is: asyncpg would bind an array in a
``jsonb[]`` parameter as a dimension of it.) A Decimal128 in an ``_id`` is its nearest
double there, not ``decimal_form``: the store finds rows again by the ``_id`` values it
read, and JSON text read back is a float.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import re
import uuid
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import bson
import orjson
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

# Decoding keeps every type apart: Int64 stays Int64, Binary subtypes stay Binary,
# dates outside Python's range stay DatetimeMS, regexes stay bson Regex.
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EXACT = 2.0**53  # doubles below it in magnitude are JSON numbers as they are
# the Python types of a number's query form (bool aside): decimal_form's JSON text too
NUMBER_FORMS = (int, float, orjson.Fragment)
_RE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def decode(data: bytes) -> dict[str, Any]:
    return bson.decode(data, CODEC_OPTIONS)


def encode(document: dict[str, Any]) -> bytes:
    return bson.encode(document, codec_options=CODEC_OPTIONS)


def date_millis(value: dt.datetime | DatetimeMS) -> int:
    if isinstance(value, DatetimeMS):
        return int(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class _JsonNull(enum.Enum):
    """JSON ``null`` as a bind parameter: asyncpg sends Python None as SQL NULL without
    calling the jsonb encoder, while orjson writes an enum member as its value."""

    NULL = None


JSON_NULL = _JsonNull.NULL


def id_bind(form: Any) -> Any:
    """An ``_id``'s query form (or a value read from the ``_id`` column) as a bind
    parameter for that column: a null ``_id`` is the JSON ``null`` stored there."""
    return JSON_NULL if form is None else form


def id_form(value: Any) -> Any:
    """The ``_id`` column's bind parameter for a BSON ``_id`` value."""
    kind = type(value)
    if kind is dict or kind is Decimal128:
        form = {"$ordered": ordered_form(value)} if order_matters(value) else query_form(value)
        # as it reads back: a decimal_form number as its nearest double, since the
        # column's values come back as Python values (a float) to find their rows by
        return orjson.loads(orjson.dumps(form))
    return id_bind(query_form(value))


def order_matters(value: Any) -> bool:
    """Whether ``value`` holds an embedded document of two or more fields, whose order
    MongoDB's equality compares and the query form does not keep."""
    if isinstance(value, dict):
        return len(value) > 1 or any(order_matters(item) for item in value.values())
    if isinstance(value, list):
        return any(order_matters(item) for item in value)
    return False


def ordered_form(value: Any) -> Any:
    """A form that keeps field order, one to one with BSON values (MongoDB's equality):
    a document as the array of its keys and values in turn, an array as ``{"array":
    [...]}`` (no typed value's form has that key), any other value its query form."""
    if isinstance(value, dict):
        out: list[Any] = []
        for key, item in value.items():
            out += (key, ordered_form(item))
        return out
    if isinstance(value, list):
        return {"array": [ordered_form(item) for item in value]}
    return query_form(value)


# The start of a statement of the node's that writes no Int64 or Decimal128: see
# catalog.py, where the ``wide`` flag it keeps off is.
NARROW = "/*helios:narrow*/ "

# Whether query_form met a value BSON holds as an Int64 or a Decimal128 since
# wide_form cleared it (catalog.NARROW): a flag rather than a second walk of the
# document. Only wide_form reads it, around a query_form call with no await inside.
_met_wide = [False]


def wide_form(document: Any) -> tuple[Any, bool]:
    """``document``'s query form, and whether it holds an Int64 or a Decimal128 element
    (an ``int`` past int32's range is encoded as an Int64)."""
    _met_wide[0] = False
    form = query_form(document)
    return form, _met_wide[0]


def query_form(value: Any) -> Any:
    """The JSONB (relaxed Extended JSON) form of one BSON value."""
    # The plain types first, by exact type (every stored document passes through here).
    kind = type(value)
    if kind is str:
        return value if "\x00" not in value and "\x01" not in value else _escape(value)
    if kind is int:
        if not -2147483648 <= value <= 2147483647:
            _met_wide[0] = True
        return value
    if kind is bool or value is None:
        return value
    if kind is float:
        return value if -_EXACT < value < _EXACT else _query_form_other(value)
    if kind is dict:
        return {key: query_form(item) for key, item in value.items()}
    if kind is list:
        return [query_form(item) for item in value]
    return _query_form_other(value)


def _query_form_other(value: Any) -> Any:
    if isinstance(value, str):
        return query_string(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        _met_wide[0] = _met_wide[0] or isinstance(value, Int64) or not -(2**31) <= value < 2**31
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _non_finite(value)
        # past 2**53 every double is an integer, and its shortest text may not be its
        # value (2**60 + 256 is "1.152921504606847e+18"): the integer itself compares
        # right with int64s (JSON text past 2**64 is a float again, exact enough there)
        return int(value) if -(2**63) <= value < 2**63 and abs(value) >= _EXACT else value
    if isinstance(value, dict):
        return {key: query_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [query_form(item) for item in value]
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    if isinstance(value, (dt.datetime, DatetimeMS)):
        return {"$date": date_millis(value)}
    if isinstance(value, Decimal128):
        _met_wide[0] = True
        number = value.to_decimal()
        if not number.is_finite():
            return _non_finite(number)  # the same as a double's: equal in MongoDB
        if number == number.to_integral_value() and abs(number) < 2**63:
            return int(number)
        return decimal_form(number)
    if isinstance(value, (bytes, Binary)):
        subtype = value.subtype if isinstance(value, Binary) else 0
        return {
            "$binary": {
                "base64": base64.b64encode(bytes(value)).decode(),
                "subType": f"{subtype:02x}",
            }
        }
    if isinstance(value, uuid.UUID):
        return {"$binary": {"base64": base64.b64encode(value.bytes).decode(), "subType": "04"}}
    if isinstance(value, Regex):
        return {"$regex": value.pattern, "$options": _flags_text(value.flags)}
    if isinstance(value, re.Pattern):
        return {"$regex": value.pattern, "$options": _flags_text(value.flags)}
    if isinstance(value, Timestamp):
        return {"$timestamp": {"t": value.time, "i": value.inc}}
    if isinstance(value, MinKey):
        return {"$minKey": 1}
    if isinstance(value, MaxKey):
        return {"$maxKey": 1}
    if isinstance(value, Code):
        return {"$code": query_string(str(value))}
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def decimal_form(number: Decimal) -> Any:
    """A finite Decimal128's query form where it is not an integer below 2**63: its
    double where that is its value, else a JSON number (``orjson.Fragment``) strictly
    between the forms of the two doubles around it, placed between them as the decimal
    lies between their values. So it compares with every double's form (the shortest
    text, which is not the double's value) as MongoDB compares the values
    (``Decimal128("0.1")`` is below the double 0.1, not equal), and with other
    decimals' by value (80 digits tell apart Decimal128's 34 and the 53 bits)."""
    near = float(number)
    if Decimal(near) == number:
        return near
    if Decimal(near) < number:
        low, high = near, math.nextafter(near, math.inf)
    else:
        low, high = math.nextafter(near, -math.inf), near
    if not math.isfinite(low - high):
        # beyond the largest double: JSON readers (orjson) refuse such a number text
        return _non_finite(number)
    low_form, high_form = (Fraction(repr(query_form(x))) for x in (low, high))
    share = (Fraction(number) - Fraction(low)) / (Fraction(high) - Fraction(low))
    place = low_form + (high_form - low_form) * share
    with localcontext() as context:
        context.prec = 80
        text = str(Decimal(place.numerator) / Decimal(place.denominator))
    return orjson.Fragment(text)


def _non_finite(value: float | Decimal) -> dict[str, str]:
    if value.is_nan() if isinstance(value, Decimal) else math.isnan(value):
        return {"$numberDouble": "NaN"}  # a Decimal's too, signalling or not
    return {"$numberDouble": "Infinity" if value > 0 else "-Infinity"}


def query_string(value: str) -> str:
    """A string's query form (see the module docstring): itself unless it holds NUL or
    U+0001, which JSONB text cannot hold or which escapes them."""
    return value if "\x00" not in value and "\x01" not in value else _escape(value)


def _escape(value: str) -> str:
    return str.replace(value, "\x01", "\x01\x02").replace("\x00", "\x01\x01")


def from_query_string(form: str) -> str:
    """The string whose query form is ``form`` (query_string's inverse)."""
    if "\x01" not in form:
        return form
    # Each U+0001 starts a pair, so scanning left to right meets the pairs in step.
    return form.replace("\x01\x01", "\x00").replace("\x01\x02", "\x01")


def _flags_text(flags: int | str) -> str:
    if isinstance(flags, str):
        return "".join(sorted(flags))
    return "".join(letter for flag, letter in _RE_FLAGS if flags & flag)


def from_query_form(value: Any) -> Any:
    """Back from the query form (for values computed in SQL, such as $group results)."""
    if isinstance(value, list):
        return [from_query_form(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$oid" and isinstance(inner, str):
                return ObjectId(inner)
            if key == "$date" and isinstance(inner, (int, float)):
                millis = int(inner)
                try:
                    return _EPOCH + dt.timedelta(milliseconds=millis)
                except OverflowError:
                    return DatetimeMS(millis)
            if key == "$numberDouble":
                return float(inner)
            if key == "$timestamp" and isinstance(inner, dict):
                return Timestamp(inner["t"], inner["i"])
            if key == "$minKey":
                return MinKey()
            if key == "$maxKey":
                return MaxKey()
        if set(value) == {"$binary"} and isinstance(value["$binary"], dict):
            inner = value["$binary"]
            return Binary(base64.b64decode(inner["base64"]), int(inner["subType"], 16))
        return {key: from_query_form(item) for key, item in value.items()}
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**31:
        return value
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return _int_value(int(value))
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_value(value)
    if isinstance(value, str):
        return from_query_string(value)
    return value


def _int_value(value: int) -> int | Int64:
    return value if -(2**31) <= value < 2**31 else Int64(value)
