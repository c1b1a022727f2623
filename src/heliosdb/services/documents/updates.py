"""MongoDB update documents applied to a decoded document, in Python.

Updates work on the exact decoded BSON (so Int64 stays Int64 and field order holds);
the store re-encodes the result and derives a new query form.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.timestamp import Timestamp

from heliosdb.errors import invalid
from heliosdb.services.documents.filters import bad_value, field_conditions
from heliosdb.services.documents.matcher import matches, value_matches
from heliosdb.services.documents.values import MISSING, compare, equal, sort_key

OPERATORS = (
    "$set",
    "$unset",
    "$inc",
    "$mul",
    "$min",
    "$max",
    "$rename",
    "$setOnInsert",
    "$currentDate",
    "$push",
    "$addToSet",
    "$pop",
    "$pull",
    "$pullAll",
)
Part = str | int


def type_mismatch(message: str) -> Exception:
    return invalid(message, kind="type_mismatch")


def is_operator_update(update: Any) -> bool:
    return isinstance(update, dict) and bool(update) and next(iter(update)).startswith("$")


def check_replacement(document: dict[str, Any]) -> None:
    for key in document:
        if key.startswith("$"):
            raise invalid(
                f"The dollar ($) prefixed field '{key}' in '{key}' is not allowed in the context "
                "of an update's replacement document.",
                kind="dollar_prefixed",
            )


def apply_update(
    document: dict[str, Any],
    update: dict[str, Any],
    *,
    query: dict[str, Any] | None = None,
    array_filters: list[dict[str, Any]] | None = None,
    inserting: bool = False,
    in_place: bool = False,
) -> dict[str, Any]:
    """A new document with ``update``'s operators applied (``document`` is not changed,
    unless ``in_place``: then the caller's private copy is changed and returned)."""
    import copy

    out = document if in_place else copy.deepcopy(document)
    seen: list[str] = []
    for op, fields in update.items():
        if op not in OPERATORS:
            raise invalid(
                f"Unknown modifier: {op}. Expected a valid update modifier or "
                "pipeline-style update specified as an array",
                kind="failed_to_parse",
            )
        if not isinstance(fields, dict):
            raise invalid(
                f"Modifiers operate on fields but we found type {type(fields).__name__} instead.",
                kind="failed_to_parse",
            )
        if op == "$setOnInsert" and not inserting:
            continue
        for path, arg in fields.items():
            _check_conflict(seen, path)
            if op == "$rename":
                _check_conflict(seen, arg)
            if (
                (path == "_id" or path.startswith("_id."))
                and op != "$setOnInsert"
                and not (op == "$set" and equal(out.get("_id"), arg))
            ):
                raise invalid(
                    "Performing an update on the path '_id' would modify the immutable field '_id'",
                    kind="immutable_field",
                )
            for parts in _expand(out, path, query, array_filters or []):
                _apply_one(out, op, parts, arg, path)
    return out


def _check_conflict(seen: list[str], path: str) -> None:
    for other in seen:
        if path == other or path.startswith(other + ".") or other.startswith(path + "."):
            raise invalid(
                f"Updating the path '{path}' would create a conflict at '{other}'",
                kind="conflicting_update",
            )
    seen.append(path)


def _expand(
    doc: Any, path: str, query: dict[str, Any] | None, array_filters: list[dict[str, Any]]
) -> list[list[Part]]:
    results: list[list[Part]] = [[]]
    parts = path.split(".")
    for i, part in enumerate(parts):
        nxt: list[list[Part]] = []
        for prefix in results:
            if part.startswith("$"):
                container = _get(doc, prefix)
                if not isinstance(container, list):
                    raise bad_value(
                        "The positional operator did not find the match needed from the query."
                    )
                if part == "$":
                    index = _positional(doc, ".".join(str(p) for p in prefix), query or {})
                    nxt.append([*prefix, index])
                elif part == "$[]":
                    nxt.extend([*prefix, j] for j in range(len(container)))
                elif part.startswith("$[") and part.endswith("]"):
                    ident = part[2:-1]
                    spec = _array_filter(ident, array_filters)
                    nxt.extend(
                        [*prefix, j]
                        for j, element in enumerate(container)
                        if matches({ident: element}, spec)
                    )
                else:
                    raise invalid(
                        f"The dollar ($) prefixed field '{part}' in '{path}' is not "
                        "valid for storage.",
                        kind="dollar_prefixed",
                    )
            else:
                container = _get(doc, prefix)
                nxt.append(
                    [*prefix, int(part) if isinstance(container, list) and part.isdigit() else part]
                )
        results = nxt
        del i
    return results


def _array_filter(ident: str, array_filters: list[dict[str, Any]]) -> dict[str, Any]:
    for spec in array_filters:
        if any(key == ident or key.startswith(ident + ".") for key in spec):
            return spec
    raise bad_value(f"No array filter found for identifier '{ident}' in path")


def _positional(doc: Any, array_path: str, query: dict[str, Any]) -> int:
    array = _get(doc, list(array_path.split(".")) if array_path else [])
    relevant = {
        k[len(array_path) + 1 :] if k.startswith(array_path + ".") else "": v
        for k, v in field_conditions(query)
        if k == array_path or k.startswith(array_path + ".")
    }
    if not relevant:  # the query says nothing of the array: no element was matched
        raise bad_value("The positional operator did not find the match needed from the query.")
    for index, element in enumerate(array):
        if all(
            value_matches(element, v)
            if key == ""
            else (isinstance(element, dict) and matches(element, {key: v}))
            for key, v in relevant.items()
        ):
            return index
    raise bad_value("The positional operator did not find the match needed from the query.")


def _get(doc: Any, parts: Sequence[Part]) -> Any:
    current = doc
    for part in parts:
        if isinstance(current, dict) and isinstance(part, str):
            current = current.get(part, MISSING)
        elif isinstance(current, list) and isinstance(part, int):
            current = current[part] if part < len(current) else MISSING
        else:
            return MISSING
    return current


def _parent(doc: Any, parts: list[Part], create: bool) -> tuple[Any, Part] | None:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, dict) and isinstance(part, str):
            if part not in current:
                if not create:
                    return None
                current[part] = {}
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int):
            if part >= len(current):
                if not create:
                    return None
                current.extend([None] * (part + 1 - len(current)))
                current[part] = {}
            current = current[part]
        else:
            if not create:
                return None
            raise invalid(
                f"Cannot create field '{part}' in element {{{parts[0]}: ...}}",
                kind="path_not_viable",
            )
    if not isinstance(current, (dict, list)):
        if not create:
            return None
        raise invalid(
            f"Cannot create field '{parts[-1]}' in a non-document value", kind="path_not_viable"
        )
    return current, parts[-1]


def _set(doc: Any, parts: list[Part], value: Any) -> None:
    found = _parent(doc, parts, True)
    assert found is not None
    container, key = found
    if isinstance(container, list):
        if not isinstance(key, int):
            raise invalid(f"Cannot create field '{key}' in an array", kind="path_not_viable")
        if key >= len(container):
            container.extend([None] * (key + 1 - len(container)))
        container[key] = value
    else:
        container[str(key)] = value


def _unset(doc: Any, parts: list[Part]) -> None:
    found = _parent(doc, parts, False)
    if found is None:
        return
    container, key = found
    if isinstance(container, list):
        if isinstance(key, int) and key < len(container):
            container[key] = None
    else:
        container.pop(str(key), None)


def _number(value: Any, what: str, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
        raise type_mismatch(
            f"Cannot apply {what} to a value of non-numeric type. "
            f"{{_id: ...}} has the field '{path}' of non-numeric type "
            f"{type(value).__name__}"
        )
    return value


def _arith(a: Any, b: Any, multiply: bool) -> Any:
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        x = a.to_decimal() if isinstance(a, Decimal128) else Decimal(str(a))
        y = b.to_decimal() if isinstance(b, Decimal128) else Decimal(str(b))
        return Decimal128(x * y if multiply else x + y)
    result = a * b if multiply else a + b
    if isinstance(a, float) or isinstance(b, float):
        return float(result)
    wide = isinstance(a, Int64) or isinstance(b, Int64) or not (-(2**31) <= result < 2**31)
    if not -(2**63) <= result < 2**63:
        raise invalid("integer overflow", kind="bad_value")
    return Int64(result) if wide else int(result)


def _apply_one(doc: Any, op: str, parts: list[Part], arg: Any, path: str) -> None:
    current = _get(doc, parts)
    if op in ("$set", "$setOnInsert"):
        _set(doc, parts, arg)
    elif op == "$unset":
        _unset(doc, parts)
    elif op in ("$inc", "$mul"):
        _number(arg, op[1:], path)
        if current is MISSING:
            _set(doc, parts, arg if op == "$inc" else _arith(arg, 0, True))
        else:
            _set(doc, parts, _arith(_number(current, op[1:], path), arg, op == "$mul"))
    elif op in ("$min", "$max"):
        if current is MISSING or (
            (compare(arg, current) < 0) == (op == "$min") and compare(arg, current)
        ):
            _set(doc, parts, arg)
    elif op == "$rename":
        if not isinstance(arg, str):
            raise bad_value("The 'to' field for $rename must be a string")
        if current is not MISSING:
            _unset(doc, parts)
            _set(doc, list[Part](arg.split(".")), current)
    elif op == "$currentDate":
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        kind = arg.get("$type") if isinstance(arg, dict) else "date"
        _set(doc, parts, Timestamp(int(now.timestamp()), 1) if kind == "timestamp" else now)
    elif op in ("$push", "$addToSet"):
        _push(doc, parts, current, arg, op, path)
    elif op == "$pop":
        if current is MISSING:
            return
        if not isinstance(current, list):
            raise type_mismatch(f"Path '{path}' contains an element of non-array type")
        if current:
            current.pop(0 if arg == -1 else -1)
    elif op in ("$pull", "$pullAll"):
        if current is MISSING:
            return
        if not isinstance(current, list):
            raise bad_value("Cannot apply $pull to a non-array value")
        if op == "$pullAll":
            if not isinstance(arg, list):
                raise bad_value("$pullAll requires an array argument")
            kept = [e for e in current if not any(equal(e, x) for x in arg)]
        else:
            kept = [e for e in current if not _pull_matches(e, arg)]
        _set(doc, parts, kept)


def _pull_matches(element: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and condition:
        if all(k.startswith("$") for k in condition):
            return value_matches(element, condition)
        return isinstance(element, dict) and matches(element, condition)
    return equal(element, condition)


def _push(doc: Any, parts: list[Part], current: Any, arg: Any, op: str, path: str) -> None:
    if current is MISSING:
        current = []
    elif not isinstance(current, list):
        raise bad_value(
            f"The field '{path}' must be an array but is of type "
            f"{type(current).__name__} in document {{_id: ...}}"
        )
    current = list(current)
    if isinstance(arg, dict) and "$each" in arg:
        items = arg["$each"]
        if not isinstance(items, list):
            raise bad_value("The argument to $each in $push must be an array")
        modifiers = arg
    else:
        items, modifiers = [arg], {}
    if op == "$addToSet":
        for item in items:
            if not any(equal(item, e) for e in current):
                current.append(item)
        _set(doc, parts, current)
        return
    position = modifiers.get("$position")
    if position is None:
        current.extend(items)
    else:
        index = int(position) if position >= 0 else max(len(current) + int(position), 0)
        current[index:index] = items
    if "$sort" in modifiers:
        spec = modifiers["$sort"]
        if isinstance(spec, dict):
            for key, direction in reversed(list(spec.items())):
                current.sort(
                    key=lambda e, k=key: sort_key(
                        _get(e, k.split(".")) if isinstance(e, dict) else MISSING
                    ),
                    reverse=direction < 0,
                )
        else:
            current.sort(key=sort_key, reverse=spec < 0)
    if "$slice" in modifiers:
        n = int(modifiers["$slice"])
        current = current[:n] if n >= 0 else current[n:]
    _set(doc, parts, current)


def replacement_ok(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))
