"""A command's ``let``: variables its expressions read as ``$$name``, put in as
``$literal`` values before anything compiles or runs, so the SQL form and the node's
evaluation see constants. Only expressions take them: a filter's ``$expr`` (a plain
filter value ``"$$x"`` stays the string it is), a pipeline's stages, an update
pipeline. A name an inner ``$let``, ``$map``, ``$filter`` or ``$reduce`` binds hides the
command's own inside it, as MongoDB scopes them."""

from __future__ import annotations

import re
from typing import Any

from heliosdb.errors import invalid
from heliosdb.services.documents.expressions import evaluate, field_values
from heliosdb.services.documents.values import MISSING

_NAME = re.compile(r"^[a-z][A-Za-z0-9_]*$")  # MongoDB's rule for user variable names


def values_of(let: Any) -> dict[str, Any]:
    """The values of a command's ``let`` document (each evaluated once, no document)."""
    if let is None:
        return {}
    if not isinstance(let, dict):
        raise invalid("'let' must be an object", kind="type_mismatch")
    out = {}
    for name, expr in let.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise invalid(
                f"'{name}' starts with an invalid character for a user variable name",
                kind="failed_to_parse",
            )
        value = evaluate(expr, {})
        out[name] = None if value is MISSING else value
    return out


def expression(expr: Any, names: dict[str, Any]) -> Any:
    """``expr`` with ``$$name`` and ``$$name.path`` of ``names`` put in as literals."""
    if not names:
        return expr
    if isinstance(expr, str):
        if not expr.startswith("$$"):
            return expr
        name, _, rest = expr[2:].partition(".")
        if name not in names:
            return expr
        value = field_values(names[name], rest) if rest else names[name]
        return "$$REMOVE" if value is MISSING else {"$literal": value}
    if isinstance(expr, list):
        return [expression(item, names) for item in expr]
    if not isinstance(expr, dict):
        return expr
    if len(expr) == 1:
        ((op, arg),) = expr.items()
        if op == "$literal":
            return expr
        if op in ("$let", "$map", "$filter", "$reduce") and isinstance(arg, dict):
            return {op: _binding(op, arg, names)}
    return {key: expression(value, names) for key, value in expr.items()}


def _binding(op: str, arg: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    """An operator that binds names: its own operands see ``names``, its body does not
    see the ones it binds."""
    if op == "$let":
        bound = set(arg.get("vars", {})) if isinstance(arg.get("vars"), dict) else set()
        inner = {k: v for k, v in names.items() if k not in bound}
        out = dict(arg)
        if isinstance(arg.get("vars"), dict):
            out["vars"] = {k: expression(v, names) for k, v in arg["vars"].items()}
        if "in" in arg:
            out["in"] = expression(arg["in"], inner)
        return out
    bound = {"this", "value"} if op == "$reduce" else {arg.get("as", "this")}
    inner = {k: v for k, v in names.items() if k not in bound}
    body = ("in",) if op in ("$map", "$reduce") else ("cond",)
    return {key: expression(value, inner if key in body else names) for key, value in arg.items()}


def filter_(spec: Any, names: dict[str, Any]) -> Any:
    """A filter with ``names`` put in its ``$expr`` parts (and those under ``$and``,
    ``$or`` and ``$nor``)."""
    if not names or not isinstance(spec, dict):
        return spec
    out = {}
    for key, value in spec.items():
        if key == "$expr":
            out[key] = expression(value, names)
        elif key in ("$and", "$or", "$nor") and isinstance(value, list):
            out[key] = [filter_(item, names) for item in value]
        else:
            out[key] = value
    return out


def pipeline(stages: Any, names: dict[str, Any]) -> Any:
    """A pipeline with ``names`` put in its stages' expressions."""
    if not names or not isinstance(stages, list):
        return stages
    return [_stage(stage, names) for stage in stages]


def _stage(stage: Any, names: dict[str, Any]) -> Any:
    if not isinstance(stage, dict) or len(stage) != 1:
        return stage
    ((name, arg),) = stage.items()
    if name == "$match":
        return {name: filter_(arg, names)}
    if name == "$facet" and isinstance(arg, dict):
        return {name: {key: pipeline(sub, names) for key, sub in arg.items()}}
    if name == "$unionWith" and isinstance(arg, dict) and "pipeline" in arg:
        return {name: {**arg, "pipeline": pipeline(arg["pipeline"], names)}}
    if name == "$lookup" and isinstance(arg, dict):
        own = set(arg.get("let", {})) if isinstance(arg.get("let"), dict) else set()
        out = dict(arg)
        if isinstance(arg.get("let"), dict):
            out["let"] = {k: expression(v, names) for k, v in arg["let"].items()}
        if "pipeline" in arg:
            out["pipeline"] = pipeline(
                arg["pipeline"], {k: v for k, v in names.items() if k not in own}
            )
        return {name: out}
    return {name: expression(arg, names)}
