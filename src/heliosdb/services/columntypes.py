"""Column types and defaults a client may ask for when creating a table.

DDL takes no bind parameters, so both are compiled from allow-lists and written by
us: a type from its parsed parts (name, integer modifiers, ``[]``), a default from a
pglast tree that may hold only a constant (rendered as a quoted literal), a cast of a
constant to an allowed type, or one of a few functions without arguments.
"""

from __future__ import annotations

import re
from typing import Any

from pglast import ast, enums, parser
from pglast.parser import ParseError

from heliosdb.errors import invalid
from heliosdb.services.filters import ALLOWED_CASTS, qualified_names

# Canonical name -> (accepted spellings, how many integer modifiers it takes: (min, max)).
_TYPES: dict[str, tuple[tuple[str, ...], tuple[int, int]]] = {
    "integer": (("int", "integer", "int4"), (0, 0)),
    "bigint": (("bigint", "int8"), (0, 0)),
    "smallint": (("smallint", "int2"), (0, 0)),
    "serial": (("serial", "serial4"), (0, 0)),
    "bigserial": (("bigserial", "serial8"), (0, 0)),
    "text": (("text",), (0, 0)),
    "varchar": (("varchar", "character varying"), (0, 1)),
    "boolean": (("boolean", "bool"), (0, 0)),
    "numeric": (("numeric", "decimal"), (0, 2)),
    "real": (("real", "float4"), (0, 0)),
    "double precision": (("double precision", "float8", "float"), (0, 0)),
    "date": (("date",), (0, 0)),
    "timestamp": (("timestamp", "timestamp without time zone"), (0, 0)),
    "timestamptz": (("timestamptz", "timestamp with time zone"), (0, 0)),
    "time": (("time", "time without time zone"), (0, 0)),
    "interval": (("interval",), (0, 0)),
    "uuid": (("uuid",), (0, 0)),
    "json": (("json",), (0, 0)),
    "jsonb": (("jsonb",), (0, 0)),
    "bytea": (("bytea",), (0, 0)),
    "inet": (("inet",), (0, 0)),
    "vector": (("vector",), (1, 1)),
}
_SPELLINGS = {spelling: canonical for canonical, (names, _) in _TYPES.items() for spelling in names}
_NO_ARRAYS = frozenset({"serial", "bigserial", "vector"})
_TYPE_TEXT = re.compile(
    r"^(?P<name>[a-z][a-z0-9 ]*?)\s*(?:\(\s*(?P<mods>\d+(?:\s*,\s*\d+)?)\s*\))?\s*(?P<array>\[\])?$"
)
MAX_MODIFIER = 100_000

DEFAULT_FUNCTIONS = {
    "now": "pg_catalog.now()",
    "gen_random_uuid": "pg_catalog.gen_random_uuid()",
    "clock_timestamp": "pg_catalog.clock_timestamp()",
    "statement_timestamp": "pg_catalog.statement_timestamp()",
    "transaction_timestamp": "pg_catalog.transaction_timestamp()",
}
_DEFAULT_KEYWORDS: dict[enums.SQLValueFunctionOp, str] = {
    enums.SQLValueFunctionOp.SVFOP_CURRENT_DATE: "CURRENT_DATE",
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIME: "CURRENT_TIME",
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP: "CURRENT_TIMESTAMP",
    enums.SQLValueFunctionOp.SVFOP_LOCALTIME: "LOCALTIME",
    enums.SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP: "LOCALTIMESTAMP",
}


def compile_type(text: Any) -> str:
    """An allowed column type as we write it: ``varchar(20)``, ``numeric(10,2)``, ``text[]``."""
    if not isinstance(text, str) or len(text) > 64:
        raise invalid("a column type must be a short string such as 'text' or 'varchar(20)'")
    match = _TYPE_TEXT.match(" ".join(text.lower().split()))
    canonical = _SPELLINGS.get(match.group("name")) if match else None
    if match is None or canonical is None:
        allowed = ", ".join(_TYPES)
        raise invalid(f"unsupported column type {text!r}; allowed: {allowed} (and arrays)")
    modifiers = [int(m) for m in re.findall(r"\d+", match.group("mods") or "")]
    low, high = _TYPES[canonical][1]
    if not low <= len(modifiers) <= high or any(not 0 < m <= MAX_MODIFIER for m in modifiers):
        raise invalid(f"wrong size modifiers for column type {text!r}")
    if canonical == "numeric" and len(modifiers) == 2 and modifiers[1] > modifiers[0]:
        raise invalid(f"numeric scale must not exceed its precision in {text!r}")
    out = canonical + (f"({','.join(str(m) for m in modifiers)})" if modifiers else "")
    if match.group("array"):
        if canonical in _NO_ARRAYS:
            raise invalid(f"arrays of {canonical} are not supported")
        out += "[]"
    return out


def compile_default(value: Any) -> str:
    """A column default as SQL: a JSON scalar, or SQL text that is a constant or allowed call.

    JSON numbers, booleans and null are literals. A JSON string is SQL text: ``'active'``
    (quoted) for a string constant, ``0``, ``now()``, ``CURRENT_TIMESTAMP``,
    ``gen_random_uuid()``, ``'{}'::jsonb``.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(str(value))
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise invalid("a default is a JSON number, boolean, null or an SQL constant expression")
    try:
        statements = parser.parse_sql("SELECT " + value)
    except ParseError as exc:
        raise invalid(f"the default is not valid SQL: {exc}") from None
    stmt = statements[0].stmt if len(statements) == 1 else None
    targets: Any = getattr(stmt, "targetList", None) or ()
    if (
        not isinstance(stmt, ast.SelectStmt)
        or len(targets) != 1
        or targets[0].name
        or any(
            getattr(stmt, name, None)
            for name in ("fromClause", "whereClause", "sortClause", "limitCount", "withClause")
        )
        or stmt.op != enums.SetOperation.SETOP_NONE
    ):
        raise invalid("a default is one constant expression")
    return _default_node(targets[0].val)


def _default_node(node: Any) -> str:
    if isinstance(node, ast.A_Const):
        return _literal(node)
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
        type_name: Any = node.typeName
        names = qualified_names(type_name.names)
        if len(names) == 2 and names[0] == "pg_catalog":
            names = names[1:]
        target = ALLOWED_CASTS.get(names[0].lower()) if len(names) == 1 else None
        if target is None or type_name.typmods or type_name.setof:
            raise invalid("a default may cast a constant only to a simple allowed type")
        suffix = "[]" if type_name.arrayBounds else ""
        return f"{_literal(node.arg)}::{target}{suffix}"
    if isinstance(node, ast.FuncCall):
        names = qualified_names(node.funcname)
        name = names[-1].lower() if names and len(names) <= 2 else ""
        if len(names) == 2 and names[0] != "pg_catalog":
            name = ""
        if name in DEFAULT_FUNCTIONS and not node.args and not node.agg_star:
            return DEFAULT_FUNCTIONS[name]
        allowed = ", ".join(f"{name}()" for name in DEFAULT_FUNCTIONS)
        raise invalid(f"a default may call only {allowed}")
    if isinstance(node, ast.SQLValueFunction) and node.op in _DEFAULT_KEYWORDS:
        if node.typmod is not None and node.typmod >= 0:
            raise invalid("precision modifiers on a default are not supported")
        return _DEFAULT_KEYWORDS[node.op]
    raise invalid(
        "a default is a constant ('text', 42, true, null, '{}'::jsonb) "
        "or one of now(), gen_random_uuid(), CURRENT_TIMESTAMP, CURRENT_DATE"
    )


def _literal(node: Any) -> str:
    if node.isnull:
        return "NULL"
    value: Any = node.val
    if isinstance(value, ast.Integer):
        return str(int(value.ival or 0))
    if isinstance(value, ast.Float):
        return _number(str(value.fval))
    if isinstance(value, ast.Boolean):
        return "true" if value.boolval else "false"
    if isinstance(value, ast.String):
        return quote_literal(str(value.sval or ""))
    raise invalid("this kind of constant is not supported in a default")


def _number(text: str) -> str:
    if not re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        raise invalid(f"not a finite number: {text!r}")
    return text


def quote_literal(text: str) -> str:
    """A string constant for DDL, as an E'' string so no session setting changes its meaning."""
    if "\x00" in text:
        raise invalid("a string constant must not contain a NUL character")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
