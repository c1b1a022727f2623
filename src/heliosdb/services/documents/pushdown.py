"""The part of an aggregation pipeline the engine runs.

A leading run of ``$match``, then ``$sort``/``$skip``/``$limit``, become one SELECT; a
``$group`` right after, keyed by constants or field paths and using only ``$sum``,
``$avg``, ``$min``, ``$max`` and ``$count``, becomes its GROUP BY; a ``$count`` becomes
count(*). The rest of the pipeline runs in Python (pipeline.py).
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from heliosdb.services.documents import bsonform
from heliosdb.services.documents.filters import Params, compile_filter, compile_sort, order_by
from heliosdb.services.documents.pipeline import stage_name

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
    target: str, stages: list[dict[str, Any]], indexed: dict[str, str] | None = None
) -> Plan:
    params = Params()
    lead = leading(stages)
    where = compile_filter(lead.query, params, indexed)
    sql = f"SELECT _id, bson, doc FROM {target} WHERE {where}"
    if params.recheck:
        # a superset (filters.py): pipeline.py runs every stage, the $match ones again
        return Plan(sql, params.values, stages)
    if lead.sort is not None:
        sql += f" ORDER BY {compile_sort(lead.sort, params)}"
    if lead.skip:
        sql += f" OFFSET {params.add(lead.skip, 'bigint')}"
    if lead.limit:
        sql += f" LIMIT {params.add(lead.limit, 'bigint')}"
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
        grouped = _group(sql, stages[i]["$group"], trial)
        if grouped is not None:
            text, decode, tested = grouped
            fallback = Plan(sql, params.values, stages[i:])
            # ... or a $min/$max that picked a document: JSONB's order of documents is
            # not MongoDB's (filters.order_by), so the node picks again
            from heliosdb.services.documents.filters import plain_document

            unordered = (
                " OR ".join(
                    _UNORDERED.format(x=f"g.{c}")
                    + ("" if c == "k" else f" OR {plain_document(f'g.{c}')}")
                    for c in tested
                )
                or "false"
            )
            return Plan(
                f"SELECT g.*, {unordered} AS u FROM ({text}) AS g",
                trial.values,
                stages[i + 1 :],
                decode,
                fallback,
            )
    return Plan(sql, params.values, stages[i:])


def _count_rows(name: str) -> Callable[[list[Any]], list[dict[str, Any]]]:
    return lambda rows: [{name: int(r["n"])} for r in rows]


def _path(expr: Any) -> str | None:
    if isinstance(expr, str) and expr.startswith("$") and not expr.startswith("$$"):
        return expr[1:]
    return None


class _Values:
    """Each field path a group reads, taken out of the document once per row (a fenced
    subquery: the engine would otherwise look the path up again for every mention).
    A path is JSON null where the field is missing, or SQL NULL when ``raw``."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.columns: dict[tuple[str, bool], str] = {}

    def ref(self, path: str, *, raw: bool = False) -> str:
        column = self.columns.get((path, raw))
        if column is None:
            column = self.columns[(path, raw)] = f"v{len(self.columns)}"
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
        return f"SELECT {', '.join(terms)} FROM ({base}) AS s OFFSET 0"


def _group(
    base: str, spec: Any, params: Params
) -> tuple[str, Callable[[list[Any]], list[dict[str, Any]]], list[str]] | None:
    """The SQL of a $group, the decoder of its rows, and its columns that may hold
    embedded documents (``_UNORDERED``)."""
    if not isinstance(spec, dict) or "_id" not in spec:
        return None
    values = _Values(params)
    key = spec["_id"]
    key_sql: str | None
    key_fields: list[str] | None = None
    if _path(key) is not None:
        key_sql = values.ref(_path(key) or "")
    elif isinstance(key, dict) and key and all(_path(v) for v in key.values()):
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
    decoders: list[tuple[str, str, str]] = []
    for index, (name, acc) in enumerate(spec.items()):
        if name == "_id":
            continue
        if not isinstance(acc, dict) or len(acc) != 1:
            return None
        ((op, expr),) = acc.items()
        column = f"a{index}"
        if op == "$count" and expr == {}:
            columns.append(f"count(*) AS {column}")
            decoders.append((name, column, "int"))
        elif op == "$sum" and isinstance(expr, (int, float)) and not isinstance(expr, bool):
            columns.append(f"count(*) * {params.add(expr, 'numeric')} AS {column}")
            decoders.append((name, column, "float" if isinstance(expr, float) else "int"))
        elif op in ("$sum", "$avg") and _path(expr) is not None:
            x = values.ref(_path(expr) or "")
            fn = "sum" if op == "$sum" else "avg"
            columns.append(f"{fn}({_NUMBER.format(x=x)}) AS {column}")
            decoders.append((name, column, op))
        elif op in ("$min", "$max") and _path(expr) is not None:
            x = values.ref(_path(expr) or "")
            order = "ASC" if op == "$min" else "DESC"
            columns.append(
                f"(array_agg({x} ORDER BY {order_by(x, order)}) "
                f"FILTER (WHERE jsonb_typeof({x}) <> 'null'))[1] AS {column}"
            )
            decoders.append((name, column, "json"))
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
            for name, column, kind in decoders:
                doc[name] = _decode_value(row, column, kind)
            out.append(doc)
        return out

    tested = ["k"] if key_sql else []
    return sql, decode, tested + [column for _, column, kind in decoders if kind == "json"]


def _scale(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _decode_value(row: Any, column: str, kind: str) -> Any:
    value = row[column]
    if kind == "int":
        return bsonform.from_query_form(int(value))
    if kind == "float":
        return float(value)
    if kind == "json":
        return bsonform.from_query_form(value)
    if value is None:
        return 0 if kind == "$sum" else None
    if kind == "$avg":
        return float(value)
    if not isinstance(value, Decimal) or _scale(value) > 0:
        return float(value)
    return bsonform.from_query_form(int(value))
