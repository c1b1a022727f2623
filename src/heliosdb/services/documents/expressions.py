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
from heliosdb.services.documents import (
    array_expressions,
    bsonform,
    date_expressions,
    text_expressions,
)
from heliosdb.services.documents.expression_scope import (
    Operator,
    nullish,
    operands,
    present,
    truthy,
)
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
        return [present(evaluate(e, doc, variables)) for e in expr]
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


def _operator(name: str, arg: Any, doc: Any, variables: dict[str, Any] | None) -> Any:
    if name == "$literal":
        return arg
    if name in ("$add", "$subtract", "$multiply", "$divide", "$mod"):
        return _arith(name, _args(arg, doc, variables))
    if name in _CMP:
        a, b = (present(v) for v in _args(arg, doc, variables))
        return _CMP[name](compare(a, b))
    if name == "$cmp":
        a, b = (present(v) for v in _args(arg, doc, variables))
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
    if name in _CONVERSIONS:
        (value,) = operands(name, _args(arg, doc, variables), 1)
        return convert(value, _CONVERSIONS[name])
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
                out_items.append(present(evaluate(spec["in"], doc, scope)))
            elif truthy(evaluate(spec["cond"], doc, scope)):
                out_items.append(item)
        return out_items
    family = _FAMILIES.get(name)
    if family is not None:
        return family(arg, _Scope(doc, variables))
    raise invalid_operator(name)


class _Scope:
    """Operands of an operator from one of the families (expression_scope.Scope)."""

    __slots__ = ("doc", "variables")

    def __init__(self, doc: Any, variables: dict[str, Any] | None) -> None:
        self.doc = doc
        self.variables = variables

    def __call__(self, expr: Any) -> Any:
        return evaluate(expr, self.doc, self.variables)

    def args(self, arg: Any) -> list[Any]:
        return _args(arg, self.doc, self.variables)

    def bind(self, names: dict[str, Any]) -> _Scope:
        return _Scope(self.doc, {**(self.variables or {}), **names})


def _switch(arg: Any, scope: _Scope) -> Any:
    if not isinstance(arg, dict) or not isinstance(arg.get("branches"), list):
        raise invalid("$switch requires at least one branch", kind="failed_to_parse")
    for branch in arg["branches"]:
        if not isinstance(branch, dict) or "case" not in branch or "then" not in branch:
            raise invalid(
                "$switch requires each branch have a 'case' and 'then'", kind="failed_to_parse"
            )
        if truthy(scope(branch["case"])):
            return scope(branch["then"])
    if "default" not in arg:
        raise invalid(
            "$switch could not find a matching branch for an input, and no default was specified.",
            kind="bad_value",
        )
    return scope(arg["default"])


def _let(arg: Any, scope: _Scope) -> Any:
    if not isinstance(arg, dict) or not isinstance(arg.get("vars"), dict) or "in" not in arg:
        raise invalid("$let requires 'vars' (an object) and 'in'", kind="failed_to_parse")
    names = {name: present(scope(value)) for name, value in arg["vars"].items()}
    return scope.bind(names)(arg["in"])


def _math(name: str, fn: Any, count: int = 1) -> Operator:
    def operator(arg: Any, scope: Any) -> Any:
        values = operands(name, scope.args(arg), count)
        if any(nullish(v) for v in values):
            return None
        if not all(_is_number(v) for v in values):
            raise invalid(f"{name} only supports numeric types", kind="type_mismatch")
        try:
            result = fn(*(float(_num(v)) for v in values))
        except (ValueError, ZeroDivisionError, OverflowError):
            raise invalid(f"{name}'s argument is outside its domain", kind="bad_value") from None
        if name == "$pow" and all(isinstance(v, int) for v in values) and result == int(result):
            return _result(int(result), *values)
        return result

    return operator


def _trunc(arg: Any, scope: Any) -> Any:
    values = operands("$trunc", scope.args(arg), 1, 2)
    if any(nullish(v) for v in values):
        return None
    value, places = _num(values[0]), int(_num(values[1])) if len(values) > 1 else 0
    factor = 10**places
    truncated = math.trunc(value * factor) / factor if places else math.trunc(value)
    return float(truncated) if isinstance(values[0], float) else _result(truncated, values[0])


_CONVERSIONS = {
    "$toString": "string",
    "$toInt": "int",
    "$toLong": "long",
    "$toDouble": "double",
    "$toDecimal": "decimal",
    "$toBool": "bool",
    "$toObjectId": "objectId",
}
_TYPE_CODES = {
    1: "double",
    2: "string",
    7: "objectId",
    8: "bool",
    9: "date",
    16: "int",
    18: "long",
    19: "decimal",
}


def _conversion_failed(value: Any, target: str) -> Exception:
    return invalid(
        f"Failed to parse {type(value).__name__} '{value}' as {target} in $convert",
        kind="bad_value",
    )


def convert(value: Any, target: str) -> Any:
    """``$convert``'s rules for one value (null stays null)."""
    if nullish(value):
        return None
    if target == "date":
        return date_expressions.to_date(value)
    if target == "string":
        if isinstance(value, dt.datetime):
            return date_expressions.format_date(value, date_expressions.DEFAULT_FORMAT)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))  # MongoDB writes the double 2.0 as "2"
        return str(_num(value))
    if target == "bool":
        return truthy(value) if isinstance(value, bool) or _is_number(value) else True
    if target == "objectId":
        try:
            return ObjectId(value)
        except (TypeError, ValueError):
            raise _conversion_failed(value, target) from None
    if isinstance(value, dt.datetime):
        number: Any = bsonform.date_millis(value)
    elif isinstance(value, bool):
        number = int(value)
    elif _is_number(value):
        number = _num(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip()) if target == "decimal" else float(value)
            if target in ("int", "long") and not value.strip().lstrip("+-").isdigit():
                raise ValueError(value)
        except (ValueError, ArithmeticError):
            raise _conversion_failed(value, target) from None
    else:
        raise _conversion_failed(value, target)
    if target == "double":
        return float(number)
    if target == "decimal":
        return Decimal128(Decimal(str(number)))
    if isinstance(number, float) and not math.isfinite(number):
        raise _conversion_failed(value, target)
    whole = int(number)
    if target == "int":
        if not -(2**31) <= whole < 2**31:
            raise _conversion_failed(value, target)
        return whole
    if not -(2**63) <= whole < 2**63:
        raise _conversion_failed(value, target)
    return Int64(whole)


def _convert(arg: Any, scope: _Scope) -> Any:
    if not isinstance(arg, dict) or "input" not in arg or "to" not in arg:
        raise invalid("$convert requires 'input' and 'to'", kind="failed_to_parse")
    value = scope(arg["input"])
    if nullish(value):
        return scope(arg["onNull"]) if "onNull" in arg else None
    target = scope(arg["to"])
    if not isinstance(target, bool):
        target = _TYPE_CODES.get(target, target)
    if not isinstance(target, str) or target not in _TYPE_CODES.values():
        raise invalid(f"Unknown type name: {target}", kind="bad_value")
    try:
        return convert(value, target)
    except Exception:
        if "onError" in arg:
            return scope(arg["onError"])
        raise


_FAMILIES: dict[str, Any] = {
    **date_expressions.OPERATORS,
    **array_expressions.OPERATORS,
    **text_expressions.OPERATORS,
    "$switch": _switch,
    "$let": _let,
    "$convert": _convert,
    "$pow": _math("$pow", math.pow, 2),
    "$exp": _math("$exp", math.exp),
    "$ln": _math("$ln", math.log),
    "$log": _math("$log", math.log, 2),
    "$log10": _math("$log10", math.log10),
    "$trunc": _trunc,
}


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
        nums = [_num(v) for v in numbers]
        if any(isinstance(n, Decimal) for n in nums):  # a decimal sum is exact
            nums = [Decimal(str(n)) for n in nums]
        return _result(sum(nums), *numbers)
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
