"""Redis's number rules: strict base-10 int64, floats without underscores, shortest float text."""

from __future__ import annotations

import math
import re

from heliosdb.services.keyvalue.faults import Reason, fault

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT = re.compile(rb"-?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(rb"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity)\Z", re.I)


def int_or_none(raw: bytes) -> int | None:
    if len(raw) > 20 or not _INT.match(raw):
        return None
    value = int(raw)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_int(raw: bytes, reason: Reason = Reason.NOT_INTEGER) -> int:
    value = int_or_none(raw)
    if value is None:
        raise fault(reason)
    return value


def float_or_none(raw: bytes) -> float | None:
    if len(raw) > 400 or not _FLOAT.match(raw):
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def parse_float(raw: bytes, reason: Reason = Reason.NOT_FLOAT) -> float:
    value = float_or_none(raw)
    if value is None:
        raise fault(reason)
    return value


def format_float(value: float) -> bytes:
    """The shortest text that reads back exactly: 1.5, 3, inf, -inf, 1e+30."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if value == int(value) and abs(value) < 1e17:
        return str(int(value)).encode()
    return repr(value).encode()


def add_int(current: int, delta: int) -> int:
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise fault(Reason.OVERFLOW)
    return result


def add_float(current: float, delta: float) -> float:
    result = current + delta
    if math.isnan(result) or math.isinf(result):
        raise fault(Reason.NAN_OR_INFINITY)
    return result
