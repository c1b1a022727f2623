"""Filter expressions: client text -> PostgreSQL's own grammar -> allow-listed SQL.

A filter (a REST ``where=``, a PostgREST-style ``column=op.value``, a WebSocket
subscription filter, a vector search filter) is parsed by pglast, which is PostgreSQL's
parser, and compiled back to SQL from an allow-list of node types. Nothing of the
client's text is copied into the output except through two doors:

- column names, which the caller's :data:`ColumnResolver` checks (against the catalog)
  and quotes, returning the SQL to use for that column;
- constants, which become bind parameters ``$n`` (numbered from ``param_offset + 1``)
  and are returned in :attr:`CompiledFilter.params`.

Operators, functions, casts and keywords in the output are written by this module from
its own tables, never echoed. Subqueries, unknown functions, casts to types off the
list (``regclass`` and friends), ``;``, comments, ``$n`` references, collations and
every node type not named here are refused with INVALID_ARGUMENT.

Constants keep PostgreSQL's own typing: an integer constant is an ``int4`` (or
``int8``) parameter, a decimal constant a ``numeric`` one, ``true``/``false`` a
``boolean``, and a quoted string stays untyped so the engine infers its type from
context (``age > '30'`` compares integers), exactly as a literal would. String
parameters are :class:`TextLiteral` values; :func:`bind_params` turns them into the
Python value the inferred type needs (JSON text for ``jsonb``, ``{a,b}`` for arrays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pglast import ast, enums, parser
from pglast.parser import ParseError

from heliosdb.engine.codecs import to_param
from heliosdb.errors import invalid

ColumnResolver = Callable[[str], str]
"""Takes a column name as the client wrote it; returns its SQL (quoted) or raises."""

MAX_FILTER_LENGTH = 16_384
MAX_DEPTH = 64
MAX_PARAMS = 10_000
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1

# Binary operators by the name the parser gives them (``!=`` arrives as ``<>``).
_COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})
_BINARY_OPERATORS = _COMPARISONS | frozenset(
    {
        "~~", "!~~", "~~*", "!~~*",  # LIKE, NOT LIKE, ILIKE, NOT ILIKE
        "~", "!~", "~*", "!~*",  # regular expressions
        "->", "->>", "#>", "#>>",  # JSON paths
        "@>", "<@", "?", "?|", "?&", "&&",  # containment, key existence, overlap
        "+", "-", "*", "/", "%", "||",
    }
)  # fmt: skip
_PREFIX_OPERATORS = frozenset({"-", "+"})
_JSON_PATH_OPERATORS = frozenset({"->", "->>"})

# Functions a filter may call (always emitted schema-qualified with pg_catalog).
ALLOWED_FUNCTIONS = frozenset(
    {
        "lower", "upper", "length", "char_length", "character_length", "octet_length",
        "abs", "round", "trunc", "floor", "ceil", "ceiling", "sign",
        "btrim", "ltrim", "rtrim", "left", "right", "substr", "strpos", "replace",
        "starts_with", "concat", "now", "date_trunc", "date_part", "extract", "age",
        "jsonb_array_length", "json_array_length", "jsonb_typeof", "json_typeof",
        "jsonb_exists", "array_length", "cardinality", "array_position",
    }
)  # fmt: skip

# Casts a filter may use: parser name -> the type we write.
ALLOWED_CASTS: dict[str, str] = {
    "int2": "smallint",
    "smallint": "smallint",
    "int4": "integer",
    "int": "integer",
    "integer": "integer",
    "int8": "bigint",
    "bigint": "bigint",
    "numeric": "numeric",
    "decimal": "numeric",
    "float4": "real",
    "real": "real",
    "float8": "double precision",
    "text": "text",
    "varchar": "varchar",
    "bpchar": "text",
    "bool": "boolean",
    "boolean": "boolean",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "interval": "interval",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "jsonb",
    "inet": "inet",
}

_SQL_VALUE_FUNCTIONS: dict[enums.SQLValueFunctionOp, str] = {
    enums.SQLValueFunctionOp.SVFOP_CURRENT_DATE: "CURRENT_DATE",
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIME: "CURRENT_TIME",
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP: "CURRENT_TIMESTAMP",
    enums.SQLValueFunctionOp.SVFOP_LOCALTIME: "LOCALTIME",
    enums.SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP: "LOCALTIMESTAMP",
}

_BOOLEAN_TESTS: dict[enums.BoolTestType, str] = {
    enums.BoolTestType.IS_TRUE: "IS TRUE",
    enums.BoolTestType.IS_NOT_TRUE: "IS NOT TRUE",
    enums.BoolTestType.IS_FALSE: "IS FALSE",
    enums.BoolTestType.IS_NOT_FALSE: "IS NOT FALSE",
    enums.BoolTestType.IS_UNKNOWN: "IS UNKNOWN",
    enums.BoolTestType.IS_NOT_UNKNOWN: "IS NOT UNKNOWN",
}

_BETWEEN: dict[enums.A_Expr_Kind, str] = {
    enums.A_Expr_Kind.AEXPR_BETWEEN: "BETWEEN",
    enums.A_Expr_Kind.AEXPR_NOT_BETWEEN: "NOT BETWEEN",
    enums.A_Expr_Kind.AEXPR_BETWEEN_SYM: "BETWEEN SYMMETRIC",
    enums.A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM: "NOT BETWEEN SYMMETRIC",
}

# Tokens that never belong in a filter, by the name pglast's scanner gives them.
_FORBIDDEN_TOKENS = {
    "ASCII_59": "';' is not allowed in a filter",
    "SQL_COMMENT": "comments are not allowed in a filter",
    "C_COMMENT": "comments are not allowed in a filter",
    "PARAM": "$n parameters are not allowed in a filter; write the value itself",
}


class TextLiteral(str):
    """A string constant from a filter; its engine type is inferred from context."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    sql: str
    params: list[Any] = field(default_factory=list)


def compile_filter(text: str, resolve: ColumnResolver, *, param_offset: int = 0) -> CompiledFilter:
    """Parse a boolean SQL expression and compile it: ``$n`` start at ``param_offset + 1``."""
    return compile_expression(parse_filter(text), resolve, param_offset=param_offset)


def parse_filter(text: str) -> ast.Node:
    """The expression's syntax tree, or INVALID_ARGUMENT for anything but one expression."""
    if not isinstance(text, str) or not text.strip():
        raise invalid("a filter must be a non-empty string")
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid(f"a filter is limited to {MAX_FILTER_LENGTH} characters")
    if "\x00" in text:
        raise invalid("a filter must not contain a NUL character")
    try:
        tokens = parser.scan(text)
    except ParseError as exc:
        raise invalid(f"the filter is not valid SQL: {exc}") from None
    for token in tokens:
        problem = _FORBIDDEN_TOKENS.get(token.name)
        if problem is not None:
            raise invalid(problem)
    # The text is handed to the parser only; what reaches the engine is compiled from
    # the tree below, and the tree must be exactly "SELECT WHERE <one expression>".
    try:
        statements = parser.parse_sql("SELECT WHERE " + text)
    except ParseError as exc:
        raise invalid(f"the filter is not valid SQL: {exc}") from None
    if len(statements) != 1:
        raise invalid("a filter is one boolean expression")
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt) or stmt.whereClause is None or _has_extras(stmt):
        raise invalid("a filter is one boolean expression, not a statement or clause")
    node: ast.Node = stmt.whereClause
    return node


def _has_extras(stmt: ast.SelectStmt) -> bool:
    clauses = (
        "distinctClause", "intoClause", "targetList", "fromClause", "groupClause",
        "havingClause", "windowClause", "valuesLists", "sortClause", "limitOffset",
        "limitCount", "lockingClause", "withClause", "larg", "rarg",
    )  # fmt: skip
    if any(getattr(stmt, name, None) for name in clauses):
        return True
    return stmt.op != enums.SetOperation.SETOP_NONE


def compile_expression(
    node: ast.Node, resolve: ColumnResolver, *, param_offset: int = 0
) -> CompiledFilter:
    """Compile an already parsed (or programmatically built) expression tree."""
    compiler = _Compiler(resolve, param_offset)
    sql = compiler.expr(node, 0)
    return CompiledFilter(sql, compiler.params)


def and_all(nodes: Sequence[ast.Node]) -> ast.Node | None:
    """One tree that is the AND of ``nodes`` (None for no nodes)."""
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(nodes))


class _Compiler:
    def __init__(self, resolve: ColumnResolver, offset: int) -> None:
        self.resolve = resolve
        self.offset = offset
        self.params: list[Any] = []

    def param(self, value: Any, cast: str | None = None) -> str:
        if len(self.params) >= MAX_PARAMS:
            raise invalid(f"a filter may hold at most {MAX_PARAMS} values")
        self.params.append(value)
        placeholder = f"${self.offset + len(self.params)}"
        return f"{placeholder}::{cast}" if cast else placeholder

    def expr(self, node: Any, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise invalid(f"the filter nests deeper than {MAX_DEPTH} levels")
        handler = _HANDLERS.get(type(node))
        if handler is None:
            raise invalid(f"{_describe(node)} is not allowed in a filter")
        return handler(self, node, depth + 1)

    def exprs(self, nodes: Any, depth: int) -> list[str]:
        if not nodes:
            raise invalid("an empty list is not allowed in a filter")
        return [self.expr(n, depth) for n in nodes]

    # -- leaves -----------------------------------------------------------------

    def column(self, node: Any, depth: int) -> str:
        fields: Any = node.fields or ()
        if len(fields) != 1 or not isinstance(fields[0], ast.String):
            raise invalid("a filter names columns by their plain name (no table prefix, no *)")
        return self.resolve(str(fields[0].sval))

    def constant(self, node: Any, depth: int) -> str:
        if node.isnull:
            return "NULL"
        value: Any = node.val
        if isinstance(value, ast.Integer):
            ival = int(value.ival or 0)
            return self.param(ival, "integer" if _INT4_MIN <= ival <= _INT4_MAX else "bigint")
        if isinstance(value, ast.Float):
            text = str(value.fval)
            if text.lstrip("-").isdigit() and _INT8_MIN <= int(text) <= _INT8_MAX:
                return self.param(int(text), "bigint")
            return self.param(TextLiteral(text), "numeric")
        if isinstance(value, ast.Boolean):
            return self.param(bool(value.boolval), "boolean")
        if isinstance(value, ast.String):
            return self.param(TextLiteral(value.sval))
        raise invalid(f"{_describe(value)} constants are not allowed in a filter")

    def sql_value_function(self, node: Any, depth: int) -> str:
        keyword = _SQL_VALUE_FUNCTIONS.get(node.op)
        if keyword is None or (node.typmod is not None and node.typmod >= 0):
            raise invalid("this SQL value function is not allowed in a filter")
        return keyword

    # -- operators ----------------------------------------------------------------

    def a_expr(self, node: Any, depth: int) -> str:
        kind = node.kind
        op = _operator_name(node)
        if kind == enums.A_Expr_Kind.AEXPR_OP:
            if node.lexpr is None:
                if op not in _PREFIX_OPERATORS:
                    raise invalid(f"the prefix operator {op!r} is not allowed in a filter")
                return f"({op} {self.expr(node.rexpr, depth)})"
            if op not in _BINARY_OPERATORS:
                raise invalid(f"the operator {op!r} is not allowed in a filter")
            left = self.expr(node.lexpr, depth)
            if op in _JSON_PATH_OPERATORS:
                right = self.json_key(node.rexpr, depth)
            else:
                right = self.expr(node.rexpr, depth)
            return f"({left} {op} {right})"
        if kind in (enums.A_Expr_Kind.AEXPR_LIKE, enums.A_Expr_Kind.AEXPR_ILIKE):
            if op not in ("~~", "!~~", "~~*", "!~~*"):
                raise invalid("LIKE ... ESCAPE is not supported in a filter")
            return f"({self.expr(node.lexpr, depth)} {op} {self.expr(node.rexpr, depth)})"
        if kind == enums.A_Expr_Kind.AEXPR_IN:
            keyword = {"=": "IN", "<>": "NOT IN"}.get(op)
            if keyword is None:
                raise invalid("IN takes = or <>")
            items = ", ".join(self.exprs(node.rexpr, depth))
            return f"({self.expr(node.lexpr, depth)} {keyword} ({items}))"
        if kind in (enums.A_Expr_Kind.AEXPR_OP_ANY, enums.A_Expr_Kind.AEXPR_OP_ALL):
            if op not in _COMPARISONS:
                raise invalid("ANY/ALL take a comparison operator")
            quantifier = "ANY" if kind == enums.A_Expr_Kind.AEXPR_OP_ANY else "ALL"
            left, right = self.expr(node.lexpr, depth), self.expr(node.rexpr, depth)
            return f"({left} {op} {quantifier} ({right}))"
        if kind in (enums.A_Expr_Kind.AEXPR_DISTINCT, enums.A_Expr_Kind.AEXPR_NOT_DISTINCT):
            keyword = (
                "IS DISTINCT FROM"
                if kind == enums.A_Expr_Kind.AEXPR_DISTINCT
                else "IS NOT DISTINCT FROM"
            )
            return f"({self.expr(node.lexpr, depth)} {keyword} {self.expr(node.rexpr, depth)})"
        between = _BETWEEN.get(kind)
        if between is not None:
            low, high = self.exprs(node.rexpr, depth)
            return f"({self.expr(node.lexpr, depth)} {between} {low} AND {high})"
        raise invalid("this kind of expression is not allowed in a filter")

    def json_key(self, node: Any, depth: int) -> str:
        # A JSON path step: a text key or an integer index, typed so that the engine
        # picks ->(text) or ->(integer) exactly as it would for a literal.
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
            return self.param(TextLiteral(node.val.sval), "text")
        return self.expr(node, depth)

    def bool_expr(self, node: Any, depth: int) -> str:
        args = self.exprs(node.args, depth)
        if node.boolop == enums.BoolExprType.NOT_EXPR:
            return f"(NOT {args[0]})"
        joiner = " AND " if node.boolop == enums.BoolExprType.AND_EXPR else " OR "
        return "(" + joiner.join(args) + ")"

    def null_test(self, node: Any, depth: int) -> str:
        if node.argisrow:
            raise invalid("row tests are not allowed in a filter")
        keyword = "IS NULL" if node.nulltesttype == enums.NullTestType.IS_NULL else "IS NOT NULL"
        return f"({self.expr(node.arg, depth)} {keyword})"

    def boolean_test(self, node: Any, depth: int) -> str:
        return f"({self.expr(node.arg, depth)} {_BOOLEAN_TESTS[node.booltesttype]})"

    # -- functions, casts, lists --------------------------------------------------

    def func_call(self, node: Any, depth: int) -> str:
        names = qualified_names(node.funcname)
        if len(names) == 2 and names[0] == "pg_catalog":
            names = names[1:]
        name = names[0].lower() if len(names) == 1 else ""
        if name not in ALLOWED_FUNCTIONS:
            shown = ".".join(names) or "?"
            raise invalid(f"the function {shown!r} is not allowed in a filter")
        if (
            node.agg_star
            or node.agg_distinct
            or node.agg_order
            or node.agg_filter
            or node.agg_within_group
            or node.func_variadic
            or node.over is not None
        ):
            raise invalid("aggregate and window forms are not allowed in a filter")
        args = [self.expr(a, depth) for a in node.args or ()]
        return f"pg_catalog.{name}({', '.join(args)})"

    def type_cast(self, node: Any, depth: int) -> str:
        type_name = node.typeName
        names = qualified_names(type_name.names)
        if len(names) == 2 and names[0] == "pg_catalog":
            names = names[1:]
        target = ALLOWED_CASTS.get(names[0].lower()) if len(names) == 1 else None
        if target is None or type_name.setof or type_name.pct_type or type_name.typmods:
            shown = ".".join(names) or "?"
            raise invalid(f"casts to {shown!r} are not allowed in a filter")
        bounds = type_name.arrayBounds or ()
        if len(bounds) > 1:
            raise invalid("casts to multi-dimensional arrays are not allowed in a filter")
        suffix = "[]" if bounds else ""
        return f"({self.expr(node.arg, depth)})::{target}{suffix}"

    def coalesce(self, node: Any, depth: int) -> str:
        return f"COALESCE({', '.join(self.exprs(node.args, depth))})"

    def min_max(self, node: Any, depth: int) -> str:
        keyword = "GREATEST" if node.op == enums.MinMaxOp.IS_GREATEST else "LEAST"
        return f"{keyword}({', '.join(self.exprs(node.args, depth))})"

    def array(self, node: Any, depth: int) -> str:
        return f"ARRAY[{', '.join(self.exprs(node.elements, depth))}]"


_HANDLERS: dict[type, Callable[[_Compiler, Any, int], str]] = {
    ast.ColumnRef: _Compiler.column,
    ast.A_Const: _Compiler.constant,
    ast.SQLValueFunction: _Compiler.sql_value_function,
    ast.A_Expr: _Compiler.a_expr,
    ast.BoolExpr: _Compiler.bool_expr,
    ast.NullTest: _Compiler.null_test,
    ast.BooleanTest: _Compiler.boolean_test,
    ast.FuncCall: _Compiler.func_call,
    ast.TypeCast: _Compiler.type_cast,
    ast.CoalesceExpr: _Compiler.coalesce,
    ast.MinMaxExpr: _Compiler.min_max,
    ast.A_ArrayExpr: _Compiler.array,
}

_DESCRIPTIONS = {
    "SubLink": "a subquery",
    "ParamRef": "a $n parameter",
    "CollateClause": "COLLATE",
    "A_Indirection": "subscripting",
    "RowExpr": "a row constructor",
    "CaseExpr": "CASE",
    "NamedArgExpr": "a named argument",
    "BitString": "bit-string",
}


def _describe(node: Any) -> str:
    name = type(node).__name__
    return _DESCRIPTIONS.get(name, f"the expression type {name}")


def qualified_names(nodes: Any) -> list[str]:
    """The strings of a parser name list (``pg_catalog.lower`` -> ["pg_catalog", "lower"])."""
    return [str(n.sval) for n in nodes or () if isinstance(n, ast.String)]


def _operator_name(node: ast.A_Expr) -> str:
    names = node.name or ()
    if len(names) != 1 or not isinstance(names[0], ast.String):
        raise invalid("schema-qualified OPERATOR(...) is not allowed in a filter")
    return str(names[0].sval)


# -- binding parameters ---------------------------------------------------------------


def bind_params(values: Sequence[Any], declared: Sequence[Any], *, first: int = 1) -> list[Any]:
    """Engine parameters for ``values`` given the prepared statement's parameter types.

    ``declared`` are asyncpg's types for the same positions; ``first`` is the ``$n`` of
    ``values[0]`` (for error messages). JSON values are converted as in POST /query;
    :class:`TextLiteral` strings are read as the text form of the inferred type.
    """
    out: list[Any] = []
    for i, (value, pgtype) in enumerate(zip(values, declared, strict=True)):
        position = first + i
        if isinstance(value, TextLiteral):
            value = _from_text(value, pgtype, position)
        out.append(to_param(value, pgtype, position))
    return out


def _from_text(value: TextLiteral, pgtype: Any, position: int) -> Any:
    name: str = pgtype.name
    try:
        if name in ("json", "jsonb"):
            return orjson.loads(str(value))
        if pgtype.kind == "array":
            return _parse_array_text(str(value))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise invalid(f"value ${position} is not valid for {name.lstrip('_')}: {exc}") from None
    return str(value)


def _parse_array_text(text: str) -> list[Any]:
    """A flat array in JSON (``["a","b"]``) or PostgreSQL (``{a,b}``) text form."""
    stripped = text.strip()
    if stripped.startswith("["):
        data = orjson.loads(stripped)
        if not isinstance(data, list):
            raise ValueError("expected an array")
        return data
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise ValueError("expected {a,b,...} or a JSON array")
    inner = stripped[1:-1].strip()
    if not inner:
        return []
    items: list[Any] = []
    for raw in split_top_level(inner, ","):
        item = raw.strip()
        if item.startswith('"') and item.endswith('"') and len(item) >= 2:
            items.append(item[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
        elif item.upper() == "NULL":
            items.append(None)
        else:
            items.append(item)
    return items


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if quoted:
            current.append(char)
            if char == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
            current.append(char)
        elif char == "(":
            depth += 1
            current.append(char)
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise invalid("unbalanced parentheses")
            current.append(char)
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if quoted:
        raise invalid("unterminated double quote")
    if depth != 0:
        raise invalid("unbalanced parentheses")
    parts.append("".join(current))
    return parts


__all__ = [
    "ALLOWED_CASTS",
    "ALLOWED_FUNCTIONS",
    "ColumnResolver",
    "CompiledFilter",
    "TextLiteral",
    "and_all",
    "bind_params",
    "compile_expression",
    "compile_filter",
    "parse_filter",
    "qualified_names",
    "split_top_level",
]
