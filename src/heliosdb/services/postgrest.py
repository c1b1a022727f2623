"""PostgREST-style row query parameters -> filter syntax trees, order and selection.

    column=op.value           eq neq gt gte lt lte like ilike match imatch in is cs cd ov
    column=not.op.value       any of them negated
    or=(a.eq.1,b.gt.2)        nested and(...) / or(...) / not.and(...) inside
    and=(...), not.or=(...)   as a parameter name
    select=a,b                columns to return
    order=a.asc,b.desc.nullslast

Values are never parsed as SQL: each becomes a string constant in a tree that
:mod:`heliosdb.services.filters` compiles (so it is a bind parameter whose type the
engine infers from the column). Column names may carry JSON paths
(``data->key->>leaf``); they are checked by the same column resolver as ``where=``.
``like``/``ilike`` accept ``*`` for ``%`` as PostgREST does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pglast import ast, enums

from heliosdb.errors import invalid
from heliosdb.services.filters import split_top_level

_OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "~~",
    "ilike": "~~*",
    "match": "~",
    "imatch": "~*",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
}
_IS_VALUES = {
    "null": None,
    "true": enums.BoolTestType.IS_TRUE,
    "false": enums.BoolTestType.IS_FALSE,
    "unknown": enums.BoolTestType.IS_UNKNOWN,
}
_NEGATED_TESTS = {
    enums.BoolTestType.IS_TRUE: enums.BoolTestType.IS_NOT_TRUE,
    enums.BoolTestType.IS_FALSE: enums.BoolTestType.IS_NOT_FALSE,
    enums.BoolTestType.IS_UNKNOWN: enums.BoolTestType.IS_NOT_UNKNOWN,
}
_JSON_STEP = re.compile(r"(->>|->)")
_LOGIC = re.compile(r"^(not\.)?(and|or)$")
MAX_CONDITIONS = 200
MAX_ORDER_KEYS = 16  # the keyset condition grows with the square of the key count


@dataclass(frozen=True, slots=True)
class OrderKey:
    column: str
    descending: bool = False
    nulls_first: bool | None = None  # None: the engine's default for the direction

    @property
    def effective_nulls_first(self) -> bool:
        return self.descending if self.nulls_first is None else self.nulls_first


def parse_condition(name: str, value: str) -> ast.Node:
    """One query parameter (``age``, ``gt.30`` or ``or``, ``(a.eq.1,...)``) as a tree."""
    logic = _LOGIC.match(name)
    if logic is not None:
        return _group(bool(logic.group(1)), logic.group(2), value)
    return _comparison(name, value)


def parse_conditions(pairs: Iterable[tuple[str, str]]) -> list[ast.Node]:
    nodes = [parse_condition(name, value) for name, value in pairs]
    if len(nodes) > MAX_CONDITIONS:
        raise invalid(f"at most {MAX_CONDITIONS} filter parameters are allowed")
    return nodes


def _group(negated: bool, kind: str, value: str) -> ast.Node:
    text = value.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise invalid(f"{kind}= takes a parenthesised list: {kind}=(a.eq.1,b.eq.2)")
    items = [item.strip() for item in split_top_level(text[1:-1], ",")]
    if not items or any(not item for item in items):
        raise invalid(f"{kind}=(...) takes a non-empty, comma-separated list")
    nodes = [_item(item) for item in items]
    boolop = enums.BoolExprType.AND_EXPR if kind == "and" else enums.BoolExprType.OR_EXPR
    node: ast.Node = ast.BoolExpr(boolop=boolop, args=tuple(nodes))
    return _not(node) if negated else node


def _item(text: str) -> ast.Node:
    """One element inside or=(...): ``col.op.value`` or a nested ``and(...)``/``or(...)``."""
    for prefix, negated in (("not.and(", True), ("not.or(", True), ("and(", False), ("or(", False)):
        if text.startswith(prefix):
            kind = prefix.removeprefix("not.").rstrip("(")
            return _group(negated, kind, text[len(prefix) - 1 :])
    column, dot, rest = text.partition(".")
    if not dot:
        raise invalid(f"expected column.operator.value inside a logic group, got {text!r}")
    return _comparison(column, rest, in_group=True)


def _comparison(column_spec: str, value: str, *, in_group: bool = False) -> ast.Node:
    negated = False
    if value.startswith("not."):
        negated, value = True, value[4:]
    op, dot, operand = value.partition(".")
    if in_group and op != "in":
        # Inside or=(...) a value holding , or ) is written in double quotes.
        operand = _unquote(operand)
    if not dot:
        raise invalid(
            f"the filter on {column_spec!r} must be operator.value, such as eq.1 or in.(1,2)"
        )
    column = _column(column_spec)
    node: ast.Node
    if op == "is":
        if operand.lower() not in _IS_VALUES:
            raise invalid("is. takes null, true, false or unknown")
        test = _IS_VALUES[operand.lower()]
        if test is None:
            null_test = enums.NullTestType.IS_NOT_NULL if negated else enums.NullTestType.IS_NULL
            return ast.NullTest(arg=column, nulltesttype=null_test, argisrow=False)
        return ast.BooleanTest(arg=column, booltesttype=_NEGATED_TESTS[test] if negated else test)
    if op == "in":
        node = ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_IN,
            name=(ast.String(sval="="),),
            lexpr=column,
            rexpr=tuple(_text(v) for v in _list(operand)),
        )
    elif op in _OPERATORS:
        if op in ("like", "ilike"):
            operand = operand.replace("*", "%")
        kind = enums.A_Expr_Kind.AEXPR_OP
        if op in ("like", "ilike"):
            kind = enums.A_Expr_Kind.AEXPR_LIKE if op == "like" else enums.A_Expr_Kind.AEXPR_ILIKE
        node = ast.A_Expr(
            kind=kind, name=(ast.String(sval=_OPERATORS[op]),), lexpr=column, rexpr=_text(operand)
        )
    else:
        known = ", ".join([*_OPERATORS, "in", "is"])
        raise invalid(f"unknown filter operator {op!r}; use one of {known}")
    return _not(node) if negated else node


def _column(spec: str) -> ast.Node:
    """``name`` or ``name->key->>leaf`` as a column reference with JSON path steps."""
    parts = _JSON_STEP.split(spec)
    name = parts[0].strip()
    if not name:
        raise invalid(f"missing column name in {spec!r}")
    node: ast.Node = ast.ColumnRef(fields=(ast.String(sval=name),))
    for op, key in zip(parts[1::2], parts[2::2], strict=True):
        if not key:
            raise invalid(f"empty JSON key in {spec!r}")
        step: ast.Node = (
            ast.A_Const(isnull=False, val=ast.Integer(ival=int(key)))
            if re.fullmatch(r"-?\d{1,9}", key)
            else _text(key)
        )
        node = ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String(sval=op),), lexpr=node, rexpr=step
        )
    return node


def _list(operand: str) -> list[str]:
    text = operand.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise invalid("in. takes a parenthesised list: in.(1,2,3)")
    inner = text[1:-1]
    if not inner.strip():
        raise invalid("in.() needs at least one value")
    return [_unquote(raw.strip()) for raw in split_top_level(inner, ",")]


def _unquote(item: str) -> str:
    if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
        return item[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return item


def _text(value: str) -> ast.Node:
    return ast.A_Const(isnull=False, val=ast.String(sval=value))


def _not(node: ast.Node) -> ast.Node:
    return ast.BoolExpr(boolop=enums.BoolExprType.NOT_EXPR, args=(node,))


def parse_select(value: str | None) -> list[str] | None:
    """``a,b,c`` -> names; ``*`` or nothing -> None (every column)."""
    if value is None or value.strip() in ("", "*"):
        return None
    names = [part.strip() for part in value.split(",")]
    if any(not name for name in names):
        raise invalid("select= takes a comma-separated list of column names")
    return list(dict.fromkeys(names))


def parse_order(value: str | None) -> list[OrderKey]:
    """``a.asc,b.desc.nullslast`` -> order keys (column names still unchecked)."""
    if value is None or not value.strip():
        return []
    parts = value.split(",")
    if len(parts) > MAX_ORDER_KEYS:
        raise invalid(f"order= takes at most {MAX_ORDER_KEYS} columns")
    keys = []
    for part in parts:
        column, *modifiers = part.strip().split(".")
        if not column:
            raise invalid("order= takes column[.asc|.desc][.nullsfirst|.nullslast], ...")
        descending = False
        nulls_first: bool | None = None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls_first = modifier == "nullsfirst"
            else:
                raise invalid(
                    f"unknown order modifier {modifier!r}; use asc, desc, nullsfirst, nullslast"
                )
        keys.append(OrderKey(column, descending, nulls_first))
    return keys
