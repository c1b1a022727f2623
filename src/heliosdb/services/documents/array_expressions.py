"""Array and set operators of aggregation expressions: ``$isArray``, ``$slice``,
``$reverseArray``, ``$indexOfArray``, ``$range``, ``$reduce``, ``$zip``, the set
operators (``$setUnion`` ...) and ``$anyElementTrue``/``$allElementsTrue``. Elements
compare as MongoDB compares values (``values.equal``: 1 and 1.0 are one element)."""

from __future__ import annotations

from typing import Any

from heliosdb.errors import invalid
from heliosdb.services.documents.expression_scope import (
    Operator,
    Scope,
    is_number,
    nullish,
    number,
    operands,
    spec,
    truthy,
)
from heliosdb.services.documents.values import equal


def _array(value: Any, name: str, what: str = "argument") -> list[Any]:
    if not isinstance(value, list):
        raise invalid(
            f"{name}'s {what} must be an array, but is {type(value).__name__}",
            kind="type_mismatch",
        )
    return value


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not is_number(value) or number(value) != int(number(value)):
        raise invalid(f"{name} requires integral arguments", kind="type_mismatch")
    return int(number(value))


def _is_array(arg: Any, scope: Scope) -> Any:
    (value,) = operands("$isArray", scope.args(arg), 1)
    return isinstance(value, list)


def _slice(arg: Any, scope: Scope) -> Any:
    values = operands("$slice", scope.args(arg), 2, 3)
    if any(nullish(v) for v in values):
        return None
    array = _array(values[0], "$slice", "first argument")
    if len(values) == 2:
        n = _integer(values[1], "$slice")
        return array[:n] if n >= 0 else array[n:]
    position, n = _integer(values[1], "$slice"), _integer(values[2], "$slice")
    if n <= 0:
        raise invalid("$slice: the third argument must be positive", kind="bad_value")
    start = position if position >= 0 else max(len(array) + position, 0)
    return array[start : start + n]


def _reverse(arg: Any, scope: Scope) -> Any:
    (value,) = operands("$reverseArray", scope.args(arg), 1)
    return None if nullish(value) else list(reversed(_array(value, "$reverseArray")))


def _index_of(arg: Any, scope: Scope) -> Any:
    values = operands("$indexOfArray", scope.args(arg), 2, 4)
    if nullish(values[0]):
        return None
    array = _array(values[0], "$indexOfArray", "first argument")
    start = _integer(values[2], "$indexOfArray") if len(values) > 2 else 0
    end = _integer(values[3], "$indexOfArray") if len(values) > 3 else len(array)
    if start < 0 or end < 0:
        raise invalid("$indexOfArray: indexes must be non-negative", kind="bad_value")
    for index in range(start, min(end, len(array))):
        if equal(array[index], values[1]):
            return index
    return -1


def _range(arg: Any, scope: Scope) -> Any:
    values = operands("$range", scope.args(arg), 2, 3)
    start, end = _integer(values[0], "$range"), _integer(values[1], "$range")
    step = _integer(values[2], "$range") if len(values) > 2 else 1
    if step == 0:
        raise invalid("$range requires a non-zero step value", kind="bad_value")
    return list(range(start, end, step))


def _reduce(arg: Any, scope: Scope) -> Any:
    spec("$reduce", arg, ("input", "initialValue", "in"))
    items = scope(arg["input"])
    if nullish(items):
        return None
    value = scope(arg["initialValue"])
    for item in _array(items, "$reduce", "input"):
        value = scope.bind({"value": value, "this": item})(arg["in"])
    return value


def _zip(arg: Any, scope: Scope) -> Any:
    spec("$zip", arg, ("inputs",), ("useLongestLength", "defaults"))
    inputs = scope(arg["inputs"])
    if not isinstance(inputs, list):
        raise invalid("$zip: 'inputs' must be an array", kind="type_mismatch")
    arrays = []
    for value in (scope(i) if not isinstance(i, list) else i for i in inputs):
        if nullish(value):
            return None
        arrays.append(_array(value, "$zip", "input"))
    longest = bool(arg.get("useLongestLength"))
    defaults = scope(arg["defaults"]) if "defaults" in arg else None
    if defaults is not None and (not longest or not isinstance(defaults, list)):
        raise invalid("$zip: 'defaults' needs 'useLongestLength': true", kind="bad_value")
    if defaults is not None and len(defaults) != len(arrays):
        raise invalid("$zip: 'defaults' must have one value per input", kind="bad_value")
    size = max(map(len, arrays), default=0) if longest else min(map(len, arrays), default=0)
    fill = defaults or [None] * len(arrays)
    return [[a[i] if i < len(a) else fill[k] for k, a in enumerate(arrays)] for i in range(size)]


def _distinct(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


def _sets(name: str, arg: Any, scope: Scope, low: int, high: int | None = None) -> Any:
    values = operands(name, scope.args(arg), low, high)
    if any(nullish(v) for v in values):
        return None
    return [_array(v, name) for v in values]


def _set_union(arg: Any, scope: Scope) -> Any:
    arrays = _sets("$setUnion", arg, scope, 0, 1 << 20)
    return None if arrays is None else _distinct([e for a in arrays for e in a])


def _set_intersection(arg: Any, scope: Scope) -> Any:
    arrays = _sets("$setIntersection", arg, scope, 0, 1 << 20)
    if arrays is None:
        return None
    if not arrays:
        return []
    return [e for e in _distinct(arrays[0]) if all(any(equal(e, x) for x in a) for a in arrays[1:])]


def _set_difference(arg: Any, scope: Scope) -> Any:
    arrays = _sets("$setDifference", arg, scope, 2)
    if arrays is None:
        return None
    return [e for e in _distinct(arrays[0]) if not any(equal(e, x) for x in arrays[1])]


def _set_equals(arg: Any, scope: Scope) -> Any:
    values = operands("$setEquals", scope.args(arg), 2, 1 << 20)
    arrays = [_array(v, "$setEquals") for v in values]
    first = _distinct(arrays[0])
    return all(
        len(_distinct(a)) == len(first) and all(any(equal(e, x) for x in a) for e in first)
        for a in arrays[1:]
    )


def _set_is_subset(arg: Any, scope: Scope) -> Any:
    a, b = (_array(v, "$setIsSubset") for v in operands("$setIsSubset", scope.args(arg), 2))
    return all(any(equal(e, x) for x in b) for e in a)


def _elements(name: str, test: Any) -> Operator:
    def operator(arg: Any, scope: Scope) -> Any:
        (value,) = operands(name, scope.args(arg), 1)
        return test(truthy(e) for e in _array(value, name))

    return operator


OPERATORS: dict[str, Operator] = {
    "$isArray": _is_array,
    "$slice": _slice,
    "$reverseArray": _reverse,
    "$indexOfArray": _index_of,
    "$range": _range,
    "$reduce": _reduce,
    "$zip": _zip,
    "$setUnion": _set_union,
    "$setIntersection": _set_intersection,
    "$setDifference": _set_difference,
    "$setEquals": _set_equals,
    "$setIsSubset": _set_is_subset,
    "$anyElementTrue": _elements("$anyElementTrue", any),
    "$allElementsTrue": _elements("$allElementsTrue", all),
}
