"""Subscription filters: a SQL boolean expression evaluated on each event's row dict.

The text is parsed by PostgreSQL's grammar (pglast, through services/filters.py
``parse_filter``, which refuses statements, comments, ``;`` and ``$n``), then compiled
from an allow-list of node types into a tree of Python closures. Nothing reaches the
engine. Semantics follow SQL where it matters for a filter:

- three-valued logic: NULL (a missing or null column) makes comparisons unknown, and
  an unknown filter does not match; AND, OR and NOT combine unknowns as SQL does;
- comparisons coerce a string to the other side's kind (``price > 10`` when ``price``
  is a numeric, which events carry as exact decimal text; ``created_at >= '2026-01-01'``
  compares instants), so a filter reads as it would in a WHERE clause;
- supported: AND OR NOT, = <> != < <= > >=, IN / NOT IN, BETWEEN, LIKE / ILIKE (and NOT),
  ~ ~* !~ !~*, IS [NOT] NULL, IS [NOT] TRUE/FALSE, IS [NOT] DISTINCT FROM, + - * / %, ||,
  JSON paths -> and ->>, casts to common types, lower(), upper(), length(), abs(),
  coalesce(). Anything else is INVALID_ARGUMENT when subscribing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Collection
from typing import Any

import orjson
from pglast import ast, enums

from heliosdb.errors import invalid
from heliosdb.services.filters import parse_filter

Row = dict[str, Any]
Expr = Callable[[Row], Any]

_MAX_DEPTH = 64
_DATE_LIKE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([+-]\d{2}(:?\d{2})?|Z)?$"
)
_CAST_TYPES = {
    "int2": "int", "int4": "int", "int8": "int", "integer": "int", "bigint": "int",
    "smallint": "int", "numeric": "number", "decimal": "number", "float4": "number",
    "float8": "number", "real": "number", "double precision": "number", "text": "text",
    "varchar": "text", "bpchar": "text", "bool": "bool", "boolean": "bool", "json": "json",
    "jsonb": "json", "date": "text", "timestamp": "text", "timestamptz": "text", "uuid": "text",
}  # fmt: skip


class RowFilter:
    """A compiled filter; ``matches(row)`` is True only when the expression is true."""

    def __init__(self, text: str, columns: Collection[str] | None = None) -> None:
        self.text = text
        self._columns = set(columns) if columns is not None else None
        self._expr = self._compile(parse_filter(text), 0)

    def matches(self, row: Row | None) -> bool:
        if row is None:
            return False
        try:
            return self._expr(row) is True
        except (ArithmeticError, TypeError, ValueError, re.error):
            return False  # the engine would raise for this row; a filter just doesn't match

    # -- compiler ---------------------------------------------------------------

    def _compile(self, node: Any, depth: int) -> Expr:
        if depth > _MAX_DEPTH:
            raise invalid("the filter is nested too deeply")
        depth += 1
        if isinstance(node, ast.ColumnRef):
            return self._column(node)
        if isinstance(node, ast.A_Const):
            value = _constant(node)
            return lambda row: value
        if isinstance(node, ast.BoolExpr):
            return self._bool(node, depth)
        if isinstance(node, ast.A_Expr):
            return self._a_expr(node, depth)
        if isinstance(node, ast.NullTest):
            arg = self._compile(node.arg, depth)
            if node.nulltesttype == enums.NullTestType.IS_NULL:
                return lambda row: arg(row) is None
            return lambda row: arg(row) is not None
        if isinstance(node, ast.BooleanTest):
            return self._boolean_test(node, depth)
        if isinstance(node, ast.TypeCast):
            return self._cast(node, depth)
        if isinstance(node, ast.FuncCall):
            return self._function(node, depth)
        if isinstance(node, ast.CoalesceExpr):
            args = [self._compile(a, depth) for a in node.args or ()]
            return lambda row: next((v for v in (a(row) for a in args) if v is not None), None)
        raise invalid(f"{type(node).__name__} is not allowed in a subscription filter")

    def _column(self, node: Any) -> Expr:
        fields: list[Any] = list(node.fields or ())
        if len(fields) != 1 or not isinstance(fields[0], ast.String):
            raise invalid("a filter names columns of the subscribed table only (no table.column)")
        name = str(fields[0].sval)
        if self._columns is not None and name not in self._columns:
            raise invalid(f"the filter names a column the table does not have: {name!r}")
        return lambda row: row.get(name)

    def _bool(self, node: Any, depth: int) -> Expr:
        args = [self._compile(a, depth) for a in node.args]
        if node.boolop == enums.BoolExprType.NOT_EXPR:
            arg = args[0]
            return lambda row: None if (v := _truth(arg(row))) is None else not v
        if node.boolop == enums.BoolExprType.AND_EXPR:

            def all_of(row: Row) -> bool | None:
                unknown = False
                for a in args:
                    v = _truth(a(row))
                    if v is False:
                        return False
                    unknown = unknown or v is None
                return None if unknown else True

            return all_of

        def any_of(row: Row) -> bool | None:
            unknown = False
            for a in args:
                v = _truth(a(row))
                if v is True:
                    return True
                unknown = unknown or v is None
            return None if unknown else False

        return any_of

    def _a_expr(self, node: Any, depth: int) -> Expr:
        kind = node.kind
        op = _operator(node)
        kinds = enums.A_Expr_Kind
        if kind == kinds.AEXPR_OP and node.lexpr is None:
            arg = self._compile(node.rexpr, depth)
            if op == "-":
                return lambda row: None if (v := _number(arg(row))) is None else -v
            if op == "+":
                return lambda row: _number(arg(row))
            raise invalid(f"the prefix operator {op!r} is not allowed in a filter")
        left = self._compile(node.lexpr, depth)
        if kind == kinds.AEXPR_IN:
            items = [self._compile(i, depth) for i in node.rexpr]
            negate = op == "<>"
            return lambda row: _in(left(row), [i(row) for i in items], negate)
        if kind in (kinds.AEXPR_BETWEEN, kinds.AEXPR_NOT_BETWEEN):
            low, high = (self._compile(i, depth) for i in node.rexpr)
            negate = kind == kinds.AEXPR_NOT_BETWEEN

            def between(row: Row) -> bool | None:
                value = left(row)
                result = _and(_compare(">=", value, low(row)), _compare("<=", value, high(row)))
                return None if result is None else result != negate

            return between
        if kind in (kinds.AEXPR_DISTINCT, kinds.AEXPR_NOT_DISTINCT):
            right = self._compile(node.rexpr, depth)
            same = kind == kinds.AEXPR_NOT_DISTINCT
            return lambda row: _not_distinct(left(row), right(row)) == same
        if kind in (kinds.AEXPR_LIKE, kinds.AEXPR_ILIKE, kinds.AEXPR_OP):
            if op in ("->", "->>"):
                key = self._compile(node.rexpr, depth)
                as_text = op == "->>"
                return lambda row: _json_path(left(row), key(row), as_text)
            right = self._compile(node.rexpr, depth)
            operation = _binary(op)
            return lambda row: operation(left(row), right(row))
        raise invalid("this kind of expression is not allowed in a subscription filter")

    def _boolean_test(self, node: Any, depth: int) -> Expr:
        arg = self._compile(node.arg, depth)
        tests = enums.BoolTestType
        wanted = {
            tests.IS_TRUE: (True,),
            tests.IS_NOT_TRUE: (False, None),
            tests.IS_FALSE: (False,),
            tests.IS_NOT_FALSE: (True, None),
            tests.IS_UNKNOWN: (None,),
            tests.IS_NOT_UNKNOWN: (True, False),
        }[node.booltesttype]
        return lambda row: _truth(arg(row)) in wanted

    def _cast(self, node: Any, depth: int) -> Expr:
        names = [str(n.sval) for n in node.typeName.names if isinstance(n, ast.String)]
        target = _CAST_TYPES.get(names[-1] if names else "")
        if target is None or node.typeName.arrayBounds:
            raise invalid(f"casts to {'.'.join(names)!r} are not allowed in a filter")
        arg = self._compile(node.arg, depth)
        return lambda row: _cast_value(arg(row), target)

    def _function(self, node: Any, depth: int) -> Expr:
        names = [str(n.sval) for n in node.funcname if isinstance(n, ast.String)]
        name = names[-1].lower() if names else ""
        if node.agg_star or node.agg_distinct or node.over or node.agg_filter:
            raise invalid("aggregates and window functions are not allowed in a filter")
        function = _FUNCTIONS.get(name)
        if function is None or (len(names) == 2 and names[0] != "pg_catalog"):
            raise invalid(f"the function {'.'.join(names)!r} is not allowed in a filter")
        args = [self._compile(a, depth) for a in node.args or ()]
        if len(args) != 1:
            raise invalid(f"{name}() takes one argument")
        arg = args[0]
        return lambda row: None if (v := arg(row)) is None else function(v)


# -- values -------------------------------------------------------------------


def _constant(node: Any) -> Any:
    if node.isnull:
        return None
    value = node.val
    if isinstance(value, ast.Integer):
        return int(value.ival or 0)
    if isinstance(value, ast.Float):
        return decimal.Decimal(str(value.fval))
    if isinstance(value, ast.Boolean):
        return bool(value.boolval)
    if isinstance(value, ast.String):
        return str(value.sval)
    raise invalid("this kind of constant is not allowed in a filter")


def _operator(node: Any) -> str:
    names: list[Any] = list(node.name or ())
    if len(names) != 1 or not isinstance(names[0], ast.String):
        raise invalid("schema-qualified operators are not allowed in a filter")
    return str(names[0].sval)


def _truth(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("t", "true", "f", "false"):
        return value.lower() in ("t", "true")
    raise TypeError("not a boolean")


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _number(value: Any) -> Any:
    if value is None or (isinstance(value, int | float | decimal.Decimal)):
        return value if not isinstance(value, bool) else int(value)
    if isinstance(value, str):
        return (
            decimal.Decimal(value)
            if value not in ("NaN", "Infinity", "-Infinity")
            else float(value.replace("Infinity", "inf"))
        )
    raise TypeError("not a number")


def _instant(value: str) -> Any:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Bring two non-null values to one comparable kind, as the engine's typing would."""
    numeric = (int, float, decimal.Decimal)
    if isinstance(a, bool) or isinstance(b, bool):
        return _truth(a), _truth(b)
    if isinstance(a, numeric) or isinstance(b, numeric):
        x, y = _number(a), _number(b)
        if isinstance(x, float) or isinstance(y, float):
            return float(x), float(y)
        return x, y
    if isinstance(a, str) and isinstance(b, str) and _DATE_LIKE.match(a) and _DATE_LIKE.match(b):
        try:
            return _instant(a), _instant(b)
        except ValueError:
            return a, b
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        x = orjson.loads(a) if isinstance(a, str) else a
        y = orjson.loads(b) if isinstance(b, str) else b
        return x, y
    return a, b


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda x, y: bool(x == y),
    "<>": lambda x, y: bool(x != y),
    "<": lambda x, y: bool(x < y),
    "<=": lambda x, y: bool(x <= y),
    ">": lambda x, y: bool(x > y),
    ">=": lambda x, y: bool(x >= y),
}


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    x, y = _coerce(a, b)
    return _COMPARE[op](x, y)


def _in(value: Any, items: list[Any], negate: bool) -> bool | None:
    if value is None:
        return None
    unknown = False
    for item in items:
        result = _compare("=", value, item)
        if result is True:
            return not negate
        unknown = unknown or result is None
    return None if unknown else negate


def _not_distinct(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _compare("=", a, b) is True


_LIKE_CACHE: dict[tuple[str, bool], re.Pattern[str]] = {}


def _like_pattern(pattern: str, fold: bool) -> re.Pattern[str]:
    key = (pattern, fold)
    compiled = _LIKE_CACHE.get(key)
    if compiled is None:
        parts: list[str] = []
        chars = iter(pattern)
        for char in chars:
            if char == "\\":
                parts.append(re.escape(next(chars, "\\")))
            elif char == "%":
                parts.append(".*")
            elif char == "_":
                parts.append(".")
            else:
                parts.append(re.escape(char))
        compiled = re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))
        if len(_LIKE_CACHE) < 1024:
            _LIKE_CACHE[key] = compiled
    return compiled


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _binary(op: str) -> Callable[[Any, Any], Any]:
    if op in _COMPARE:
        return lambda a, b: _compare(op, a, b)
    like = {"~~": (False, False), "!~~": (False, True), "~~*": (True, False), "!~~*": (True, True)}
    if op in like:
        fold, negate = like[op]
        return lambda a, b: (
            None
            if a is None or b is None
            else bool(_like_pattern(_text(b), fold).fullmatch(_text(a))) != negate
        )
    regex = {"~": (False, False), "!~": (False, True), "~*": (True, False), "!~*": (True, True)}
    if op in regex:
        fold, negate = regex[op]
        flags = re.IGNORECASE if fold else 0
        return lambda a, b: (
            None if a is None or b is None else bool(re.search(_text(b), _text(a), flags)) != negate
        )
    if op == "||":
        return lambda a, b: None if a is None or b is None else _text(a) + _text(b)
    arithmetic: dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda x, y: x + y,
        "-": lambda x, y: x - y,
        "*": lambda x, y: x * y,
        "/": lambda x, y: x // y if isinstance(x, int) and isinstance(y, int) else x / y,
        "%": lambda x, y: x % y,
    }
    if op in arithmetic:
        function = arithmetic[op]
        return lambda a, b: None if a is None or b is None else function(*_coerce(a, b))
    raise invalid(f"the operator {op!r} is not allowed in a subscription filter")


def _json_path(value: Any, key: Any, as_text: bool) -> Any:
    if value is None or key is None:
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if isinstance(value, dict) and isinstance(key, str):
        found = value.get(key)
    elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
        found = value[key]
    else:
        return None
    if as_text and found is not None:
        return found if isinstance(found, str) else _text(found)
    return found


def _cast_value(value: Any, target: str) -> Any:
    if value is None:
        return None
    if target == "int":
        number = _number(value)
        return int(number)
    if target == "number":
        return _number(value)
    if target == "bool":
        return _truth(value)
    if target == "json":
        return orjson.loads(value) if isinstance(value, str) else value
    return _text(value)


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "lower": lambda v: _text(v).lower(),
    "upper": lambda v: _text(v).upper(),
    "length": lambda v: len(_text(v)),
    "abs": lambda v: abs(_number(v)),
}
