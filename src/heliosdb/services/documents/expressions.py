"""Aggregation expressions (``"$field"``, ``{$add: [...]}``, ...) evaluated in Python."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId

from heliosdb.errors import invalid
from heliosdb.services.documents.values import MISSING, compare, equal, type_rank


def invalid_operator(name: str) -> Exception:
    return invalid(f"Unrecognized expression '{name}'", kind="invalid_pipeline_operator")


def field_values(doc: Any, path: str) -> Any:
    """A field path in an expression: arrays of documents map to arrays of values."""
    current = doc
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part, MISSING)
        elif isinstance(current, list):
            current = [
                v
                for v in (e.get(part, MISSING) if isinstance(e, dict) else MISSING for e in current)
                if v is not MISSING
            ]
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def evaluate(expr: Any, doc: Any, variables: dict[str, Any] | None = None) -> Any:
    if isinstance(expr, str) and expr.startswith("$"):
        if expr.startswith("$$"):
            name, _, rest = expr[2:].partition(".")
            scope = {"ROOT": doc, "CURRENT": doc, **(variables or {})}
            if name == "REMOVE":
                return MISSING
            if name not in scope:
                raise invalid(f"Use of undefined variable: {name}", kind="failed_to_parse")
            base = scope[name]
            return field_values(base, rest) if rest else base
        return field_values(doc, expr[1:])
    if isinstance(expr, list):
        return [_present(evaluate(e, doc, variables)) for e in expr]
    if isinstance(expr, dict):
        if len(expr) == 1 and next(iter(expr)).startswith("$"):
            ((name, arg),) = expr.items()
            return _operator(name, arg, doc, variables)
        out = {}
        for key, value in expr.items():
            result = evaluate(value, doc, variables)
            if result is not MISSING:
                out[key] = result
        return out
    return expr


def _present(value: Any) -> Any:
    return None if value is MISSING else value


def _args(arg: Any, doc: Any, variables: dict[str, Any] | None) -> list[Any]:
    items = arg if isinstance(arg, list) else [arg]
    return [evaluate(item, doc, variables) for item in items]


def _num(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return value


def _is_number(value: Any) -> bool:
    return type_rank(value) == 3


def _result(value: Any, *inputs: Any) -> Any:
    if any(isinstance(i, Decimal128) for i in inputs) or isinstance(value, Decimal):
        return Decimal128(Decimal(value))
    if any(isinstance(i, float) for i in inputs) or isinstance(value, float):
        return float(value)
    if any(isinstance(i, Int64) for i in inputs) or not -(2**31) <= value < 2**31:
        return Int64(value)
    return int(value)


def _arith(name: str, values: list[Any]) -> Any:
    if any(v is None or v is MISSING for v in values):
        return None
    if name == "$add" and any(isinstance(v, dt.datetime) for v in values):
        base = next(v for v in values if isinstance(v, dt.datetime))
        extra = sum(_num(v) for v in values if v is not base)
        return base + dt.timedelta(milliseconds=float(extra))
    if not all(_is_number(v) for v in values):
        raise invalid(f"{name} only supports numeric types", kind="type_mismatch")
    nums = [_num(v) for v in values]
    if any(isinstance(n, Decimal) for n in nums):
        nums = [Decimal(str(n)) for n in nums]
    if name == "$add":
        return _result(sum(nums), *values)
    if name == "$multiply":
        out = nums[0] if nums else 1
        for n in nums[1:]:
            out *= n
        return _result(out, *values)
    a, b = nums[0], nums[1]
    if name == "$subtract":
        return _result(a - b, *values)
    if name == "$divide":
        if b == 0:
            raise invalid("can't $divide by zero", kind="bad_value")
        return float(a / b) if not isinstance(a, Decimal) else Decimal128(a / b)
    if name == "$mod":
        if b == 0:
            raise invalid("can't $mod by 0", kind="bad_value")
        return _result(
            math.fmod(a, b)
            if isinstance(a, float) or isinstance(b, float)
            else int(math.fmod(a, b)),
            *values,
        )
    raise invalid_operator(name)


_CMP = {
    "$eq": lambda c: c == 0,
    "$ne": lambda c: c != 0,
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
}


def truthy(value: Any) -> bool:
    if value is None or value is MISSING or value is False:
        return False
    return not (_is_number(value) and _num(value) == 0)


def _operator(name: str, arg: Any, doc: Any, variables: dict[str, Any] | None) -> Any:
    if name == "$literal":
        return arg
    if name in ("$add", "$subtract", "$multiply", "$divide", "$mod"):
        return _arith(name, _args(arg, doc, variables))
    if name in _CMP:
        a, b = (_present(v) for v in _args(arg, doc, variables))
        return _CMP[name](compare(a, b))
    if name == "$cmp":
        a, b = (_present(v) for v in _args(arg, doc, variables))
        return compare(a, b)
    if name == "$and":
        return all(truthy(v) for v in _args(arg, doc, variables))
    if name == "$or":
        return any(truthy(v) for v in _args(arg, doc, variables))
    if name == "$not":
        return not truthy(_args(arg, doc, variables)[0])
    if name == "$cond":
        if isinstance(arg, dict):
            cond, then, other = arg.get("if"), arg.get("then"), arg.get("else")
        else:
            cond, then, other = arg
        return evaluate(then if truthy(evaluate(cond, doc, variables)) else other, doc, variables)
    if name == "$ifNull":
        values = _args(arg, doc, variables)
        for v in values[:-1]:
            if v is not None and v is not MISSING:
                return v
        return values[-1]
    if name == "$concat":
        values = _args(arg, doc, variables)
        if any(v is None or v is MISSING for v in values):
            return None
        return "".join(values)
    if name in ("$toUpper", "$toLower"):
        value = _args(arg, doc, variables)[0]
        text = "" if value in (None, MISSING) else str(value)
        return text.upper() if name == "$toUpper" else text.lower()
    if name in ("$substr", "$substrCP", "$substrBytes"):
        text, start, length = _args(arg, doc, variables)
        text = "" if text in (None, MISSING) else str(text)
        return text[int(start) : int(start) + int(length)] if length >= 0 else text[int(start) :]
    if name == "$strLenCP":
        return len(_args(arg, doc, variables)[0])
    if name == "$split":
        text, sep = _args(arg, doc, variables)
        return None if text in (None, MISSING) else text.split(sep)
    if name == "$toString":
        value = _args(arg, doc, variables)[0]
        if value in (None, MISSING):
            return None
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        return str(value)
    if name in ("$toInt", "$toLong", "$toDouble", "$toDecimal"):
        value = _args(arg, doc, variables)[0]
        if value in (None, MISSING):
            return None
        number = float(_num(value)) if not isinstance(value, str) else float(value)
        if name == "$toDouble":
            return number
        if name == "$toDecimal":
            return Decimal128(str(number))
        return int(number) if name == "$toInt" else Int64(int(number))
    if name == "$toObjectId":
        value = _args(arg, doc, variables)[0]
        return None if value in (None, MISSING) else ObjectId(value)
    if name == "$size":
        value = _args(arg, doc, variables)[0]
        if not isinstance(value, list):
            raise invalid("The argument to $size must be an array", kind="type_mismatch")
        return len(value)
    if name == "$arrayElemAt":
        array, index = _args(arg, doc, variables)
        if not isinstance(array, list):
            return None
        index = int(index)
        return array[index] if -len(array) <= index < len(array) else MISSING
    if name in ("$first", "$last") and not isinstance(arg, dict):
        array = _args(arg, doc, variables)[0]
        if not isinstance(array, list) or not array:
            return MISSING
        return array[0] if name == "$first" else array[-1]
    if name == "$in":
        value, array = _args(arg, doc, variables)
        return any(equal(value, e) for e in (array or []))
    if name == "$concatArrays":
        out: list[Any] = []
        for v in _args(arg, doc, variables):
            if v in (None, MISSING):
                return None
            out.extend(v)
        return out
    if name in ("$sum", "$avg", "$min", "$max"):
        values = _args(arg, doc, variables)
        if len(values) == 1 and isinstance(values[0], list):
            values = values[0]
        return accumulate_values(name, values)
    if name in ("$abs", "$floor", "$ceil", "$sqrt"):
        value = _args(arg, doc, variables)[0]
        if value in (None, MISSING):
            return None
        fn: Any = {"$abs": abs, "$floor": math.floor, "$ceil": math.ceil, "$sqrt": math.sqrt}[name]
        result = fn(_num(value))
        return float(result) if isinstance(value, float) or name == "$sqrt" else result
    if name == "$round":
        values = _args(arg, doc, variables)
        places = int(values[1]) if len(values) > 1 else 0
        value = values[0]
        return None if value in (None, MISSING) else round(_num(value), places)
    if name == "$type":
        value = _args(arg, doc, variables)[0]
        return _type_name(value)
    if name in ("$year", "$month", "$dayOfMonth", "$hour", "$minute", "$second"):
        value = _args(arg, doc, variables)[0]
        if not isinstance(value, dt.datetime):
            return None
        attr = {
            "$year": "year",
            "$month": "month",
            "$dayOfMonth": "day",
            "$hour": "hour",
            "$minute": "minute",
            "$second": "second",
        }[name]
        return getattr(value, attr)
    if name == "$objectToArray":
        value = _args(arg, doc, variables)[0]
        return [{"k": k, "v": v} for k, v in value.items()] if isinstance(value, dict) else None
    if name == "$arrayToObject":
        value = _args(arg, doc, variables)[0]
        out_doc: dict[str, Any] = {}
        for item in value or []:
            if isinstance(item, dict):
                out_doc[item["k"]] = item["v"]
            else:
                out_doc[item[0]] = item[1]
        return out_doc
    if name == "$mergeObjects":
        merged: dict[str, Any] = {}
        for v in _args(arg, doc, variables):
            if isinstance(v, dict):
                merged.update(v)
        return merged
    if name in ("$map", "$filter"):
        spec = arg
        items = evaluate(spec["input"], doc, variables)
        if items in (None, MISSING):
            return None
        alias = spec.get("as", "this")
        out_items = []
        for item in items:
            scope = {**(variables or {}), alias: item}
            if name == "$map":
                out_items.append(_present(evaluate(spec["in"], doc, scope)))
            elif truthy(evaluate(spec["cond"], doc, scope)):
                out_items.append(item)
        return out_items
    raise invalid_operator(name)


def _type_name(value: Any) -> str:
    if value is MISSING:
        return "missing"
    names = {
        1: "minKey",
        2: "null",
        4: "string",
        5: "object",
        6: "array",
        7: "binData",
        8: "objectId",
        9: "bool",
        10: "date",
        11: "timestamp",
        12: "regex",
        13: "maxKey",
    }
    rank = type_rank(value)
    if rank == 3:
        if isinstance(value, float):
            return "double"
        if isinstance(value, Decimal128):
            return "decimal"
        return "long" if isinstance(value, Int64) else "int"
    return names.get(rank, "unknown")


def accumulate_values(name: str, values: list[Any]) -> Any:
    numbers = [v for v in values if _is_number(v)]
    if name == "$sum":
        if not numbers:
            return 0
        total = sum(_num(v) for v in numbers)
        return _result(total, *numbers)
    if name == "$avg":
        if not numbers:
            return None
        nums = [_num(v) for v in numbers]
        if any(isinstance(n, Decimal) for n in nums):
            return Decimal128(sum(Decimal(str(n)) for n in nums) / len(nums))
        return float(sum(nums)) / len(nums)
    present = [v for v in values if v is not None and v is not MISSING]
    if not present:
        return None
    best = present[0]
    for v in present[1:]:
        c = compare(v, best)
        if (c < 0) if name == "$min" else (c > 0):
            best = v
    return best
