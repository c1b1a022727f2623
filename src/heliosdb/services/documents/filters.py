"""MongoDB query filters compiled to SQL over the JSONB query form.

Most of the query language maps onto SQL/JSON path predicates, which already have
MongoDB's array semantics: in lax mode a path steps through arrays and a filter
looks at each element. A filter compiles to a tree whose leaves are either path
predicates (``exists($."a" ? (@ > $v1))``) or plain SQL (``_id = $3::jsonb``). Path
predicates combine inside one jsonpath when they can; the path text is a bind
parameter and every value is a jsonpath variable from one ``vars`` parameter, so no
value ever reaches SQL text. Field names reach jsonpath text only as quoted strings.

``_id`` is never an array, so equality and ``$in`` on it become ``_id = $n`` and use the
primary key.

A few comparisons the query form cannot make (it keeps no field order and one number
type): equality with an embedded document of two or more fields (MongoDB compares them
field by field in order) and ``$type`` of one number width. Such a filter compiles to
a condition every match meets (the test as the form can make it; where negated, true),
and marks its ``Params`` ``recheck``: the caller checks each row again against the
exact BSON (matcher.py) before it applies any skip or limit. Other filters pay nothing.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bson.regex import Regex

from heliosdb.engine.quoting import quote_literal
from heliosdb.errors import HeliosError, invalid
from heliosdb.services.documents.bsonform import (
    NUMBER_FORMS,
    id_form,
    order_matters,
    query_form,
    query_string,
)

TRUE_JP = "(1 == 1)"
FALSE_JP = "(1 == 2)"
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_BOOL_OPS: dict[str, Callable[[bool, bool], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_WRAPPERS = ("$oid", "$date", "$numberDouble", "$numberDecimal", "$code", "$regex")
_TYPE_ALIASES: dict[int, str] = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    13: "javascript",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    -1: "minKey",
    127: "maxKey",
}
_NUMBER_TYPES = {"double", "int", "long", "decimal", "number"}
_Test = TypeVar("_Test", bound="str | _Sql")  # a jsonpath test, or SQL
# number widths the query form does not keep (every number is a JSON number there)
_NUMBER_WIDTHS = {"double", "int", "long", "decimal"}
# the keys of the query forms of typed values (bsonform), each an object of one key
_TYPED_KEYS = (*_WRAPPERS, "$binary", "$timestamp", "$minKey", "$maxKey")
# jsonpath tests for the query forms of the infinities (bsonform: double and Decimal128)
_INFINITY = '@."$numberDouble" == "Infinity"'
_MINUS_INFINITY = '@."$numberDouble" == "-Infinity"'
_JP_FLAGS = set("imsx")


def bad_value(message: str) -> Exception:
    return invalid(message, kind="bad_value")


@dataclass
class Params:
    """Bind parameters of one statement: ``add`` returns the placeholder. ``recheck``:
    the filter compiled with them selects a superset of its matches (module docstring)."""

    values: list[Any] = field(default_factory=list)
    recheck = False  # not a field: set on the few instances that need it

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def quote_key(key: str) -> str:
    """A field name as a jsonpath member accessor."""
    return "." + json.dumps(key, ensure_ascii=False)


def jsonpath_of(path: str) -> str:
    if not path:
        return ""
    out = []
    for part in path.split("."):
        if not part:
            raise bad_value(f"empty field name in path {path!r}")
        out.append(f"[{part}]" if part.isdigit() and len(part) < 10 else quote_key(part))
    return "".join(out)


def path_from(ctx: str, path: str) -> str:
    """The jsonpath of ``path`` from ``ctx``; a document's first part is a field name
    even when it is a number (lax mode would read the document as an array of itself),
    an $elemMatch operand's (``@``) a position (see docs/mongodb.md)."""
    head, _, rest = path.partition(".")
    if ctx == "$" and head.isdigit():
        return ctx + quote_key(head) + jsonpath_of(rest)
    return ctx + jsonpath_of(path)


def position_readings(ctx: str, path: str) -> tuple[str, str, str] | None:
    """For a path with a position after a name (``"v.0"``, ``"a.b.1.c"``; the first
    such part), from the jsonpath ``ctx``: a test that the named value is a document,
    the path reading the position as that document's field name, and the path reading
    it as an array's element (nothing where the value is no array: in lax mode a filter
    would unwrap the array, so the test sits one level up). None for other paths."""
    parts = path.split(".")
    at = next((i for i, part in enumerate(parts) if i and part.isdigit()), None)
    if at is None:
        return None
    parent = path_from(ctx, ".".join(parts[: at - 1]))
    name = quote_key(parts[at - 1])
    rest = jsonpath_of(".".join(parts[at + 1 :]))
    is_document = f'exists({parent} ? (@{name}.type() == "object"))'
    as_field = f"{parent}{name}{quote_key(parts[at])}{rest}"
    as_element = f'{parent} ? (@{name}.type() == "array"){name}[{parts[at]}]{rest}'
    return is_document, as_field, as_element


def has_position(path: str) -> bool:
    """Whether a dotted path names an array position somewhere (a part of digits):
    such paths keep the plain rules where MongoDB's reading of what lies on the way
    (gaps, an array element read as a document) does not apply."""
    return any(part.isdigit() for part in path.split("."))


def _path_start(target: str, path: str) -> str:
    """The jsonpath ``target`` (``path``'s accessors after it) starts from: ``$``, or
    an $elemMatch operand's ``@``."""
    return target[: len(target) - len(jsonpath_of(path))]


class _Compiler:
    def __init__(self, params: Params) -> None:
        self.params = params
        self.vars: dict[str, Any] = {}
        self.vars_ref = ""
        self.negated = False  # inside an odd number of negations

    def flip(self, negated: bool = True) -> None:
        """Enter or leave a part that will be negated (when ``negated``), in pairs. A
        compile error between them leaves ``negated`` wrong but ends the compiler's use."""
        self.negated ^= negated

    def loose(self, test: Callable[[], _Test]) -> _Test | str:
        """A test the query form can only make loosely (true for every match and some
        others): made where it is not negated, else true once negated (false here), so
        the filter selects a superset, which the caller checks again (``recheck``)."""
        self.params.recheck = True
        return FALSE_JP if self.negated else test()

    def expression(self, value: Any) -> str | _Sql:
        """``$expr`` in SQL where the compiler knows every operator in it; else every
        document is a candidate and the node evaluates it (matcher.py, ``recheck``)."""
        bound = len(self.params.values)
        try:
            return _Sql(_ExprCompiler(self.params).boolean(value))
        except HeliosError as exc:
            if exc.details.get("kind") != "not_implemented":
                raise
            # the parameters of the part that did compile are in no SQL: unbound, the
            # engine could not tell their types
            del self.params.values[bound:]
            return self.loose(lambda: TRUE_JP)

    def var(self, value: Any) -> str:
        name = f"v{len(self.vars) + 1}"
        self.vars[name] = value
        return "$" + name

    # -- documents -------------------------------------------------------------------
    def document(self, spec: Any, ctx: str, *, top: bool) -> list[str | _Sql]:
        if not isinstance(spec, dict):
            raise bad_value("a query filter must be a document")
        parts: list[str | _Sql] = []
        for key, value in spec.items():
            if key in ("$and", "$or", "$nor"):
                if not isinstance(value, list) or not value:
                    raise bad_value(f"{key} argument must be a non-empty array")
                self.flip(key == "$nor")
                branches = [self.conjunction(self.document(item, ctx, top=top)) for item in value]
                self.flip(key == "$nor")
                if key == "$and":
                    parts.extend(branches)
                elif key == "$or":
                    parts.append(self.disjunction(branches))
                else:
                    parts.append(self.negate(self.disjunction(branches)))
            elif key == "$comment":
                continue
            elif key == "$expr" and top:
                parts.append(self.expression(value))
            elif key in ("$expr", "$where", "$text", "$jsonSchema"):
                raise invalid(f"{key} is not supported", kind="not_implemented")
            elif key.startswith("$"):
                raise bad_value(f"unknown top level operator: {key}")
            elif top and key == "_id" and plain_id(value):
                parts.append(_Sql(f"_id = {self.params.add(id_form(value), 'jsonb')}"))
            elif (
                top
                and key == "_id"
                and isinstance(value, dict)
                and list(value) == ["$in"]
                and isinstance(value["$in"], list)
                and all(plain_id(v) for v in value["$in"])
            ):
                ids = [id_form(v) for v in value["$in"]]
                parts.append(_Sql(f"_id = ANY({self.params.add(ids, 'jsonb[]')})"))
            elif top and key and "." not in key and _plain_scalar(value):
                # A top-level field equal to a number, string or boolean: plain SQL (the
                # field is the value, or an array holding it) costs the engine less than
                # the path predicate, and leaves nested arrays alone as MongoDB does.
                form = self.params.add(query_form(value), "jsonb")
                x = f"(doc -> {quote_literal(key)})"
                parts.append(
                    _Sql(
                        f"({x} = {form} OR (jsonb_typeof({x}) = 'array' "
                        f"AND {x} @> jsonb_build_array({form})))"
                    )
                )
            elif (
                top
                and key
                and "." not in key
                and isinstance(value, dict)
                and list(value) == ["$in"]
                and isinstance(value["$in"], list)
                and value["$in"]
                and all(_plain_scalar(v) for v in value["$in"])
            ):
                # {field: {$in: [scalars]}}: one array parameter, as the plain equality
                # above (a jsonpath branch per value made a 1,000-value $in cost about a
                # millisecond per document)
                forms = self.params.add([query_form(v) for v in value["$in"]], "jsonb[]")
                x = f"(doc -> {quote_literal(key)})"
                parts.append(
                    _Sql(
                        f"({x} = ANY({forms}) OR (jsonb_typeof({x}) = 'array' AND EXISTS "
                        f"(SELECT 1 FROM jsonb_array_elements({x}) AS e(v) "
                        f"WHERE e.v = ANY({forms}))))"
                    )
                )
            else:
                parts.append(self.field(key, value, ctx, top=top))
        return parts

    def field(self, path: str, value: Any, ctx: str, *, top: bool) -> str | _Sql:
        readings = position_readings(ctx, path)
        if readings is not None:
            # a position after a name: the array's element where that is an array, the
            # field of that name where it is a document, nothing otherwise (jsonpath's
            # lax "[0]" would read a scalar or a document as itself)
            is_document, as_field, as_element = readings
            return self.disjunction(
                [
                    self.conjunction([is_document, self.at(as_field, value, path, top=top)]),
                    self.conjunction(
                        [f"!{is_document}", self.at(as_element, value, path, top=top)]
                    ),
                ]
            )
        return self.at(path_from(ctx, path), value, path, top=top)

    def at(self, target: str, value: Any, path: str, *, top: bool) -> str | _Sql:
        if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            return self.conjunction(self.operators(target, value, path, top=top))
        return self.equals(target, value, path, top=top)

    def operators(
        self, target: str, spec: dict[str, Any], path: str, *, top: bool
    ) -> list[str | _Sql]:
        parts: list[str | _Sql] = []
        for op, operand in spec.items():
            if op == "$eq":
                parts.append(self.equals(target, operand, path, top=top))
            elif op == "$ne":
                self.flip()
                parts.append(self.negate(self.equals(target, operand, path, top=top)))
                self.flip()
            elif op in _COMPARISONS:
                if operand is None and op in ("$gte", "$lte"):
                    # as MongoDB's matcher: {$gte: null} and {$lte: null} are {$eq: null}
                    # (null, and a missing field)
                    parts.append(self.equals(target, None, path, top=top))
                else:
                    parts.append(self.compare(target, _COMPARISONS[op], operand))
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    raise bad_value(f"{op} needs an array")
                self.flip(op == "$nin")
                options = [self.equals(target, item, path, top=top) for item in operand]
                self.flip(op == "$nin")
                either = self.disjunction(options) if options else FALSE_JP
                parts.append(either if op == "$in" else self.negate(either))
            elif op == "$exists":
                test = f"exists({target})"
                parts.append(test if operand else f"!{test}")
            elif op == "$type":
                kinds = operand if isinstance(operand, list) else [operand]
                parts.append(self.disjunction([self.type_test(target, k) for k in kinds]))
            elif op == "$regex":
                parts.append(self.regex(target, operand, spec.get("$options", "")))
            elif op == "$options":
                if "$regex" not in spec:
                    raise bad_value("$options needs a $regex")
            elif op == "$size":
                if not isinstance(operand, int) or isinstance(operand, bool) or operand < 0:
                    raise bad_value("$size needs a non-negative whole number")
                parts.append(
                    f'({target}.type() == "array" && {target}.size() == {self.var(operand)})'
                )
            elif op == "$all":
                if not isinstance(operand, list):
                    raise bad_value("$all needs an array")
                if not operand:
                    parts.append(FALSE_JP)
                for item in operand:
                    if isinstance(item, dict) and list(item) == ["$elemMatch"]:
                        parts.append(self.elem_match(target, item["$elemMatch"]))
                    else:
                        parts.append(self.equals(target, item, path, top=top))
            elif op == "$elemMatch":
                parts.append(self.elem_match(target, operand))
            elif op == "$mod":
                parts.append(self.mod(target, operand))
            elif op == "$not":
                if isinstance(operand, (Regex, re.Pattern)):
                    parts.append(self.negate(self.equals(target, operand, path, top=top)))
                elif isinstance(operand, dict) and operand:
                    self.flip()
                    inner = self.operators(target, operand, path, top=top)
                    self.flip()
                    parts.append(self.negate(self.conjunction(inner)))
                else:
                    raise bad_value("$not needs a regex or a document")
            elif op == "$comment":
                continue
            else:
                raise bad_value(f"unknown operator: {op}")
        return parts

    # -- leaves ----------------------------------------------------------------------
    def equals(
        self, target: str, value: Any, path: str, *, top: bool, ordered: bool = True
    ) -> str | _Sql:
        """Equality; as the query form sees it, without embedded documents' field order,
        where not ``ordered`` or loosely (``loose``) where that order matters."""
        kind = type(value)
        if ordered and (kind is dict or kind is list) and order_matters(value):
            return self.loose(lambda: self.equals(target, value, path, top=top, ordered=False))
        if isinstance(value, (Regex, re.Pattern)):
            # a string it matches, or the same regex stored (pattern and flags)
            stored = query_form(value)
            same = self.items(
                target,
                f'@."$regex" == {self.var(stored["$regex"])} '
                f'&& @."$options" == {self.var(stored["$options"])}',
            )
            return f"({self.regex(target, value.pattern, value.flags)} || {same})"
        if value is None:
            gaps = "".join(f" || {gap}" for gap in self.gaps(target, path))
            return f"(!exists({target}) || {self.items(target, '@ == null')}{gaps})"
        form = query_form(value)
        if isinstance(form, dict):
            wrapped = self.wrapper_test("@", form)
            if wrapped is not None:
                return self.items(target, wrapped)
        if isinstance(form, (dict, list)):
            if top:
                lax = self.params.add("lax " + target, "jsonpath")
                elems = self.params.add("lax " + target + "[*]", "jsonpath")
                val = self.params.add(form, "jsonb")
                return _Sql(
                    f"(EXISTS (SELECT 1 FROM jsonb_path_query(doc, {lax}) AS c(v)"
                    f" WHERE c.v = {val})"
                    f" OR EXISTS (SELECT 1 FROM jsonb_path_query(doc, {elems}) AS e(v)"
                    f" WHERE e.v = {val}))"
                )
            if isinstance(form, list) and target != "@":
                return self.array_at(target, path, form)
            return self.contains("@", form, target)
        return self.items(target, f"@ == {self.var(form)}")

    def gaps(self, target: str, path: str) -> list[str]:
        """For ``{"a.b": null}``: an object the path reaches on its way (``a``, or an
        element of the array ``a`` is) lacks the next field, so that branch reaches no
        value, which MongoDB counts as null (jstests/arrayfind5.js: ``{a: [{}, {b: 1}]}``
        matches, ``{a: [5, {b: 1}]}`` does not). Paths with positions are left alone."""
        parts = path.split(".")
        if len(parts) < 2 or has_position(path):
            return []
        ctx = _path_start(target, path)
        return [
            f'exists({ctx}{jsonpath_of(".".join(parts[:i]))} ? (@.type() == "object"'
            f" && !exists(@{quote_key(parts[i])})))"
            for i in range(1, len(parts))
        ]

    def items(self, target: str, test: str) -> str:
        """``test`` holds for a value the path reaches or an item of an array it reaches,
        never for an array nested in such an array: MongoDB does not look into those
        (``{k: 5}`` does not match ``{k: [[5]]}``). In lax mode a filter unwraps an array
        once and a comparison unwraps its operand again (``$.k ? (@ == 5)`` meets
        ``[[5]]``), so the filter drops array items (``.type()`` never unwraps).

        ``@`` alone is an $elemMatch operand: one element exactly, an array element being
        an array (it equals no scalar; $size, $elemMatch and ``$type: "array"`` see it)."""
        if target == "@":
            return f'(@.type() != "array" && exists(@ ? ({test})))'
        return f'exists({target} ? (({test}) && @.type() != "array"))'

    def contains(self, item: str, form: Any, target: str) -> str:
        """Inside $elemMatch: a document or array operand. A document is equal only to a
        document with the same keys and equal values (JSONB keeps no field order, so
        ``{a: 1, b: 2}`` also equals ``{b: 2, a: 1}``, which MongoDB does not)."""
        if isinstance(form, dict):
            equal = self.value_equal(item, form)
            if equal is not None:
                return self.items(target, equal)
        if isinstance(form, list) and target == "@":
            equal = self.value_equal("@", form)
            if equal is not None:
                return equal
        return TRUE_JP

    def array_at(self, target: str, path: str, form: list[Any]) -> str:
        """Inside $elemMatch's document form: the field is the array ``form``, or an
        array holding it. A filter on ``target`` would unwrap the field's array, so the
        whole-array test filters the objects holding the field; a path through arrays of
        documents reaches several fields, each tested on its own."""
        element = f"exists({target} ? ({self.value_equal('@', form) or FALSE_JP}))"
        if has_position(path):
            whole = self.value_equal(target, form) or FALSE_JP
        else:
            parts = path.split(".")
            parent = _path_start(target, path) + jsonpath_of(".".join(parts[:-1]))
            field = self.value_equal("@" + quote_key(parts[-1]), form) or FALSE_JP
            whole = f'exists({parent} ? (@.type() == "object" && {field}))'
        return f"({whole} || {element})"

    def value_equal(self, item: str, form: Any) -> str | None:
        """``item`` equals ``form`` exactly: numbers, strings, booleans, nulls, typed
        values, arrays member by member and documents key by key (None for a form it
        cannot test). The type test before each comparison keeps every test true or
        false, never unknown, and lax mode from unwrapping an array."""
        if form is None:
            return f'{item}.type() == "null"'
        if isinstance(form, (bool, str, *NUMBER_FORMS)):
            kind = (
                "boolean"
                if isinstance(form, bool)
                else "string"
                if isinstance(form, str)
                else "number"
            )
            return f'({item}.type() == "{kind}" && {item} == {self.var(form)})'
        if isinstance(form, list):
            tests = [f'{item}.type() == "array"', f"{item}.size() == {self.var(len(form))}"]
            for i, member in enumerate(form):
                inner = self.value_equal(f"{item}[{i}]", member)
                if inner is None:
                    return None
                tests.append(inner)
            return "(" + " && ".join(tests) + ")"
        if isinstance(form, dict):
            typed = self.wrapper_test(item, form)
            if typed is not None:
                return f'({item}.type() == "object" && {typed})'
            tests = [f'{item}.type() == "object"']
            # No key beyond the operand's: each key/value pair names one of them.
            others = " && ".join(f"@.key != {self.var(key)}" for key in form) or TRUE_JP
            tests.append(f"!exists({item}.keyvalue() ? ({others}))")
            for key, member in form.items():
                inner = self.value_equal(item + quote_key(key), member)
                if inner is None:
                    return None
                tests.append(inner)
            return "(" + " && ".join(tests) + ")"
        return None

    def wrapper_test(self, item: str, form: dict[str, Any]) -> str | None:
        if len(form) == 1:
            ((key, inner),) = form.items()
            if key in _WRAPPERS and not isinstance(inner, (dict, list)):
                return f"{item}{quote_key(key)} == {self.var(inner)}"
            if key == "$binary" and isinstance(inner, dict):
                return (
                    f'{item}."$binary"."base64" == {self.var(inner["base64"])} && '
                    f'{item}."$binary"."subType" == {self.var(inner["subType"])}'
                )
            if key in ("$minKey", "$maxKey"):
                return f"exists({item}{quote_key(key)})"
        return None

    def compare(self, target: str, op: str, value: Any) -> str:
        if value is None:  # $gt/$lt null: nothing ($gte/$lte null are equalities)
            return FALSE_JP
        form = query_form(value)
        if isinstance(form, dict) and len(form) == 1:
            ((key, inner),) = form.items()
            if key in ("$oid", "$date") and not isinstance(inner, (dict, list)):
                return self.items(target, f"@{quote_key(key)} {op} {self.var(inner)}")
            if key in ("$minKey", "$maxKey"):
                # every value lies above MinKey and below MaxKey, but the key itself
                upward = (key == "$minKey") == (">" in op)
                itself = self.items(target, f"exists(@{quote_key(key)})")
                if "=" in op:
                    return TRUE_JP if upward else itself
                return f"!{itself}" if upward else FALSE_JP
            if key == "$numberDouble":
                return self.compare_non_finite(target, op, inner)
        if isinstance(form, dict) and list(form) == ["$timestamp"]:
            # seconds first, then the increment (as MongoDB compares them)
            t, i = self.var(form["$timestamp"]["t"]), self.var(form["$timestamp"]["i"])
            ts, strict = '@."$timestamp"', op.rstrip("=")
            return self.items(
                target, f'{ts}."t" {strict} {t} || ({ts}."t" == {t} && {ts}."i" {op} {i})'
            )
        if isinstance(form, NUMBER_FORMS) and not isinstance(form, bool):
            # the infinities' query forms are objects: beyond every number, as in MongoDB
            beyond = _INFINITY if ">" in op else _MINUS_INFINITY
            return self.items(target, f"@ {op} {self.var(form)} || {beyond}")
        if isinstance(form, str):
            return self.items(target, f"@ {op} {self.var(form)}")
        if isinstance(form, bool):  # false < true, and nothing else is a boolean
            meets = [b for b in (False, True) if _BOOL_OPS[op](b, form)]
            if len(meets) == 2:
                return self.items(target, '@.type() == "boolean"')
            return self.items(target, f"@ == {self.var(meets[0])}") if meets else FALSE_JP
        if type(value) is dict:
            # MongoDB's BSON order (field by field: type, name, value) is not JSONB's:
            # a document bound selects the documents it can meet, the node decides
            return self.loose(lambda: self.items(target, '@.type() == "object"'))
        if type(value) is list:
            # an array bound meets an array as a whole or an array inside one; lax mode
            # reads an array's elements, so only the path's presence is tested here
            return self.loose(lambda: f"exists({target})")
        raise bad_value(f"cannot compare with {type(value).__name__} here")

    def compare_non_finite(self, target: str, op: str, which: Any) -> str:
        """A range whose bound is NaN or an infinity: NaN meets only NaN (and only with
        ``=``), as MongoDB's comparisons special-case it; an infinity bounds every number."""
        if which not in ("Infinity", "-Infinity"):
            return self.items(target, '@."$numberDouble" == "NaN"') if "=" in op else FALSE_JP
        same = _INFINITY if which == "Infinity" else _MINUS_INFINITY
        other = _MINUS_INFINITY if which == "Infinity" else _INFINITY
        if (">" in op) == (which == "Infinity"):  # beyond the top (or below the bottom)
            return self.items(target, same) if "=" in op else FALSE_JP
        within = f'@.type() == "number" || {other}'
        return self.items(target, f"{within} || {same}" if "=" in op else within)

    def regex(self, target: str, pattern: Any, options: Any) -> str:
        if isinstance(pattern, (Regex, re.Pattern)):
            options = pattern.flags
            pattern = pattern.pattern
        if not isinstance(pattern, str):
            raise bad_value("$regex has to be a string")
        if isinstance(options, int):
            options = "".join(
                letter
                for flag, letter in ((re.I, "i"), (re.M, "m"), (re.S, "s"), (re.X, "x"))
                if options & flag
            )
        if not isinstance(options, str) or set(options) - (_JP_FLAGS | {"u"}):
            raise bad_value(f"invalid flag in regex options: {options}")
        flags = "".join(sorted(set(options) & _JP_FLAGS))
        # The pattern meets strings in their query form: NUL and U+0001 in it are
        # escaped as they are there (a pattern's literal text still finds them; a class
        # or "." meets an escaped character as its two).
        literal = json.dumps(query_string(pattern), ensure_ascii=False)
        flag_part = f" flag {json.dumps(flags)}" if flags else ""
        return self.items(target, f"@ like_regex {literal}{flag_part}")

    def type_test(self, target: str, kind: Any) -> str | _Sql:
        if isinstance(kind, (int, float)) and not isinstance(kind, bool):
            name = _TYPE_ALIASES.get(int(kind))
            if name is None:
                raise bad_value(f"Invalid numerical type code: {kind}")
            kind = name
        if not isinstance(kind, str):
            raise bad_value("type must be represented as a number or a string")
        simple = {"string": "string", "bool": "boolean", "null": "null"}
        wrapped = {
            "objectId": "$oid",
            "date": "$date",
            "binData": "$binary",
            "regex": "$regex",
            "timestamp": "$timestamp",
            "minKey": "$minKey",
            "maxKey": "$maxKey",
            "javascript": "$code",
        }
        if kind in _NUMBER_TYPES:
            number = self.items(target, '@.type() == "number" || exists(@."$numberDouble")')
            return self.loose(lambda: number) if kind in _NUMBER_WIDTHS else number
        if kind in simple:
            return self.items(target, f'@.type() == "{simple[kind]}"')
        if kind == "array":
            return f'({target}.type() == "array")'
        if kind == "object":
            # a typed value's query form is an object too (bsonform): not a document
            typed = " || ".join(f"exists(@{quote_key(key)})" for key in _TYPED_KEYS)
            return self.items(target, f'@.type() == "object" && !({typed})')
        if kind in wrapped:
            return self.items(target, f"exists(@{quote_key(wrapped[kind])})")
        raise bad_value(f"Unknown type name alias: {kind}")

    def elem_match(self, target: str, spec: Any) -> str:
        if not isinstance(spec, dict):
            raise bad_value("$elemMatch needs an Object")
        if spec and all(k.startswith("$") and k not in ("$and", "$or", "$nor") for k in spec):
            inner = self.operators("@", spec, "", top=False)
        else:
            # The document form skips scalars and reads an array element as a document
            # keyed "0", "1", ... (MongoDB's jstests/arrayfind9.js): only a path with a
            # position can meet one (a named field would step into its items here).
            kinds = '@.type() == "object"'
            if any(has_position(key) for key in spec):
                kinds = f'({kinds} || @.type() == "array")'
            inner = [kinds, *self.document(spec, "@", top=False)]
        body = self.conjunction(inner)
        if isinstance(body, _Sql):
            raise bad_value("this $elemMatch form is not supported")
        # ``target ? (...)`` unwraps the array once and leaves its items as they are;
        # ``target[*] ? (...)`` would unwrap an item that is an array again.
        return f'({target}.type() == "array" && exists({target} ? ({body})))'

    def mod(self, target: str, operand: Any) -> str:
        if (
            not isinstance(operand, list)
            or len(operand) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in operand)
        ):
            raise bad_value("malformed mod, needs to be an array of two numbers")
        divisor, remainder = (int(x) for x in operand)
        if divisor == 0:
            raise bad_value("divisor cannot be 0")
        return self.items(
            target,
            f'@.type() == "number" && @.floor() % {self.var(divisor)} == {self.var(remainder)}',
        )

    # -- boolean structure ---------------------------------------------------------------
    def conjunction(self, parts: list[str | _Sql]) -> str | _Sql:
        return self._join(parts, "&&", "AND", TRUE_JP)

    def disjunction(self, parts: list[str | _Sql]) -> str | _Sql:
        return self._join(parts, "||", "OR", FALSE_JP)

    def _join(self, parts: list[str | _Sql], jp: str, sql: str, empty: str) -> str | _Sql:
        if not parts:
            return empty
        if len(parts) == 1:
            return parts[0]
        if all(isinstance(p, str) for p in parts):
            return "(" + f" {jp} ".join(str(p) for p in parts) + ")"
        return _Sql("(" + f" {sql} ".join(self.sql(p) for p in parts) + ")")

    def negate(self, part: str | _Sql) -> str | _Sql:
        if isinstance(part, _Sql):
            return _Sql(f"(NOT {part.text})")
        return f"!({part})"

    def sql(self, part: str | _Sql) -> str:
        if isinstance(part, _Sql):
            return part.text
        if not self.vars_ref:
            self.vars_ref = self.params.add(self.vars, "jsonb")
        path = self.params.add(part, "jsonpath")
        return f"jsonb_path_match(doc, {path}, {self.vars_ref}, true)"


def plain_id(value: Any) -> bool:
    """An ``_id`` value that equality on the primary key answers (``_id = $n``)."""
    if isinstance(value, (Regex, re.Pattern, list)):
        return False
    return not (isinstance(value, dict) and any(k.startswith("$") for k in value))


@dataclass(frozen=True, slots=True)
class _Sql:
    text: str


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" not in value
    if kind is float:
        return math.isfinite(value)
    return kind is int or kind is bool


def compile_filter(
    spec: dict[str, Any] | None, params: Params, indexed: dict[str, str] | None = None
) -> str:
    """A SQL boolean expression over the columns ``_id`` and ``doc``; TRUE when empty.

    ``indexed`` maps a key path to the expression an engine index holds (catalog.py).
    For equality, ``$in`` and numeric or date ranges on such a path the result also
    carries an index-friendly condition, ``(<expr> = $v OR <path meets an array>)``:
    implied by the exact predicate, so it only narrows the rows the engine looks at,
    through a BitmapOr of the expression index and the partial multikey index.
    """
    if not spec:
        return "TRUE"
    start = len(params.values)
    shape = _shape(spec, indexed, start)
    if shape is not None:
        hit = _SHAPES.get(shape)
        if hit is not None:
            return _replay(hit, list(spec.values()), params)
    compiler = _Compiler(params)
    tree = compiler.conjunction(compiler.document(spec, "$", top=True))
    if isinstance(tree, str) and tree == TRUE_JP:
        return "TRUE"
    exact = compiler.sql(tree)
    hints = _index_conditions(spec, params, indexed or {})
    sql = " AND ".join([*hints, exact])
    if shape is not None:
        _remember(shape, sql, list(spec.values()), params.values[start:], compiler.vars)
    return sql


# Same-shaped filters, compiled once. A shape is a filter of plain equalities on scalar
# values (``{_id: "d1"}``, ``{k: "x", n: 5}``): its SQL text depends only on the field
# names, the value types and the indexes, and each of its parameters is either fixed
# text (a jsonpath), one of the filter's values, or the jsonpath variables built from
# them. ``_remember`` works that out from a real compilation, by object identity, and
# gives up (no caching) whenever it is ambiguous.
_SCALARS = (str, int, float, bool)
_MAX_SHAPES = 2048
_SHAPES: dict[tuple[Any, ...], tuple[str, list[tuple[str, Any]]]] = {}


class _OneColumn(Params):
    """Parameters that are all one column (``column``) holding ``form``: ``add`` gives
    the column's name, and ``fits`` stays True while every value added is ``form``, as
    ``jsonb``."""

    def __init__(self, form: Any, column: str) -> None:
        super().__init__()
        self.form = form
        self.column = column
        self.fits = True

    def add(self, value: Any, cast: str) -> str:
        if cast != "jsonb" or type(value) is not type(self.form) or value != self.form:
            self.fits = False
        self.values.append(value)
        return self.column


def equality_branches(
    path: str, value: Any, indexed: dict[str, str], column: str
) -> tuple[str, str] | None:
    """The condition ``compile_filter`` makes of ``{path: value}`` (a plain scalar
    equality on an indexed path), with ``column`` (a jsonb column or parameter holding
    the value's query form) in place of each parameter, split in two disjoint halves
    whose union is its matches: the documents whose indexed expression is the value
    (one btree index scan) and those where the path meets an array (the partial
    multikey index). None for any other filter, or when a parameter is not that value.

    A ``UNION ALL`` of the two (lookups.equal_union) under a ``LIMIT`` costs the engine
    about what ``<expr> = $1`` alone costs: a plain index scan, and the array half only
    runs when the scalar half did not fill the limit (the BitmapOr of both indexes that
    the single condition takes cost it about 10 µs more per find). Disjoint: a path
    whose expression equals a scalar meets no array on the way (``->`` of a key on an
    array is NULL), and ``COALESCE(<expr>, 'null')`` (unique indexes) equals a scalar
    other than null only where the expression does."""
    expr = indexed.get(path)
    spec = {path: value}
    if expr is None or path == "_id" or _shape(spec, indexed, 0) is None:
        return None
    from heliosdb.services.documents.catalog import array_predicate

    params = _OneColumn(query_form(value), column)
    compiler = _Compiler(params)
    tree = compiler.conjunction(compiler.document(spec, "$", top=True))
    if isinstance(tree, str) and tree == TRUE_JP:
        return None
    exact = compiler.sql(tree)
    conds, beyond = _sargable(expr, value, params)
    if len(conds) != 1 or beyond or not params.fits or compiler.vars:
        return None
    # A top-level field equal to the value matches (the exact condition is ``<expr> =
    # value OR <an array holding it>``): the scalar half is the index condition alone.
    scalar = conds[0] if "." not in path else f"{conds[0]} AND {exact}"
    return scalar, f"{array_predicate(path)} AND {exact}"


def plain_shape(spec: dict[str, Any]) -> tuple[Any, ...] | None:
    """What the SQL of a filter of plain equalities on scalars depends on besides the
    indexes (its field names and value types), or None for any other filter. Same-shaped
    filters with the same indexes compile to the same SQL, with the values in the same
    places."""
    return _shape(spec, None, 0)


def _shape(
    spec: dict[str, Any], indexed: dict[str, str] | None, start: int
) -> tuple[Any, ...] | None:
    key: list[Any] = [start]
    for name, value in spec.items():
        kind = type(value)
        if name.startswith("$") or kind not in _SCALARS:
            return None
        if (kind is str or kind is float) and query_form(value) is not value:
            return None  # its query form is a new object (NUL, a non-finite or big double)
        key.append((name, kind, indexed.get(name) if indexed else None))
    return tuple(key)


def _remember(
    shape: tuple[Any, ...],
    sql: str,
    leaves: list[Any],
    added: list[Any],
    variables: dict[str, Any],
) -> None:
    if len({id(v) for v in leaves}) != len(leaves):
        return  # two values are one object (small ints): identity cannot tell them apart
    where = {id(v): i for i, v in enumerate(leaves)}
    recipe: list[tuple[str, Any]] = []
    for value in added:
        if value is variables:
            names = [(name, where.get(id(v))) for name, v in variables.items()]
            if any(i is None for _, i in names):
                return
            recipe.append(("vars", names))
        elif id(value) in where:
            recipe.append(("leaf", where[id(value)]))
        elif isinstance(value, str):
            recipe.append(("text", value))
        else:
            return
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[shape] = (sql, recipe)


def _replay(hit: tuple[str, list[tuple[str, Any]]], leaves: list[Any], params: Params) -> str:
    sql, recipe = hit
    for kind, arg in recipe:
        if kind == "vars":
            params.values.append({name: leaves[i] for name, i in arg})
        elif kind == "leaf":
            params.values.append(leaves[arg])
        else:
            params.values.append(arg)
    return sql


_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_INFINITY_SQL = """'{"$numberDouble": "Infinity"}'::jsonb"""
_MINUS_INFINITY_SQL = """'{"$numberDouble": "-Infinity"}'::jsonb"""


def _index_conditions(spec: dict[str, Any], params: Params, indexed: dict[str, str]) -> list[str]:
    from heliosdb.services.documents.catalog import array_predicate

    # Kept even where the exact condition is already ``<expr> = $v OR <array holding
    # $v>`` (a top-level scalar equality): without this copy the engine estimates the
    # OR at the multikey predicate's default 0.5% of the table, and under a LIMIT (every
    # find_one) a sequential scan that stops at the first match then looks cheaper than
    # the index: 20 ms instead of 0.1 ms over 20,000 documents. ANDed with it, the
    # estimate is about one row and the plan is the BitmapOr of the two indexes.
    out = []
    for path, value in spec.items():
        if path == "_id":
            # only a range of numbers, dates or ObjectIds ({_id: {$gt: last}}, the
            # paging pattern): its exact test is a jsonpath filter that no index serves,
            # so without this the engine reads the primary key from its start (equality
            # and $in on _id are primary-key conditions already); an _id is no array
            if not (isinstance(value, dict) and any(op in _RANGE_SQL for op in value)):
                continue
            expr, arrays = "_id", ""
        else:
            found = indexed.get(path)
            if found is None:
                continue
            expr, arrays = found, f" OR {array_predicate(path)}"
        conds, beyond = _sargable(expr, value, params, object_ids=path == "_id")
        if conds:
            also = f" OR {expr} = {beyond}" if beyond else ""
            out.append(f"(({' AND '.join(conds)}){also}{arrays})")
    return out


def _index_value(value: Any, *, ranges: bool, object_ids: bool = False) -> Any:
    """The query form of a value an index condition may use, or None. ``object_ids``:
    ObjectId ranges too (their forms' hex strings sort alike in every collation)."""
    if isinstance(value, (Regex, re.Pattern)) or value is None:
        return None
    form = query_form(value)
    if isinstance(form, bool):
        return None if ranges else form
    if isinstance(form, NUMBER_FORMS):
        return form
    if isinstance(form, str):
        return None if ranges else form  # string order depends on collation: equality only
    if isinstance(form, dict) and len(form) == 1:
        key = next(iter(form))
        if key == "$date" or (key == "$oid" and (object_ids or not ranges)):
            return form
    return None


# A kind's far end for index conditions: [lower bound given] -> the other bound (_sargable)
_KIND_ENDS: dict[str, dict[bool, str]] = {
    "number": {False: "'-1e309'::jsonb"},
    "$date": {True: """'{"$date": 1e30}'::jsonb""", False: """'{"$date": -1e30}'::jsonb"""},
    "$oid": {True: """'{"$oid": "g"}'::jsonb""", False: """'{"$oid": ""}'::jsonb"""},
}


def _sargable(
    expr: str, value: Any, params: Params, *, object_ids: bool = False
) -> tuple[list[str], str]:
    """The index conditions for one path's filter ``value``, all of which it implies,
    and the query form of the infinity it may also match beyond them ('' for none):
    infinity for numeric lower bounds only, minus infinity for upper bounds only (an
    infinity is an object, beyond every number). Both bounds stay in one conjunction,
    so the engine scans the index over the range between them."""
    if not (isinstance(value, dict) and value and all(k.startswith("$") for k in value)):
        form = _index_value(value, ranges=False)
        return ([] if form is None else [f"{expr} = {params.add(form, 'jsonb')}"]), ""
    conds = []
    sides = set()
    kinds: dict[str, set[bool]] = {}
    for op, operand in value.items():
        if op == "$eq":
            form = _index_value(operand, ranges=False)
            if form is not None:
                conds.append(f"{expr} = {params.add(form, 'jsonb')}")
        elif op == "$in" and isinstance(operand, list) and operand:
            forms = [_index_value(v, ranges=False) for v in operand]
            if all(f is not None for f in forms):
                conds.append(f"{expr} = ANY({params.add(forms, 'jsonb[]')})")
        elif op in _RANGE_SQL:
            form = _index_value(operand, ranges=True, object_ids=object_ids)
            if form is None:
                continue
            conds.append(f"{expr} {_RANGE_SQL[op]} {params.add(form, 'jsonb')}")
            lower = op in ("$gt", "$gte")
            if isinstance(form, NUMBER_FORMS):
                sides.add(lower)
                if lower:
                    conds.append(f"{expr} < 'false'::jsonb")  # numbers sort below booleans
            kind = "number" if isinstance(form, NUMBER_FORMS) else next(iter(form))
            kinds.setdefault(kind, set()).add(lower)
    # the far end of a one-sided range's kind, so it scans no further than its kind:
    # numbers lie between every string and false (a finite number's form is above
    # -1e309), dates' and ObjectIds' forms between the constants
    for kind, given in kinds.items():
        if len(given) != 1 or (kind == "number" and given == {True}):
            continue  # both ends given, or a number's lower bound ('false' is its end)
        (lower,) = given
        conds.append(f"{expr} {'<' if lower else '>'} {_KIND_ENDS[kind][lower]}")
    beyond = ""
    if len(sides) == 1:
        beyond = _INFINITY_SQL if True in sides else _MINUS_INFINITY_SQL
    return conds, beyond


# MongoDB's order of types, for ORDER BY over the query form of a field. Fractions of a
# rank order what the JSONB form would not (it is only computed for those values, so
# other sorts pay nothing): NaN below every number, then minus infinity, the JSON
# numbers, infinity; timestamps by seconds then increment (JSONB compares the member
# "i" before "t"); binary data by length then subtype (then by base64 text: not
# MongoDB's byte order).
TYPE_RANK = (
    "CASE jsonb_typeof({x}) WHEN 'null' THEN 2 WHEN 'number' THEN 3 WHEN 'string' THEN 4 "
    "WHEN 'array' THEN 6 WHEN 'boolean' THEN 9 WHEN 'object' THEN CASE "
    "WHEN {x} ? '$oid' THEN 8 WHEN {x} ? '$date' THEN 10 WHEN {x} ? '$binary' THEN 7 + ("
    "octet_length(decode({x} -> '$binary' ->> 'base64', 'base64')) * 256"
    " + get_byte(decode({x} -> '$binary' ->> 'subType', 'hex'), 0)) / 1099511627776.0 "
    "WHEN {x} ? '$minKey' THEN 1 WHEN {x} ? '$maxKey' THEN 13 WHEN {x} ? '$timestamp' THEN 11 + ("
    "({x} -> '$timestamp' ->> 't')::numeric * 4294967296 + ({x} -> '$timestamp' ->> 'i')::numeric)"
    " / 18446744073709551616.0 "
    "WHEN {x} ? '$regex' THEN 12 WHEN {x} ? '$numberDouble' THEN "
    "CASE {x} ->> '$numberDouble' WHEN 'NaN' THEN 2.5 WHEN '-Infinity' THEN 2.75 ELSE 3.25 END "
    "ELSE 5 END ELSE 2 END"
)


# the keys of the typed values TYPE_RANK ranks apart from documents
_TYPED_ARRAY = "'{$oid,$date,$binary,$minKey,$maxKey,$timestamp,$regex,$numberDouble}'::text[]"


def plain_document(x: str) -> str:
    """SQL: the jsonb expression ``x`` is an embedded document's query form (TYPE_RANK's
    5: an object that is no typed value's form)."""
    return f"(jsonb_typeof({x}) = 'object' AND NOT {x} ?| {_TYPED_ARRAY})"


def compile_sort(spec: dict[str, Any] | None, params: Params) -> str:
    """An ORDER BY list in MongoDB's order ('' when there is nothing to sort by)."""
    return compile_order(spec, params).terms


@dataclass
class Order:
    """A sort as SQL: ``terms``, the ORDER BY list in MongoDB's order ('' for none), and
    ``by_id``, the same list with ``_id`` as the bare primary key column, which the
    primary key index serves, when the sort leads with ``_id`` ('' otherwise); see
    ``sorted_select`` for when the two orders agree."""

    terms: str
    by_id: str = ""

    def then_id(self) -> Order:
        """The same order with ``_id`` last to break ties (a total order, streaming.py):
        the bare column, which orders each kind of ``_id`` as MongoDB does and ties only
        rows of equal sort keys, so any total order of ``_id`` does."""
        if not self.terms:
            return Order("_id", "")
        return Order(f"{self.terms}, _id", f"{self.by_id}, _id" if self.by_id else "")

    def select(
        self, columns: str, target: str, where: str, offset: str = "", limit: str = ""
    ) -> str:
        """``SELECT columns FROM target WHERE where`` in this order, then ``offset`` and
        ``limit`` (bigint placeholders, '' for none), as one statement."""
        if self.by_id:
            return sorted_select(columns, target, where, self, offset, limit)
        sql = f"SELECT {columns} FROM {target} WHERE {where}"
        if self.terms:
            sql += f" ORDER BY {self.terms}"
        if offset:
            sql += f" OFFSET {offset}"
        return sql + f" LIMIT {limit}" if limit else sql

    def first_id(self, target: str, where: str, *, lock: bool = False) -> str:
        """SQL: the ``_id`` of the first row of ``target`` matching ``where`` in this
        order (``by_id`` set), by the primary key when that is MongoDB's order, as
        sorted_select picks; ``lock``: the row locked (FOR UPDATE), which the UNION of
        sorted_select cannot do, so here each branch is a subquery of its own."""

        def rows(same: int, mixed: int) -> str:
            return (
                f"(SELECT CASE WHEN {_SAME_KIND} THEN {same} ELSE {mixed} END "
                f"FROM ({_ends(target)}) AS e_)"
            )

        pick = f"SELECT _id FROM {target} WHERE {where} ORDER BY"
        locked = " FOR UPDATE" if lock else ""
        return (
            f"COALESCE(({pick} {self.by_id} LIMIT {rows(1, 0)}{locked}), "
            f"({pick} {self.terms} LIMIT {rows(0, 1)}{locked}))"
        )


def compile_order(spec: dict[str, Any] | None, params: Params) -> Order:
    """The ``Order`` of a sort spec (compile_sort's terms, and ``by_id``)."""
    if not spec:
        return Order("")
    terms = []
    by_id = ""
    for key, direction in spec.items():
        if isinstance(direction, dict):
            if direction.get("$meta"):
                continue
            raise bad_value(f"invalid sort direction for {key}")
        if direction not in (1, -1, 1.0, -1.0):
            raise bad_value("$sort key ordering must be 1 (for ascending) or -1 (for descending)")
        order = "ASC" if direction > 0 else "DESC"
        if key == "$natural":  # the order rows are stored in, as MongoDB's natural order
            terms.append(f"ctid {order}")
            continue
        if key == "_id":
            by_id = by_id or ("" if terms else f"_id {order}")
            terms.append(_ID_ORDER.format(order=order))
            continue
        parts = key.split(".")
        path = params.add(parts, "text[]")
        # an array on the way to the value leaves ``doc #> path`` null
        arrays = [
            f"jsonb_typeof(doc #> {params.add(parts[:i], 'text[]')}) = 'array'"
            for i in range(1, len(parts))
        ]
        through = None
        if len(parts) == 2:  # an array of documents and a field of theirs, in SQL
            through = (f"(doc -> {params.add(parts[0], 'text')})", params.add(parts[1], "text"))
        terms.append(order_by(f"(doc #> {path})", order, path, arrays, through))
    if by_id:
        by_id = ", ".join([by_id, *terms[1:]])
    return Order(", ".join(terms), by_id)


# MongoDB's order of ``_id``s (order_by's, shorter: an ``_id`` is never an array nor
# missing), for a statement that cannot take the primary key's (sorted_select)
_ID_ORDER = (
    "("
    + TYPE_RANK.format(x="(doc -> '_id')")
    + ") {order}, (CASE WHEN "
    + plain_document("(doc -> '_id')").replace("{", "{{").replace("}", "}}")
    + " THEN COALESCE(helios_documents.sort_key(doc -> '_id', bson, '{{_id}}'), doc -> '_id')"
    " ELSE doc -> '_id' END) {order}"
)

# The kinds of ``_id`` whose JSONB order (the primary key's) is MongoDB's among their own
# values: strings (the engine's C.UTF-8 collation is code point order, MongoDB's binary
# order, bsonform.query_string), numbers (a JSON number compares by value, whichever BSON
# type it came from; NaN and the infinities are objects, no such kind), booleans, null,
# ObjectIds ({"$oid": <24 lowercase hex digits>}, by the hex text: byte order) and dates
# ({"$date": <millis>}, by the number, negative ones too). Not embedded documents (JSONB
# compares objects by their number of pairs first, then keys by length), binary data
# (by base64 text, not length first) or timestamps (by "i" before "t"). Any other ``_id``
# has no kind (NULL).
_ID_KIND = (
    "CASE jsonb_typeof({x}) WHEN 'object' THEN CASE "
    "WHEN jsonb_typeof({x} -> '$oid') = 'string' AND {x} - '$oid' = '{{}}'::jsonb THEN 'oid' "
    "WHEN jsonb_typeof({x} -> '$date') = 'number' AND {x} - '$date' = '{{}}'::jsonb "
    "THEN 'date' END ELSE jsonb_typeof({x}) END"
)

_SAME_KIND = f"COALESCE({_ID_KIND.format(x='e_.lo')} = {_ID_KIND.format(x='e_.hi')}, false)"


def _ends(target: str) -> str:
    """SQL: the row (lo, hi) of the smallest and largest ``_id`` of ``target``."""
    return (
        f"SELECT (SELECT _id FROM {target} ORDER BY _id LIMIT 1) AS lo, "
        f"(SELECT _id FROM {target} ORDER BY _id DESC LIMIT 1) AS hi OFFSET 0"
    )


def sorted_select(
    columns: str, target: str, where: str, order: Order, offset: str, limit: str
) -> str:
    """``SELECT columns FROM target WHERE where`` ordered by ``order.by_id`` when that is
    MongoDB's order, else by ``order.terms`` (filters.order_by), then ``offset`` and
    ``limit``, in one statement (one snapshot).

    The primary key orders ``_id``s by JSONB's order of types (null < strings < numbers
    < booleans < objects), not MongoDB's (null < numbers < strings < objects < binary <
    ObjectId < booleans < dates). JSONB's order keeps each JSON type together, and among
    objects of one pair, each key together; so when the smallest and the largest ``_id``
    of the collection are of one kind of ``_ID_KIND``, every ``_id`` between them is
    too, and the primary key's order is MongoDB's. Two probes of the primary key tell
    (a CTE read once), and each branch's LIMIT is 0 when the answer is not its own: a
    Limit of 0 returns before it reads anything below it (a one-time filter in WHERE
    would not: it sits below the Gather of a parallel sort, whose workers start
    anyway, 15 ms). So the usual collection, all of one kind, keeps its index scan
    (``sort({_id: 1}).limit(n)``, paging by ``{_id: {$gt: last}}``), and a collection of
    mixed kinds is sorted in MongoDB's order (a sort of every match).

    OFFSET and LIMIT are subqueries anyway: planning this statement costs the engine
    about ten times running it, and with plain placeholders it plans every run again
    (its custom plans, costed with the limit, look cheaper than the generic one); this
    way both costings assume a tenth of the rows, so the generic plan is kept, and a
    tenth of the rows still costs less through the index than a sort of them all."""
    skip = f" OFFSET (SELECT {offset})" if offset else ""
    rows = limit or "NULL"  # NULL: no limit
    select = f"SELECT {columns} FROM {target} WHERE {where}"
    return (
        f"WITH same_kind_ AS MATERIALIZED (SELECT {_SAME_KIND} AS k "
        f"FROM ({_ends(target)}) AS e_) "
        f"({select} ORDER BY {order.by_id}{skip} "
        f"LIMIT (SELECT CASE WHEN k THEN {rows} ELSE 0 END FROM same_kind_)) UNION ALL "
        f"({select} ORDER BY {order.terms}{skip} "
        f"LIMIT (SELECT CASE WHEN k THEN 0 ELSE {rows} END FROM same_kind_))"
    )


def order_by(
    x: str,
    order: str,
    path: str = "",
    arrays: list[str] | None = None,
    through: tuple[str, str] | None = None,
) -> str:
    """ORDER BY terms putting the values of the jsonb expression ``x`` in MongoDB's order
    (``order``: ASC or DESC): TYPE_RANK, then the JSONB form. With ``path`` (``x`` is
    ``doc #> path``, the row's ``doc`` and ``bson`` at hand), MongoDB's sort key in
    place of the value (values.path_sort_key): a row holding an array there sorts by
    its smallest element (the largest for DESC; an empty array ranks 1.5, below null),
    and a row missing the value where one of ``arrays`` (SQL tests of the path's
    prefixes) finds an array on the way by catalog.ORDER_DDL's ``array_sort_key`` (for a
    path of two parts, ``through``: the SQL of its first value and the second name, by
    the same rule written in SQL, which costs far less than the PL/pgSQL walk); an
    embedded document sorts by its fields in their stored order (``sort_key``, in place
    of the JSONB form, which orders object keys by length and compares the number of
    keys first). These sit in the branches of the type tests the order makes anyway
    (a missing value on a dotted path pays a test of the prefixes); the subqueries
    make the statement parallel-restricted (SQL functions in their place cost array
    rows far more: docs/mongodb.md)."""
    if not path:
        return f"{TYPE_RANK.format(x=x)} {order}, {x} {order}"
    picked = _pick(f"SELECT jsonb_array_elements({x})", order)
    rank = TYPE_RANK.format(x=x).replace(
        _ARRAY_RANK, f"WHEN 'array' THEN COALESCE(({picked} ->> 0)::numeric, 1.5)", 1
    )
    fields = f"COALESCE(helios_documents.sort_key({x}, bson, {path}), {x})"
    value = (
        f"CASE jsonb_typeof({x}) WHEN 'array' THEN COALESCE({picked} -> 1, 'null'::jsonb) "
        f"WHEN 'object' THEN CASE WHEN {x} ?| {_TYPED_ARRAY} THEN {x} ELSE {fields} END "
        f"ELSE {x} END"
    )
    if arrays:
        walked = f"helios_documents.array_sort_key(doc, {path}, {str(order == 'DESC').lower()})"
        if through:
            walked = _pick(_ELEMENT_KEYS.format(a=through[0], name=through[1]), order)
        on_the_way = " OR ".join(arrays)
        rank = rank[: -len(_NO_VALUE_RANK)] + (
            f"ELSE CASE WHEN {on_the_way} THEN ({walked} ->> 0)::numeric ELSE 2 END END"
        )
        value = f"CASE WHEN {x} IS NULL AND ({on_the_way}) THEN {walked} -> 1 ELSE {value} END"
    return f"({rank}) {order}, ({value}) {order}"


def _pick(keys: str, order: str) -> str:
    """SQL: ``[rank, value]`` of the first of the keys the query ``keys`` yields in
    ``order`` (SQL NULL, an empty array's key: rank 1.5, below null)."""
    rank = f"CASE WHEN k_ IS NULL THEN 1.5 ELSE {TYPE_RANK.format(x='k_')} END"
    return (
        f"(SELECT jsonb_build_array(r_, k_) FROM (SELECT k_, {rank} AS r_ FROM ({keys}) "
        f"AS q_(k_)) AS s_ ORDER BY r_ {order}, k_ {order} LIMIT 1)"
    )


# The sort keys of a path ``a.b`` whose ``a`` ({a}) is an array (values.path_sort_key):
# each element's ``b`` (its elements if an array, NULL if an empty one), null for an
# element that is no document or has no ``b``, null for an empty ``a``.
_ELEMENT_KEYS = (
    "SELECT c_.k_ FROM jsonb_array_elements({a}) AS e_(v_) CROSS JOIN LATERAL ("
    "SELECT jsonb_array_elements(v_ -> {name}) WHERE jsonb_typeof(v_ -> {name}) = 'array' "
    "UNION ALL SELECT NULL::jsonb WHERE v_ -> {name} = '[]'::jsonb "
    "UNION ALL SELECT COALESCE(v_ -> {name}, 'null'::jsonb) "
    "WHERE jsonb_typeof(v_ -> {name}) IS DISTINCT FROM 'array') AS c_(k_) "
    "UNION ALL SELECT 'null'::jsonb WHERE {a} = '[]'::jsonb"
)

# TYPE_RANK's branches for an array and for no value (SQL NULL), which order_by widens
_ARRAY_RANK = "WHEN 'array' THEN 6"
_NO_VALUE_RANK = "ELSE 2 END"
assert _ARRAY_RANK in TYPE_RANK and TYPE_RANK.endswith(_NO_VALUE_RANK)


def field_conditions(spec: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """A filter's (field, condition) pairs, those inside top-level ``$and`` clauses
    included, in their order (what an upsert and a positional ``$`` read of it)."""
    out: list[tuple[str, Any]] = []
    for key, value in (spec or {}).items():
        if key == "$and" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    out.extend(field_conditions(item))
        elif not key.startswith("$"):
            out.append((key, value))
    return out


def equality_fields(spec: dict[str, Any] | None) -> dict[str, Any]:
    """The fields an upsert takes from its filter: plain equalities and $eq."""
    out: dict[str, Any] = {}
    for key, value in field_conditions(spec):
        if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            if "$eq" in value:
                out[key] = value["$eq"]
        elif not isinstance(value, (Regex, re.Pattern)):
            out[key] = value
    return out


class _ExprCompiler:
    """``$expr`` (aggregation expressions in a filter) compiled to SQL over the query form.

    Field paths become ``doc #> path``; literals become parameters. Comparisons follow
    MongoDB's order across types (type rank first, then the value), missing fields
    compare as null. Supported: $eq $ne $gt $gte $lt $lte $and $or $not $in, and
    $add $subtract $multiply $divide over numbers; anything else is NotImplemented.
    """

    _CMP = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
    _ARITH = {"$add": "+", "$subtract": "-", "$multiply": "*", "$divide": "/"}

    def __init__(self, params: Params) -> None:
        self.params = params

    def boolean(self, expr: Any) -> str:
        if isinstance(expr, dict) and len(expr) == 1:
            ((op, arg),) = expr.items()
            if op in ("$and", "$or") and isinstance(arg, list):
                joiner = " AND " if op == "$and" else " OR "
                return "(" + (joiner.join(self.boolean(a) for a in arg) or "TRUE") + ")"
            if op == "$not":
                inner = arg[0] if isinstance(arg, list) and len(arg) == 1 else arg
                return f"(NOT {self.boolean(inner)})"
        value = self.value(expr)
        # Truthiness: false, null, missing and 0 are false.
        return (
            f"(COALESCE({value}, 'null'::jsonb) NOT IN ('false'::jsonb, 'null'::jsonb, '0'::jsonb))"
        )

    def value(self, expr: Any) -> str:
        if isinstance(expr, str) and expr.startswith("$$"):
            raise invalid(f"$expr variable {expr} is not supported", kind="not_implemented")
        if isinstance(expr, str) and expr.startswith("$"):
            return f"(doc #> {self.params.add(expr[1:].split('.'), 'text[]')})"
        if isinstance(expr, dict) and len(expr) == 1 and next(iter(expr)).startswith("$"):
            ((op, arg),) = expr.items()
            if op == "$literal":
                return self.params.add(query_form(arg), "jsonb")
            if op in self._CMP and isinstance(arg, list) and len(arg) == 2:
                a, b = (f"COALESCE({self.value(x)}, 'null'::jsonb)" for x in arg)
                sql = self._CMP[op]
                left = f"ROW({TYPE_RANK.format(x=a)}, {a})"
                right = f"ROW({TYPE_RANK.format(x=b)}, {b})"
                return f"to_jsonb({left} {sql} {right})"
            if op in self._ARITH and isinstance(arg, list) and len(arg) >= 2:
                terms = [f"({self.value(x)})::numeric" for x in arg]
                if op in ("$subtract", "$divide") and len(terms) != 2:
                    raise bad_value(f"{op} takes exactly 2 arguments")
                joined = f" {self._ARITH[op]} ".join(
                    f"NULLIF({t}, 0)" if op == "$divide" and i else t for i, t in enumerate(terms)
                )
                return f"to_jsonb({joined})"
            if op in ("$and", "$or", "$not"):
                return f"to_jsonb({self.boolean(expr)})"
            if op == "$in" and isinstance(arg, list) and len(arg) == 2:
                item, array = (self.value(x) for x in arg)
                return f"to_jsonb(jsonb_build_array({item}) <@ {array})"
            raise invalid(f"$expr operator {op} is not supported", kind="not_implemented")
        if isinstance(expr, list) and not any(
            isinstance(x, (dict, list)) or (isinstance(x, str) and x.startswith("$")) for x in expr
        ):
            return self.params.add(query_form(expr), "jsonb")
        if isinstance(expr, (dict, list)):
            raise invalid("$expr documents and arrays are not supported", kind="not_implemented")
        return self.params.add(query_form(expr), "jsonb")
