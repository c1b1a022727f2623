"""Aggregation pipelines: stages evaluated in Python over documents the engine selected.

The store pushes what it can into SQL first (a leading ``$match``, ``$sort``, ``$skip``,
``$limit``, and a ``$group`` on fields with ``$sum``/``$avg``/``$min``/``$max``/``$count``);
whatever remains runs here, stage by stage.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from bson.int64 import Int64

from heliosdb.errors import invalid
from heliosdb.services.documents import projection
from heliosdb.services.documents.expressions import (
    accumulate_values,
    evaluate,
    field_values,
    truthy,
)
from heliosdb.services.documents.matcher import matches
from heliosdb.services.documents.values import MISSING, compare, get_path, sort_key

Lookup = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]
ACCUMULATORS = ("$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$count")


def unknown_stage(name: str) -> Exception:
    return invalid(f"Unrecognized pipeline stage name: '{name}'", kind="unknown_stage")


def stage_name(stage: Any) -> str:
    if not isinstance(stage, dict) or len(stage) != 1:
        raise invalid(
            "A pipeline stage specification object must contain exactly one field.",
            kind="failed_to_parse",
        )
    name: str = next(iter(stage))
    return name


async def run(
    docs: list[dict[str, Any]], stages: list[dict[str, Any]], lookup: Lookup
) -> list[dict[str, Any]]:
    for stage in stages:
        name = stage_name(stage)
        arg = stage[name]
        docs = await _stage(name, arg, docs, lookup)
    return docs


async def _stage(
    name: str, arg: Any, docs: list[dict[str, Any]], lookup: Lookup
) -> list[dict[str, Any]]:
    if name == "$match":
        return [d for d in docs if matches(d, arg)]
    if name in ("$project",):
        return [_project(d, arg) for d in docs]
    if name in ("$addFields", "$set"):
        return [_add_fields(d, arg) for d in docs]
    if name == "$unset":
        fields = [arg] if isinstance(arg, str) else arg
        return [_project(d, {f: 0 for f in fields}) for d in docs]
    if name == "$group":
        return group(docs, arg)
    if name == "$sort":
        return sort_docs(docs, arg)
    if name == "$skip":
        return docs[int(arg) :]
    if name == "$limit":
        if int(arg) <= 0:
            raise invalid("the limit must be positive", kind="bad_value")
        return docs[: int(arg)]
    if name == "$count":
        if not isinstance(arg, str) or not arg:
            raise invalid("the count field must be a non-empty string", kind="bad_value")
        return [{arg: len(docs)}] if docs else []
    if name == "$unwind":
        return list(_unwind(docs, arg))
    if name == "$sortByCount":
        grouped = group(docs, {"_id": arg, "count": {"$sum": 1}})
        return sort_docs(grouped, {"count": -1})
    if name in ("$replaceRoot", "$replaceWith"):
        expr = arg["newRoot"] if name == "$replaceRoot" else arg
        out = []
        for d in docs:
            root = evaluate(expr, d)
            if not isinstance(root, dict):
                raise invalid("'newRoot' expression must evaluate to an object", kind="bad_value")
            out.append(root)
        return out
    if name == "$facet":
        return [{key: await run(list(docs), sub, lookup) for key, sub in arg.items()}]
    if name == "$lookup":
        return await _lookup(docs, arg, lookup)
    if name == "$sample":
        size = int(arg.get("size", 0))
        return random.sample(docs, min(size, len(docs)))
    raise unknown_stage(name)


def _project(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    if not spec:
        raise invalid("$project requires at least one output field", kind="failed_to_parse")
    computed = {
        k: v
        for k, v in spec.items()
        if not isinstance(v, (bool, int, float)) or isinstance(v, dict)
    }
    flags = {k: v for k, v in spec.items() if k not in computed}
    out = projection.project(doc, flags or {"_id": 1}) if computed or flags else dict(doc)
    if computed and not any(v for k, v in flags.items() if k != "_id"):
        # Only computed fields (and maybe _id): start from _id alone.
        out = {"_id": doc["_id"]} if flags.get("_id", 1) and "_id" in doc else {}
    for key, value in computed.items():
        result = evaluate(value, doc)
        if result is not MISSING:
            _put(out, key, result)
    return out


def _copy_without(doc: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(doc)
    for path in paths:
        parts = path.split(".")
        target: Any = out
        for part in parts[:-1]:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target.pop(parts[-1], None)
    return out


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        out = out.setdefault(part, {})
    out[parts[-1]] = value


def _add_fields(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, expr in spec.items():
        value = evaluate(expr, doc)
        if value is MISSING:
            out.pop(key, None)
        else:
            _put(out, key, value)
    return out


def sort_docs(docs: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(docs)
    for key, direction in reversed(list(spec.items())):
        if isinstance(direction, dict):
            continue
        out.sort(key=_sort_by(key), reverse=direction < 0)
    return out


def _sort_by(path: str) -> Any:
    return lambda doc: sort_key(_sort_value(doc, path))


def _sort_value(doc: dict[str, Any], path: str) -> Any:
    value = get_path(doc, path)
    return None if value is MISSING else value


def _unwind(docs: list[dict[str, Any]], arg: Any) -> Any:
    if isinstance(arg, str):
        arg = {"path": arg}
    path = arg["path"]
    if not isinstance(path, str) or not path.startswith("$"):
        raise invalid(
            "path option to $unwind stage should be prefixed with a '$'", kind="bad_value"
        )
    field = path[1:]
    keep_empty = arg.get("preserveNullAndEmptyArrays", False)
    index_field = arg.get("includeArrayIndex")
    for doc in docs:
        value = get_path(doc, field)
        if isinstance(value, list) and value:
            for i, item in enumerate(value):
                out = _with(doc, field, item)
                if index_field:
                    out[index_field] = Int64(i)
                yield out
        elif isinstance(value, list) or value is MISSING or value is None:
            if keep_empty:
                out = _copy_without(doc, [field]) if isinstance(value, list) else dict(doc)
                if index_field:
                    out[index_field] = None
                yield out
        else:
            out = dict(doc)
            if index_field:
                out[index_field] = None
            yield out


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = dict(doc)
    parts = path.split(".")
    target = out
    for part in parts[:-1]:
        target[part] = dict(target[part])
        target = target[part]
    target[parts[-1]] = value
    return out


def group(docs: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    if "_id" not in spec:
        raise invalid("a group specification must include an _id", kind="failed_to_parse")
    groups: dict[Any, tuple[Any, list[dict[str, Any]]]] = {}
    for doc in docs:
        key_value = evaluate(spec["_id"], doc)
        if key_value is MISSING:
            key_value = None
        marker = _hashable(key_value)
        groups.setdefault(marker, (key_value, []))[1].append(doc)
    out = []
    for key_value, members in groups.values():
        row: dict[str, Any] = {"_id": key_value}
        for name, acc in spec.items():
            if name == "_id":
                continue
            if not isinstance(acc, dict) or len(acc) != 1:
                raise invalid(
                    f"The field '{name}' must be an accumulator object", kind="failed_to_parse"
                )
            ((op, expr),) = acc.items()
            row[name] = _accumulate(op, expr, members)
        out.append(row)
    return out


def _accumulate(op: str, expr: Any, members: list[dict[str, Any]]) -> Any:
    if op == "$count":
        return len(members)
    values = [evaluate(expr, d) for d in members]
    if op in ("$sum", "$avg", "$min", "$max"):
        return accumulate_values(op, values)
    if op in ("$first", "$last"):
        value = values[0] if op == "$first" else values[-1]
        return None if value is MISSING else value
    if op == "$push":
        return [v for v in values if v is not MISSING]
    if op == "$addToSet":
        out: list[Any] = []
        for v in values:
            if v is not MISSING and not any(compare(v, o) == 0 for o in out):
                out.append(v)
        return out
    raise invalid(f"unknown group operator '{op}'", kind="invalid_pipeline_operator")


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("d", tuple((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("l", tuple(_hashable(v) for v in value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("n", float(value))
    return (type(value).__name__, repr(value))


async def _lookup(
    docs: list[dict[str, Any]], arg: dict[str, Any], lookup: Lookup
) -> list[dict[str, Any]]:
    source = arg.get("from")
    alias = arg.get("as")
    if not isinstance(source, str) or not isinstance(alias, str):
        raise invalid("$lookup needs 'from' and 'as'", kind="failed_to_parse")
    if "localField" in arg:
        local, foreign = arg["localField"], arg["foreignField"]
        keys: list[Any] = []
        for doc in docs:
            value = field_values(doc, local)
            keys.extend(value if isinstance(value, list) else [None if value is MISSING else value])
        found = await lookup(source, {foreign: {"$in": keys}}) if keys else []
        out = []
        for doc in docs:
            value = field_values(doc, local)
            wanted = value if isinstance(value, list) else [None if value is MISSING else value]
            joined = [f for f in found if matches(f, {foreign: {"$in": wanted}})]
            out.append({**doc, alias: joined})
        return out
    sub = arg.get("pipeline", [])
    out = []
    for doc in docs:
        variables = {k: evaluate(v, doc) for k, v in arg.get("let", {}).items()}
        rows = await lookup(source, {})
        rows = [r for r in rows if _expr_ok(r, sub, variables)]
        rest = [s for s in sub if stage_name(s) != "$match" or "$expr" not in s["$match"]]
        out.append({**doc, alias: await run(rows, rest, lookup)})
    return out


def _expr_ok(row: dict[str, Any], stages: list[dict[str, Any]], variables: dict[str, Any]) -> bool:
    for stage in stages:
        if (
            stage_name(stage) == "$match"
            and "$expr" in stage["$match"]
            and not truthy(evaluate(stage["$match"]["$expr"], row, variables))
        ):
            return False
    return True
