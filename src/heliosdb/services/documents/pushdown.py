"""The part of an aggregation pipeline the engine runs.

A leading run of ``$match``, then ``$sort``/``$skip``/``$limit``, become one SELECT; a
``$group`` right after, keyed by constants or field paths and using only ``$sum``,
``$avg``, ``$min``, ``$max`` and ``$count``, becomes its GROUP BY; a ``$count`` becomes
count(*). The rest of the pipeline runs in Python (pipeline.py). Such a $group's rows
are read a batch at a time in the order of their keys (``group_rows``, streaming.py).

A ``$lookup`` with a sub-pipeline runs that pipeline's leading part here too, for a
chunk of input documents at once (``lookup_join``, below).
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.services.documents import bsonform
from heliosdb.services.documents.catalog import CATALOG_SCHEMA, key_expression, wide_sql
from heliosdb.services.documents.expression_scope import truthy
from heliosdb.services.documents.filters import (
    TYPE_RANK,
    Params,
    compile_filter,
    compile_order,
    compile_sort,
    order_by,
    plain_document,
)
from heliosdb.services.documents.pipeline import stage_name
from heliosdb.services.documents.values import MISSING

# A double's query form keeps its decimal point (2.0 is the JSONB number 2.0, scale 1),
# and a numeric sum has the largest scale of its terms: a sum with a scale above zero
# had a double in it, so MongoDB's result is a double.
_NUMBER = "CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric END"
# A group's key or $min/$max value holding an object of two or more keys other than a
# regex's form: an embedded document whose field order it would need (a scalar: one test).
_UNORDERED = (
    "(jsonb_typeof({x}) IN ('object', 'array') AND EXISTS (SELECT 1 FROM "
    "jsonb_path_query({x}, 'strict $.**') AS o(v) WHERE jsonb_typeof(o.v) = 'object' "
    "AND NOT o.v ? '$regex' AND (SELECT count(*) FROM jsonb_object_keys(o.v)) > 1))"
)


@dataclass(slots=True)
class Plan:
    sql: str
    params: list[Any]
    remaining: list[dict[str, Any]]
    decode: Callable[[list[Any]], list[dict[str, Any]]] = field(
        default=lambda rows: [bsonform.decode(r["bson"]) for r in rows]
    )
    # A $group the engine ran whose key met an embedded document of two or more fields
    # (its row's column "u"): JSONB kept neither their order nor the groups they make
    # apart, so the caller runs this plan instead (the $group in Python).
    fallback: Plan | None = None


@dataclass(slots=True)
class Leading:
    """What a pipeline's leading ``$match``es, ``$sort`` and ``$skip``/``$limit`` ask,
    as a find would (0: none), and where the rest of the pipeline starts."""

    query: dict[str, Any]
    sort: dict[str, Any] | None
    skip: int
    limit: int
    rest: int  # the index of the first stage not read


def leading(stages: list[dict[str, Any]]) -> Leading:
    conditions: list[dict[str, Any]] = []
    i = 0
    while i < len(stages) and stage_name(stages[i]) == "$match":
        conditions.append(stages[i]["$match"])
        i += 1
    query = conditions[0] if len(conditions) == 1 else ({"$and": conditions} if conditions else {})
    found = Leading(query, None, 0, 0, i)
    if i < len(stages) and stage_name(stages[i]) == "$sort":
        spec = stages[i]["$sort"]
        if isinstance(spec, dict) and all(isinstance(v, (int, float)) for v in spec.values()):
            found.sort = spec
            i += 1
    offset_done = False
    while i < len(stages) and stage_name(stages[i]) in ("$skip", "$limit"):
        name = stage_name(stages[i])
        value = stages[i][name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            break
        if name == "$skip" and not offset_done and not found.limit:
            found.skip = value
            offset_done = True
        elif name == "$limit" and not found.limit and value > 0:
            found.limit = value
        else:
            break
        i += 1
    found.rest = i
    return found


def plan_pipeline(
    target: str,
    stages: list[dict[str, Any]],
    indexed: dict[str, str] | None = None,
    namespace: tuple[str, str] | None = None,
) -> Plan:
    """The engine's part of ``stages`` over the table ``target``; ``namespace`` (its
    database and collection) lets a $group skip the BSON type probe where the catalog
    says the collection never held a long or a Decimal128 (catalog's ``wide``)."""
    params = Params()
    lead = leading(stages)
    where = compile_filter(lead.query, params, indexed)
    columns = "_id, bson, doc"
    if params.recheck:
        # a superset (filters.py): pipeline.py runs every stage, the $match ones again
        return Plan(f"SELECT {columns} FROM {target} WHERE {where}", params.values, stages)
    order = compile_order(lead.sort, params)
    offset = params.add(lead.skip, "bigint") if lead.skip else ""
    limit = params.add(lead.limit, "bigint") if lead.limit else ""
    sql = order.select(columns, target, where, offset, limit)
    i = lead.rest
    if i < len(stages) and stage_name(stages[i]) == "$count":
        name = stages[i]["$count"]
        if isinstance(name, str) and name:
            return Plan(
                f"SELECT count(*) AS n FROM ({sql}) AS s HAVING count(*) > 0",
                params.values,
                stages[i + 1 :],
                _count_rows(name),
            )
    if i < len(stages) and stage_name(stages[i]) == "$group":
        trial = Params(list(params.values))
        grouped = _group(sql, stages[i]["$group"], trial, namespace)
        if grouped is not None:
            text, decode, inexact = grouped
            fallback = Plan(sql, params.values, stages[i:])
            return Plan(
                f"SELECT g.*, {inexact} AS u FROM ({text}) AS g",
                trial.values,
                stages[i + 1 :],
                decode,
                fallback,
            )
    return Plan(sql, params.values, stages[i:])


class Unordered(Exception):
    """An engine-run $group met an embedded document of two or more fields in a key or
    $min/$max (``Plan.fallback``): the $group runs in Python instead."""


def group_rows(plan: Plan) -> Callable[[int, int], tuple[str, list[Any]]]:
    """An engine-run $group's rows (``plan``, with its ``fallback``) in a total order,
    the order of their keys, from ``offset``, ``count`` of them (0: all), for
    streaming.Stream: each row also says (``uu``) whether any row of the whole result
    needs the fallback, so the first read tells."""

    def statement(offset: int, count: int) -> tuple[str, list[Any]]:
        values = list(plan.params)
        sql = f"SELECT r.*, bool_or(r.u) OVER () AS uu FROM ({plan.sql}) AS r ORDER BY r.k"
        if offset:
            values.append(offset)
            sql += f" OFFSET ${len(values)}::bigint"
        if count:
            values.append(count)
            sql += f" LIMIT ${len(values)}::bigint"
        return sql, values

    return statement


def group_decoder(plan: Plan) -> Callable[[list[Any]], list[dict[str, Any]]]:
    """``plan.decode`` for ``group_rows``'s rows, raising Unordered when the result needs
    the fallback (only the first read can still take it: a later read that finds such a
    key, written since, fails the aggregate)."""
    first = True

    def decode(rows: list[Any]) -> list[dict[str, Any]]:
        nonlocal first
        if rows and rows[0]["uu"]:
            if first:
                raise Unordered
            raise HeliosError(
                ErrorCode.CONFLICT,
                "a $group read in batches met a key it must group in order, written "
                "after its first batch: run the aggregate again",
            )
        first = False
        return plan.decode(rows)

    return decode


def _count_rows(name: str) -> Callable[[list[Any]], list[dict[str, Any]]]:
    return lambda rows: [{name: int(r["n"])} for r in rows]


def _path(expr: Any) -> str | None:
    if isinstance(expr, str) and expr.startswith("$") and not expr.startswith("$$"):
        return expr[1:]
    return None


class _Values:
    """Each field path a group reads, taken out of the document once per row (a fenced
    subquery: the engine would otherwise look the path up again for every mention).
    A path is JSON null where the field is missing, or SQL NULL when ``raw``.

    ``typed`` paths also get the BSON type of their element (catalog's ``bson_type``)
    where the row's stored bytes hold a long or a Decimal128 element of the path's last
    name (the number types the query form does not keep), else SQL NULL: two byte
    searches a row, the walk through the BSON only where one finds something; none at
    all where the catalog says the collection ``namespace`` never held such a number
    (catalog.wide_sql: read once per statement)."""

    def __init__(self, params: Params, namespace: tuple[str, str] | None) -> None:
        self.params = params
        self.namespace = namespace
        self.columns: dict[tuple[str, bool], str] = {}
        self.types: dict[str, str] = {}

    def ref(self, path: str, *, raw: bool = False) -> str:
        column = self.columns.get((path, raw))
        if column is None:
            column = self.columns[(path, raw)] = f"v{len(self.columns)}"
        return column

    def typed(self, path: str) -> str:
        column = self.types.get(path)
        if column is None:
            column = self.types[path] = f"t{len(self.types)}"
        return column

    def select(self, base: str) -> str:
        if not self.columns:
            return base
        terms = []
        for (path, raw), column in self.columns.items():
            value = f"s.doc #> {self.params.add(path.split('.'), 'text[]')}"
            terms.append(
                f"{value} AS {column}" if raw else f"COALESCE({value}, 'null'::jsonb) AS {column}"
            )
        wide = wide_sql(*self.namespace, self.params) if self.namespace and self.types else ""
        for path, column in self.types.items():
            parts = path.split(".")
            name = parts[-1].encode() + b"\x00"
            hints = " OR ".join(
                f"position({self.params.add(bytes([kind]) + name, 'bytea')} IN s.bson) > 0"
                for kind in (_LONG, _DECIMAL)
            )
            walk = f"{CATALOG_SCHEMA}.bson_type(s.bson, {self.params.add(parts, 'text[]')})"
            skip = f"WHEN NOT {wide} THEN NULL " if wide else ""
            terms.append(f"CASE {skip}WHEN {hints} THEN {walk} END AS {column}")
        return f"SELECT {', '.join(terms)} FROM ({base}) AS s OFFSET 0"


# BSON element types (bsonspec.org) whose values the query form holds as plain numbers
_LONG = 0x12
_DECIMAL = 0x13


@dataclass(slots=True)
class _Accumulated:
    name: str  # the output field
    column: str
    kind: str  # "int", "long", "float" (a constant's count), "$sum", "$avg", "json"
    longs: str | None = None  # the column that is 18 (_LONG) where a long was summed


def _group(
    base: str, spec: Any, params: Params, namespace: tuple[str, str] | None = None
) -> tuple[str, Callable[[list[Any]], list[dict[str, Any]]], str] | None:
    """The SQL of a $group, the decoder of its rows, and the SQL condition on a row
    ``g`` under which the group must run in Python instead (``Plan.fallback``): a key or
    $min/$max met an embedded document (``_UNORDERED``), or a number type the query form
    does not keep was in an accumulator's input (a Decimal128: exact sums and averages,
    and the stored value of a $min/$max; a long that a $min/$max may have picked)."""
    if not isinstance(spec, dict) or "_id" not in spec:
        return None
    values = _Values(params, namespace)
    key = spec["_id"]
    key_sql: str | None
    key_fields: list[str] | None = None
    if _path(key) is not None:
        key_sql = values.ref(_path(key) or "")
    elif (
        isinstance(key, dict)
        and key
        and not any(name.startswith("$") for name in key)  # an operator, not fields
        and all(_path(v) for v in key.values())
    ):
        key_fields = list(key)
        # A missing field is left out of the key document (MongoDB's rule for an
        # expression object): each part is [] when missing, else [value].
        parts = [values.ref(_path(v) or "", raw=True) for v in key.values()]
        key_sql = (
            "jsonb_build_array("
            + ", ".join(
                f"CASE WHEN {p} IS NULL THEN '[]'::jsonb ELSE jsonb_build_array({p}) END"
                for p in parts
            )
            + ")"
        )
    elif isinstance(key, (dict, list)) or (isinstance(key, str) and key.startswith("$")):
        return None
    else:
        key_sql = None
    columns: list[str] = []
    accumulated: list[_Accumulated] = []
    inexact = [_UNORDERED.format(x="g.k")] if key_sql else []
    widest: dict[str, str] = {}

    def wide(path: str) -> str:
        """The column of the widest of a long (18) and a Decimal128 (19) in the group's
        values at ``path`` (NULL: neither), one aggregate however many accumulators
        read the path."""
        column = widest.get(path)
        if column is None:
            typed = values.typed(path)
            column = widest[path] = f"w{len(widest)}"
            columns.append(
                f"max({typed}) FILTER (WHERE {typed} IN ({_LONG}, {_DECIMAL})) AS {column}"
            )
            inexact.append(f"COALESCE(g.{column} = {_DECIMAL}, false)")
        return column

    for index, (name, acc) in enumerate(spec.items()):
        if name == "_id":
            continue
        if not isinstance(acc, dict) or len(acc) != 1:
            return None
        ((op, expr),) = acc.items()
        column = f"a{index}"
        path = _path(expr)
        if op == "$count" and expr == {}:
            columns.append(f"count(*) AS {column}")
            accumulated.append(_Accumulated(name, column, "int"))
        elif op == "$sum" and isinstance(expr, (int, float)) and not isinstance(expr, bool):
            columns.append(f"count(*) * {params.add(expr, 'numeric')} AS {column}")
            kind = (
                "float" if isinstance(expr, float) else "long" if isinstance(expr, Int64) else "int"
            )
            accumulated.append(_Accumulated(name, column, kind))
        elif op in ("$sum", "$avg") and path is not None:
            x = values.ref(path)
            fn = "sum" if op == "$sum" else "avg"
            columns.append(f"{fn}({_NUMBER.format(x=x)}) AS {column}")
            accumulated.append(_Accumulated(name, column, op, wide(path)))
        elif op in ("$min", "$max") and path is not None:
            x = values.ref(path)
            order = "ASC" if op == "$min" else "DESC"
            columns.append(
                f"(array_agg({x} ORDER BY {order_by(x, order)}) "
                f"FILTER (WHERE jsonb_typeof({x}) <> 'null'))[1] AS {column}"
            )
            longs = wide(path)
            accumulated.append(_Accumulated(name, column, "json"))
            g = f"g.{column}"
            # ... or a $min/$max that picked a document: JSONB's order of documents is
            # not MongoDB's (filters.order_by), so the node picks again; likewise a number
            # that a long of its group may have been (a long past int32 is one as it is)
            inexact += [
                _UNORDERED.format(x=g),
                plain_document(g),
                f"(g.{longs} IS NOT NULL AND jsonb_typeof({g}) = 'number' "
                f"AND ({g})::numeric BETWEEN -2147483648 AND 2147483647)",
            ]
        else:
            return None
    select = ", ".join([f"{key_sql} AS k" if key_sql else "NULL::jsonb AS k", *columns])
    sql = f"SELECT {select} FROM ({values.select(base)}) AS v"
    sql += " GROUP BY 1" if key_sql else " HAVING count(*) > 0"

    def decode(rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            raw_key = row["k"]
            if key_fields is not None:
                found = raw_key or [[]] * len(key_fields)
                group_key: Any = {
                    f: bsonform.from_query_form(v[0])
                    for f, v in zip(key_fields, found, strict=True)
                    if v
                }
            elif key_sql is None:
                group_key = key
            else:
                group_key = bsonform.from_query_form(raw_key)
            doc: dict[str, Any] = {"_id": group_key}
            for value in accumulated:
                doc[value.name] = _decode_value(row, value)
            out.append(doc)
        return out

    return sql, decode, " OR ".join(inexact) or "false"


def _scale(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _decode_value(row: Any, value: _Accumulated) -> Any:
    found = row[value.column]
    kind = value.kind
    if kind == "int":
        return bsonform.from_query_form(int(found))
    if kind == "float":
        return float(found)
    if kind == "json":
        return bsonform.from_query_form(found)
    if found is None:
        return 0 if kind == "$sum" else None
    if kind == "$avg":
        return float(found)
    if not isinstance(found, Decimal) or _scale(found) > 0:
        return float(found)
    if kind == "long" or (value.longs and row[value.longs] == _LONG):
        # a long in the input makes the sum a long, and one past a long's range a double
        return Int64(int(found)) if -(2**63) <= found < 2**63 else float(found)
    return bsonform.from_query_form(int(found))


# -- $lookup with a pipeline ------------------------------------------------------------
#
# The sub-pipeline's leading $match stages, $sort, $skip and $limit run in the engine as
# one statement per chunk of input documents: each distinct row of "slots" (the values
# of the let-dependent parts of its $expr, computed in Python per input document) is an
# element of one jsonb array parameter, joined to the collection on the compiled
# conditions and grouped back into one array of BSON per row. A $expr compiles when
# each comparison sets a top-level field of the joined document against a value that
# does not depend on it (a $$variable, a constant, an expression of those), or
# compares two such values (then Python answers it). Those values must be scalars
# whose query form compares as MongoDB does (null, booleans, numbers, strings,
# ObjectIds, dates), or for $in arrays of them; a chunk holding any other value takes
# the per-document path (pipeline.py), as does a sub-pipeline that does not compile.

# value types whose query form compares, in SQL, as pipeline.py's compare() does
_SCALAR_TYPES = (type(None), bool, int, float, str, Decimal128, ObjectId, dt.datetime)


class NotCompiled(Exception):
    """The sub-pipeline (or this chunk's values) cannot run in the engine exactly."""


def _joined_free(expr: Any) -> bool:
    """Whether ``expr`` reads nothing of the joined document (no field path, no
    ``$$ROOT``/``$$CURRENT``): its value is the same for every document joined."""
    if isinstance(expr, str):
        if expr.startswith("$$"):
            return expr[2:].partition(".")[0] not in ("ROOT", "CURRENT")
        return not expr.startswith("$")
    if isinstance(expr, list):
        return all(_joined_free(e) for e in expr)
    if isinstance(expr, dict):
        if len(expr) == 1 and "$literal" in expr:
            return True
        return all(_joined_free(v) for v in expr.values())
    return True


def _top_field(expr: Any) -> str | None:
    if (
        isinstance(expr, str)
        and expr.startswith("$")
        and not expr.startswith("$$")
        and len(expr) > 1
        and "." not in expr
    ):
        return expr[1:]
    return None


_EXPR_CMP = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass(slots=True)
class LookupJoin:
    """The engine's part of one ``$lookup`` sub-pipeline (``lookup_join``)."""

    exprs: list[Any]  # the compiled $expr trees, ANDed
    plain: list[dict[str, Any]]  # the $match filters besides $expr, ANDed
    sort: dict[str, Any] | None
    skip: int
    limit: int
    rest: list[dict[str, Any]]  # the stages after it, run in Python on each joined array
    # what each slot holds, per input document: (expression, "bool" | "scalar" | "array")
    slots: list[tuple[Any, str]] = field(default_factory=list)

    def slot(self, expr: Any, kind: str) -> int:
        self.slots.append((expr, kind))
        return len(self.slots) - 1

    def tree(self, expr: Any) -> Any:
        """A $expr as a tree of ("slot", i), ("cmp", op, a, b), ("in", a, i), ("and" |
        "or", [...]), ("not", t); operands ("field", name) or ("value", i)."""
        if _joined_free(expr):
            return ("slot", self.slot(expr, "bool"))
        if not isinstance(expr, dict) or len(expr) != 1:
            raise NotCompiled
        ((op, arg),) = expr.items()
        if op in _EXPR_CMP and isinstance(arg, list) and len(arg) == 2:
            a, b = (self.operand(x) for x in arg)
            if a[0] == "field" and b[0] == "field":
                raise NotCompiled  # two fields may be embedded documents (field order)
            return ("cmp", op, a, b)
        if op == "$in" and isinstance(arg, list) and len(arg) == 2 and _joined_free(arg[1]):
            return ("in", self.operand(arg[0]), self.slot(arg[1], "array"))
        if op in ("$and", "$or") and isinstance(arg, list):
            return (op[1:], [self.tree(x) for x in arg])
        if op == "$not":
            inner = arg[0] if isinstance(arg, list) and len(arg) == 1 else arg
            if isinstance(inner, list):
                raise NotCompiled
            return ("not", self.tree(inner))
        raise NotCompiled

    def operand(self, expr: Any) -> tuple[str, Any]:
        name = _top_field(expr)
        if name is not None:
            return ("field", name)
        if _joined_free(expr):
            return ("value", self.slot(expr, "scalar"))
        raise NotCompiled

    def values(self, evaluated: list[Any]) -> list[Any] | None:
        """One input document's slot values as query forms (``evaluated``: each slot's
        expression evaluated with its variables; a bool slot as its truth), or None
        when one of them does not compare in SQL as in Python."""
        out: list[Any] = []
        for (_, kind), value in zip(self.slots, evaluated, strict=True):
            if kind == "bool":
                out.append(truthy(value))
            elif kind == "scalar":
                form = _scalar_form(value)
                if form is _REFUSED:
                    return None
                out.append(form)
            else:
                if value is None:
                    value = []  # $in over null: no element (MISSING fails in Python)
                if not isinstance(value, list):
                    return None
                forms = [_scalar_form(v) for v in value]
                if any(f is _REFUSED for f in forms):
                    return None
                out.append(forms)
        return out

    def statement(
        self,
        target: str,
        indexed: dict[str, str],
        rows: list[list[Any]],
        bound: int | None,
    ) -> tuple[str, list[Any]]:
        """The SQL reading each row's joined documents: rows (i, j), ``i`` the row's
        position from 1 and ``j`` its documents' BSON in the sub-pipeline's order; a row
        with none is absent. With ``bound``, rows stop after the one where the joined
        bytes so far pass it (the caller then fails the stage: nothing more is sent)."""
        params = Params()
        data = params.add(rows, "jsonb")
        never_null = {
            i
            for i, (_, kind) in enumerate(self.slots)
            if kind == "scalar" and all(r[i] is not None for r in rows)
        }
        # slots whose values the _id column holds as the query form (a Decimal128 that
        # no double equals is its nearest double there: bsonform.id_form)
        id_like = {
            i
            for i, (_, kind) in enumerate(self.slots)
            if kind == "scalar" and not any(isinstance(r[i], orjson.Fragment) for r in rows)
        }
        compiler = _JoinCompiler(indexed, never_null, id_like)
        where = [compiler.sql(t) for t in self.exprs]
        for spec in self.plain:
            condition = compile_filter(spec, params, indexed)
            if params.recheck:
                raise NotCompiled  # a superset: matcher.py would check each row again
            where.append(condition)
        order = "t.ctid"  # no $sort: the collection's order, as the per-document path reads
        if self.sort:
            order = f"{compile_sort(self.sort, params)}, t.ctid"
        base = (
            f"jsonb_array_elements({data}) WITH ORDINALITY AS l(v, i) "
            f"JOIN {target} AS t ON {' AND '.join(where) or 'TRUE'}"
        )
        if self.skip or self.limit:
            cut = []
            if self.skip:
                cut.append(f"m.n > {params.add(self.skip, 'bigint')}")
            if self.limit:
                cut.append(f"m.n <= {params.add(self.skip + self.limit, 'bigint')}")
            grouped = (
                "SELECT m.i, array_agg(m.bson ORDER BY m.n) AS j, "
                "sum(octet_length(m.bson)) AS b FROM (SELECT l.i, t.bson, row_number() "
                f"OVER (PARTITION BY l.i ORDER BY {order}) AS n FROM {base}) AS m "
                f"WHERE {' AND '.join(cut)} GROUP BY m.i"
            )
        else:
            grouped = (
                f"SELECT l.i, array_agg(t.bson ORDER BY {order}) AS j, "
                f"sum(octet_length(t.bson)) AS b FROM {base} GROUP BY l.i"
            )
        if bound is None:
            return f"SELECT g.i, g.j FROM ({grouped}) AS g", params.values
        sql = (
            "SELECT g.i, g.j FROM (SELECT g.i, g.j, sum(g.b) OVER (ORDER BY g.i) - g.b AS "
            f"before FROM ({grouped}) AS g) AS g WHERE g.before <= "
            f"{params.add(bound, 'bigint')}"
        )
        return sql, params.values


_REFUSED = object()


def _scalar_form(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, _SCALAR_TYPES):
        return bsonform.query_form(value)
    return _REFUSED


class _JoinCompiler:
    """A ``LookupJoin`` tree as SQL over the joined row (``doc``) and the input row's
    slots (``l.v -> i``), the comparisons in MongoDB's order across types."""

    def __init__(self, indexed: dict[str, str], never_null: set[int], id_like: set[int]) -> None:
        self.indexed = indexed
        self.never_null = never_null
        self.id_like = id_like

    def sql(self, tree: Any) -> str:
        kind = tree[0]
        if kind == "slot":
            return f"(l.v -> {int(tree[1])}) = 'true'::jsonb"
        if kind in ("and", "or"):
            joiner = " AND " if kind == "and" else " OR "
            return "(" + (joiner.join(self.sql(t) for t in tree[1]) or "TRUE") + ")"
        if kind == "not":
            return f"(NOT {self.sql(tree[1])})"
        if kind == "in":
            item = self.value(tree[1])
            return (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements(l.v -> {int(tree[2])}) AS e(x) "
                f"WHERE e.x = {item})"
            )
        _, op, a, b = tree
        if op == "$eq":
            fast = self.equality(a, b) or self.equality(b, a)
            if fast is not None:
                return fast
        x, y = self.value(a), self.value(b)
        if op in ("$eq", "$ne"):
            return f"({x} {_EXPR_CMP[op]} {y})"
        left = f"ROW({TYPE_RANK.format(x=x)}, {x})"
        right = f"ROW({TYPE_RANK.format(x=y)}, {y})"
        return f"({left} {_EXPR_CMP[op]} {right})"

    def equality(self, a: tuple[str, Any], b: tuple[str, Any]) -> str | None:
        """``field = value`` as the field's index holds it (``doc -> 'f'`` where the
        value is never null, a unique index's ``COALESCE``; for ``_id``, the primary
        key too, as a find by ``_id`` is), or None."""
        if a[0] != "field" or b[0] != "value":
            return None
        expr = self.indexed.get(a[1])
        slot = f"(l.v -> {int(b[1])})"
        if a[1] == "_id" and b[1] in self.id_like:
            # every document has an _id: its form is never missing; the key condition
            # is implied by the exact one (id_like), and the engine looks each row up
            return f"(_id = {slot} AND {key_expression('_id')} = {slot})"
        if expr is not None and expr.startswith("(COALESCE("):
            return f"{expr} = {slot}"
        if b[1] in self.never_null:
            return f"{key_expression(a[1])} = {slot}"
        return None

    def value(self, operand: tuple[str, Any]) -> str:
        if operand[0] == "field":
            return f"COALESCE({key_expression(operand[1])}, 'null'::jsonb)"
        return f"(l.v -> {int(operand[1])})"


def lookup_join(stages: list[dict[str, Any]]) -> LookupJoin | None:
    """The engine's part of a ``$lookup`` sub-pipeline (its leading ``$match``es,
    ``$sort``, ``$skip`` and ``$limit``), or None when that part does not compile."""
    lead = leading(stages)
    query = lead.query
    conditions = (
        query["$and"] if len(query) == 1 and isinstance(query.get("$and"), list) else [query]
    )
    join = LookupJoin([], [], lead.sort, lead.skip, lead.limit, stages[lead.rest :])
    try:
        for condition in conditions:
            if not isinstance(condition, dict):
                return None
            plain = {k: v for k, v in condition.items() if k != "$expr"}
            if "$expr" in condition:
                join.exprs.append(join.tree(condition["$expr"]))
            if plain:
                join.plain.append(plain)
    except NotCompiled:
        return None
    return join
