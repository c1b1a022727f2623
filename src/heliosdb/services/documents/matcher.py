"""MongoDB filters evaluated in Python, for documents already fetched.

The engine does the filtering of stored documents (filters.py); this evaluator serves
what happens after a fetch: ``$match`` after a ``$group`` or ``$unwind``, ``$pull``
conditions, ``arrayFilters`` and positional ``$`` in updates, ``$elemMatch`` projection.
"""

from __future__ import annotations

import re
from typing import Any

from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex

from heliosdb.services.documents.bsonform import decode, query_form
from heliosdb.services.documents.expression_scope import truthy
from heliosdb.services.documents.expressions import evaluate
from heliosdb.services.documents.filters import bad_value, has_position
from heliosdb.services.documents.values import (
    MISSING,
    candidates,
    compare,
    equal,
    type_rank,
)

_TYPE_NAMES = {
    "double": 3,
    "int": 3,
    "long": 3,
    "decimal": 3,
    "number": 3,
    "string": 4,
    "object": 5,
    "array": 6,
    "binData": 7,
    "objectId": 8,
    "bool": 9,
    "date": 10,
    "null": 2,
    "timestamp": 11,
    "regex": 12,
    "minKey": 1,
    "maxKey": 13,
    "javascript": 4,
}
_TYPE_CODES = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    13: "javascript",
    -1: "minKey",
    127: "maxKey",
}
# $type's number widths, each one BSON type (int64 decodes as Int64, an int subclass)
_WIDTHS: dict[str, Any] = {
    "double": lambda v: type(v) is float,
    "int": lambda v: type(v) is int,
    "long": lambda v: isinstance(v, Int64),
    "decimal": lambda v: isinstance(v, Decimal128),
    "javascript": lambda v: isinstance(v, Code),
}


def matches(document: Any, spec: dict[str, Any]) -> bool:
    for key, value in spec.items():
        if key == "$and":
            if not all(matches(document, item) for item in value):
                return False
        elif key == "$or":
            if not any(matches(document, item) for item in value):
                return False
        elif key == "$nor":
            if any(matches(document, item) for item in value):
                return False
        elif key in ("$comment",):
            continue
        elif key == "$expr":
            if not truthy(evaluate(value, document)):
                return False
        elif key.startswith("$"):
            raise bad_value(f"unknown top level operator: {key}")
        elif not field_matches(document, key, value):
            return False
    return True


def field_matches(document: Any, path: str, value: Any) -> bool:
    values = list(candidates(document, path))
    if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
        return operators_match(values, value, document, path)
    return _equals(values, value, document, path)


def value_matches(value: Any, spec: Any) -> bool:
    """One value (an array element) against an operator document or a plain value."""
    values = [value, *value] if isinstance(value, list) else [value]
    if isinstance(spec, dict) and spec and all(k.startswith("$") for k in spec):
        return operators_match(values, spec, {"": value}, "")
    if isinstance(spec, dict) and isinstance(value, dict):
        return matches(value, spec)
    return _equals(values, spec)


def _equals(values: list[Any], target: Any, document: Any = None, path: str = "") -> bool:
    if isinstance(target, (Regex, re.Pattern)):
        # a string it matches, or the same regex stored (pattern and flags)
        same = query_form(target)
        return any(
            _regex(v, target.pattern, target.flags)
            or (isinstance(v, (Regex, re.Pattern)) and query_form(v) == same)
            for v in values
        )
    if target is None:
        return not values or any(v is None for v in values) or _gap(document, path)
    return any(equal(v, target) for v in values)


def _gap(document: Any, path: str) -> bool:
    """An object on the path's way lacks the next field (filters.py ``gaps``): that
    branch reaches no value, which a null equality counts. Not for paths with positions."""
    parts = path.split(".")
    if len(parts) < 2 or has_position(path):
        return False
    return _lacks(document, parts)


def _lacks(current: Any, parts: list[str]) -> bool:
    if not parts:
        return False
    if isinstance(current, list):
        return any(isinstance(item, dict) and _lacks(item, parts) for item in current)
    if not isinstance(current, dict):
        return False
    if parts[0] not in current:
        return True
    return _lacks(current[parts[0]], parts[1:])


def _regex(value: Any, pattern: str, flags: Any) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(flags, str):
        bits = 0
        for letter, bit in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)):
            if letter in flags:
                bits |= bit
        flags = bits
    try:
        return re.search(pattern, value, flags) is not None
    except re.error as exc:
        raise bad_value(f"invalid regex: {exc}") from None


def operators_match(values: list[Any], spec: dict[str, Any], document: Any, path: str) -> bool:
    for op, operand in spec.items():
        if op == "$eq":
            ok = _equals(values, operand, document, path)
        elif op == "$ne":
            ok = not _equals(values, operand, document, path)
        elif op in ("$gte", "$lte") and operand is None:
            ok = _equals(values, None, document, path)  # as {$eq: null} (filters.py)
        elif op in ("$gt", "$gte", "$lt", "$lte") and isinstance(operand, (MinKey, MaxKey)):
            # every value lies above MinKey and below MaxKey, but the key itself
            upward = isinstance(operand, MinKey) == (op in ("$gt", "$gte"))
            itself = any(isinstance(v, type(operand)) for v in values)
            ok = (True if upward else itself) if op.endswith("e") else upward and not itself
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = any(_compare_op(op, v, operand) for v in values)
        elif op == "$in":
            ok = any(_equals(values, item, document, path) for item in operand)
        elif op == "$nin":
            ok = not any(_equals(values, item, document, path) for item in operand)
        elif op == "$exists":
            ok = bool(values) == bool(operand)
        elif op == "$type":
            kinds = operand if isinstance(operand, list) else [operand]
            ok = any(_has_type(values, k) for k in kinds)
        elif op == "$regex":
            ok = any(
                _regex(
                    v,
                    getattr(operand, "pattern", operand),
                    spec.get("$options", getattr(operand, "flags", "")),
                )
                for v in values
            )
        elif op == "$options":
            ok = True
        elif op == "$size":
            ok = any(isinstance(v, list) and len(v) == operand for v in values[:1])
        elif op == "$all":
            ok = bool(operand) and all(
                (
                    any(
                        isinstance(v, list) and any(matches_elem(e, item["$elemMatch"]) for e in v)
                        for v in values
                    )
                )
                if isinstance(item, dict) and "$elemMatch" in item
                else _equals(values, item, document, path)
                for item in operand
            )
        elif op == "$elemMatch":
            ok = any(
                isinstance(v, list) and any(matches_elem(e, operand) for e in v) for v in values[:1]
            )
        elif op == "$mod":
            divisor, remainder = int(operand[0]), int(operand[1])
            ok = any(
                type_rank(v) == 3 and not isinstance(v, bool) and int(v) % divisor == remainder
                for v in values
            )
        elif op == "$not":
            if isinstance(operand, (Regex, re.Pattern)):
                ok = not _equals(values, operand)
            else:
                ok = not operators_match(values, operand, document, path)
        elif op == "$comment":
            ok = True
        else:
            raise bad_value(f"unknown operator: {op}")
        if not ok:
            return False
    return True


def matches_elem(element: Any, spec: dict[str, Any]) -> bool:
    if spec and all(k.startswith("$") and k not in ("$and", "$or", "$nor") for k in spec):
        return operators_match([element], spec, element, "")
    # The document form skips scalars and reads an array element as a document keyed
    # "0", "1", ...: only a path with a position can meet one (as filters.py does).
    if isinstance(element, list):
        return any(has_position(key) for key in spec) and matches(element, spec)
    return isinstance(element, dict) and matches(element, spec)


def _compare_op(op: str, value: Any, operand: Any) -> bool:
    if value is MISSING:
        return False
    if type_rank(value) != type_rank(operand):
        return False  # type-bracketed, null too: {$gt: null} matches nothing
    c = compare(value, operand)
    return {"$gt": c > 0, "$gte": c >= 0, "$lt": c < 0, "$lte": c <= 0}[op]


def _has_type(values: list[Any], kind: Any) -> bool:
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        kind = _TYPE_CODES.get(int(kind), "")
    rank = _TYPE_NAMES.get(kind)
    if rank is None:
        raise bad_value(f"Unknown type name alias: {kind}")
    if kind == "array":
        return bool(values) and isinstance(values[0], list)
    width = _WIDTHS.get(kind)
    if width is not None:
        return any(width(v) for v in values)
    if kind == "string":
        return any(type_rank(v) == rank and not isinstance(v, Code) for v in values)
    return any(type_rank(v) == rank for v in values)


def recheck(raws: list[bytes], spec: dict[str, Any] | None, skip: int, limit: int) -> list[bytes]:
    """The stored BSON documents of ``raws`` (a superset a filter's SQL selected, in
    order: filters.py ``recheck``) that match ``spec`` exactly, past ``skip``, at most
    ``limit`` (0: all)."""
    found = [raw for raw in raws if matches(decode(raw), spec or {})]
    return found[skip : skip + limit] if limit else found[skip:]
