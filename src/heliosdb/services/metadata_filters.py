"""Filters over JSONB metadata (vector search): client text -> pglast -> allow-listed SQL.

    category = 'shoes' AND price < 100 AND NOT discontinued
    tags.color IN ('red', 'blue') OR rating BETWEEN 4 AND 5 OR note IS NULL

The text is parsed by PostgreSQL's own grammar (pglast) as the WHERE clause of an empty
SELECT and compiled back from an allow-list: AND/OR/NOT, the comparisons
``= <> != < <= > >=``, ``[NOT] IN (...)``, ``[NOT] BETWEEN``, ``[NOT] [I]LIKE``,
``IS [NOT] NULL`` and a bare field (true when the field is JSON ``true``). A field is a
metadata key (``a.b`` is the key ``b`` inside ``a``); a value is a string, number,
``true`` or ``false`` constant. Anything else (functions, subqueries, casts, ``$n``,
column arithmetic, a second statement) is refused with INVALID_ARGUMENT.

Nothing of the client's text reaches the SQL: field paths and constants are bind
parameters. Comparisons are typed like JSON: ``price < 100`` holds only where ``price``
is a JSON number below 100, ``name = 'x'`` only where ``name`` is the string ``x``.
Equalities compile to ``metadata @> $n`` so a GIN index on the metadata serves them.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums
from pglast.parser import ParseError, parse_sql

from heliosdb.errors import invalid

MAX_FILTER_LENGTH = 8192
MAX_DEPTH = 32
FIELD_TYPES = ("string", "number", "boolean")
_COMPARISONS = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_LIKES = {"~~": "LIKE", "!~~": "NOT LIKE", "~~*": "ILIKE", "!~~*": "NOT ILIKE"}
_SQL_TYPE = {"string": "text", "number": "numeric", "boolean": "boolean"}
_STMT_EXTRAS = (
    "distinctClause", "intoClause", "fromClause", "groupClause", "havingClause",
    "windowClause", "valuesLists", "sortClause", "limitOffset", "limitCount",
    "lockingClause", "withClause", "larg", "rarg",
)  # fmt: skip


@dataclass(slots=True)
class CompiledFilter:
    sql: str
    params: list[Any] = field(default_factory=list)


def compile_metadata_filter(
    text: str,
    *,
    column: str = "metadata",
    fields: Mapping[str, str] | None = None,
    param_offset: int = 0,
) -> CompiledFilter:
    """``text`` as SQL over the JSONB ``column`` (already quoted), parameters from $offset+1.

    With ``fields`` (name -> string/number/boolean), only those top-level keys may be used,
    each compared with constants of its type.
    """
    compiler = _Compiler(column, fields, param_offset)
    return CompiledFilter(compiler.expr(parse_filter(text), 0), compiler.params)


def parse_filter(text: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise invalid("the filter must be a non-empty string")
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    if "\x00" in text:
        raise invalid("the filter contains a NUL character")
    try:
        statements = parse_sql(f"SELECT WHERE {text}")
    except ParseError as exc:
        raise invalid(f"the filter is not a valid expression: {exc}") from None
    stmt = statements[0].stmt if len(statements) == 1 else None
    if (
        not isinstance(stmt, ast.SelectStmt)
        or stmt.op != enums.SetOperation.SETOP_NONE
        or stmt.targetList
        or any(getattr(stmt, name, None) for name in _STMT_EXTRAS)
        or stmt.whereClause is None
    ):
        raise invalid("the filter must be one boolean expression over metadata fields")
    return stmt.whereClause


class _Compiler:
    def __init__(self, column: str, fields: Mapping[str, str] | None, offset: int) -> None:
        self.column = column
        self.fields = fields
        self.params: list[Any] = []
        self.offset = offset

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${self.offset + len(self.params)}::{cast}"

    def expr(self, node: Any, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise invalid(f"the filter nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.BoolExpr):
            return self.bool_expr(node, depth)
        if isinstance(node, ast.A_Expr):
            return self.a_expr(node)
        if isinstance(node, ast.NullTest):
            path = self.path(node.arg)
            test = "=" if node.nulltesttype == enums.NullTestType.IS_NULL else "<>"
            p = self.param(path, "text[]")
            return f"(coalesce(jsonb_typeof({self.column} #> {p}), 'null') {test} 'null')"
        if isinstance(node, ast.ColumnRef):
            return self.containment(self.path(node), True)
        raise invalid(f"filters may not use {_describe(node)}")

    def bool_expr(self, node: ast.BoolExpr, depth: int) -> str:
        parts = [self.expr(arg, depth + 1) for arg in node.args or ()]
        if node.boolop == enums.BoolExprType.NOT_EXPR:
            return f"(NOT {parts[0]})"
        joiner = " AND " if node.boolop == enums.BoolExprType.AND_EXPR else " OR "
        return "(" + joiner.join(parts) + ")"

    def a_expr(self, node: ast.A_Expr) -> str:
        kind = node.kind
        operator = _operator(node)
        if kind == enums.A_Expr_Kind.AEXPR_OP and operator in _COMPARISONS:
            left, right = node.lexpr, node.rexpr
            if isinstance(left, ast.A_Const) and isinstance(right, ast.ColumnRef):
                left, right, operator = right, left, _FLIPPED[operator]
            path, value = self.path(left), self.constant(right)
            if operator == "=":
                return self.containment(path, value)
            typed, sql_type = self.typed(path, value)
            return f"({typed} {operator} {self.param(value, sql_type)})"
        if kind in (enums.A_Expr_Kind.AEXPR_LIKE, enums.A_Expr_Kind.AEXPR_ILIKE):
            path, value = self.path(node.lexpr), self.constant(node.rexpr)
            if not isinstance(value, str):
                raise invalid("LIKE and ILIKE take a string pattern")
            typed, _ = self.typed(path, value)
            return f"({typed} {_LIKES[operator]} {self.param(value, 'text')})"
        if kind == enums.A_Expr_Kind.AEXPR_IN:
            path = self.path(node.lexpr)
            values = [self.constant(v) for v in _items(node.rexpr)]
            kinds = {_kind_of(v) for v in values}
            if len(kinds) != 1:
                raise invalid("the values of IN (...) must all be strings, numbers or booleans")
            typed, sql_type = self.typed(path, values[0])
            quantifier = "= ANY" if operator == "=" else "<> ALL"
            return f"({typed} {quantifier}({self.param(values, sql_type + '[]')}))"
        if kind in (enums.A_Expr_Kind.AEXPR_BETWEEN, enums.A_Expr_Kind.AEXPR_NOT_BETWEEN):
            path = self.path(node.lexpr)
            low, high = (self.constant(v) for v in _items(node.rexpr))
            if _kind_of(low) != _kind_of(high):
                raise invalid("both ends of BETWEEN must be of one type")
            typed, sql_type = self.typed(path, low)
            negate = "NOT " if kind == enums.A_Expr_Kind.AEXPR_NOT_BETWEEN else ""
            low_sql, high_sql = self.param(low, sql_type), self.param(high, sql_type)
            return f"({typed} {negate}BETWEEN {low_sql} AND {high_sql})"
        raise invalid(f"filters may not use the operator {operator or str(kind)!r}")

    def path(self, node: Any) -> list[str]:
        if not isinstance(node, ast.ColumnRef):
            raise invalid(
                f"expected a metadata field name, found {_describe(node)}; "
                "compare a field with a constant (price < 100)"
            )
        parts = []
        for item in node.fields or ():
            if not isinstance(item, ast.String):
                raise invalid("a field name may not be '*'")
            parts.append(str(item.sval))
        if self.fields is not None and parts[0] not in self.fields:
            known = ", ".join(sorted(self.fields)) or "none"
            raise invalid(f"unknown metadata field {parts[0]!r}; this index declares: {known}")
        return parts

    def constant(self, node: Any) -> Any:
        if not isinstance(node, ast.A_Const):
            raise invalid(f"expected a constant, found {_describe(node)}")
        if node.isnull:
            raise invalid("compare with NULL using IS NULL or IS NOT NULL")
        value = node.val
        if isinstance(value, ast.Integer):
            return int(value.ival or 0)
        if isinstance(value, ast.Float):
            return decimal.Decimal(value.fval or "0")
        if isinstance(value, ast.Boolean):
            return bool(value.boolval)
        if isinstance(value, ast.String):
            return str(value.sval)
        raise invalid(f"filters may not use the constant {_describe(value)}")

    def typed(self, path: list[str], value: Any) -> tuple[str, str]:
        """The field as a SQL value of the constant's JSON type (NULL where it is not)."""
        kind = self.check_type(path, value)
        sql_type = _SQL_TYPE[kind]
        p = self.param(path, "text[]")
        cast = "" if kind == "string" else f"::{sql_type}"
        expression = (
            f"(CASE WHEN jsonb_typeof({self.column} #> {p}) = '{kind}' "
            f"THEN ({self.column} #>> {p}){cast} END)"
        )
        return expression, sql_type

    def containment(self, path: list[str], value: Any) -> str:
        self.check_type(path, value)
        document: Any = float(value) if isinstance(value, decimal.Decimal) else value
        for key in reversed(path):
            document = {key: document}
        return f"({self.column} @> {self.param(document, 'jsonb')})"

    def check_type(self, path: list[str], value: Any) -> str:
        kind = _kind_of(value)
        if self.fields is not None and len(path) == 1:
            declared = self.fields[path[0]]
            if declared != kind:
                raise invalid(f"metadata field {path[0]!r} is a {declared}; compare it with one")
        return kind


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | decimal.Decimal):
        return "number"
    return "string"


def _items(node: Any) -> list[Any]:
    if isinstance(node, list | tuple):
        return list(node)
    raise invalid(f"expected a list of constants, found {_describe(node)}")


def _operator(node: ast.A_Expr) -> str:
    names = node.name or ()
    if len(names) != 1 or not isinstance(names[0], ast.String):
        raise invalid("filters may not use schema-qualified operators")
    return str(names[0].sval)


def _describe(node: Any) -> str:
    name = type(node).__name__
    return {
        "SubLink": "subqueries",
        "FuncCall": "function calls",
        "TypeCast": "casts",
        "ParamRef": "parameters ($n)",
        "A_Expr": "operators between fields",
        "ColumnRef": "a field (compare fields with constants only)",
    }.get(name, name)
