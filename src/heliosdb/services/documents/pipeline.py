"""Aggregation pipelines: stages evaluated in Python over documents the engine selected.

The store pushes what it can into SQL first (a leading ``$match``, ``$sort``, ``$skip``,
``$limit``, and a ``$group`` on fields with ``$sum``/``$avg``/``$min``/``$max``/``$count``);
whatever remains runs here, stage by stage (a ``$lookup`` sub-pipeline's leading part
runs in the engine when it compiles: pushdown.lookup_join).

A stage that holds documents before it returns any (``$group``, ``$sort``,
``$sortByCount``, ``$facet``, ``$sample``, ``$lookup``'s joined arrays) counts the BSON
size of what it keeps and fails past ``Limits.max_stage_bytes`` (MongoDB's 100 MB per
stage): code 292 QueryExceededMemoryLimitNoDiskUseAllowed, or with ``allowDiskUse: true``
146 ExceededMemoryLimit, since nothing here spills to disk.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import bson
import orjson
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.services.documents import (
    bsonform,
    buckets,
    fills,
    graph_lookup,
    group_accumulators,
    projection,
    stage_args,
    windows,
)
from heliosdb.services.documents.expression_scope import truthy
from heliosdb.services.documents.expressions import accumulate_values, evaluate, field_values
from heliosdb.services.documents.matcher import matches
from heliosdb.services.documents.values import (
    MISSING,
    compare,
    get_path,
    hashable,
    path_sort_key,
    type_rank,
)

Lookup = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]
# (the collection's table, its index map) -> a statement's SQL and values
Statement = Callable[[str, dict[str, str]], tuple[str, list[Any]]]
ACCUMULATORS = ("$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$count")
# MongoDB's memory limit of one blocking stage (settings: mongodb.max_stage_bytes)
MAX_STAGE_BYTES = 100 * 1024 * 1024
# values a $sum/$min/$max keeps per group before folding them into one
_FOLD_AT = 1024
# values Held.add_all sizes in one encode
_SIZED_AT_ONCE = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one aggregate may hold: bytes per blocking stage, and whether the client
    allowed disk use (which only changes the error: nothing spills here)."""

    max_stage_bytes: int = MAX_STAGE_BYTES
    allow_disk_use: bool = False


class Held:
    """The bytes one blocking stage keeps (the BSON size of each kept value)."""

    __slots__ = ("limits", "stage", "total")

    def __init__(self, stage: str, limits: Limits) -> None:
        self.stage = stage
        self.limits = limits
        self.total = 0

    def add(self, value: Any) -> None:
        self.total += bson_size(value)
        if self.total > self.limits.max_stage_bytes:
            raise _exceeded(self.stage, self.limits)

    def drop(self, value: Any) -> None:
        """``value``, kept before, is not kept any more."""
        self.total -= bson_size(value)

    def add_all(self, values: list[Any]) -> None:
        # a thousand at a time in one array: one encode call, not one per value (6x less
        # CPU for small documents), and a failing stage stops within a thousand
        for start in range(0, len(values), _SIZED_AT_ONCE):
            self.add(values[start : start + _SIZED_AT_ONCE])


@dataclass(frozen=True, slots=True)
class Reader:
    """A ``Lookup`` (``find``: a filter's documents of a collection) that can also run a
    statement over a collection (``rows``: its rows, none when the collection does not
    exist), so a ``$lookup`` sub-pipeline can run in the engine."""

    find: Lookup
    rows: Callable[[str, Statement], Awaitable[list[Any]]]

    def __call__(self, coll: str, query: dict[str, Any]) -> Awaitable[list[dict[str, Any]]]:
        return self.find(coll, query)


def bson_size(value: Any) -> int:
    """About the bytes ``value`` takes as BSON (a document's exact size)."""
    if isinstance(value, (dict, list)):
        value = value if isinstance(value, dict) else {"": value}
        try:
            return len(bson.encode(value))
        except (bson.errors.InvalidDocument, TypeError, ValueError):
            return len(repr(value))
    if isinstance(value, str):
        return len(value) + 5
    if isinstance(value, (bool, int, float)) or value is None or value is MISSING:
        return 8
    try:
        return len(bson.encode({"": value})) - 6
    except (bson.errors.InvalidDocument, TypeError, ValueError):
        return len(repr(value))


def _exceeded(stage: str, limits: Limits) -> HeliosError:
    if limits.allow_disk_use:
        return HeliosError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"Exceeded memory limit for {stage} of {limits.max_stage_bytes} bytes; this "
            "server does not spill pipeline stages to disk, so allowDiskUse does not help: "
            "narrow the input with $match or $limit first",
        )
    return HeliosError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"Exceeded memory limit for {stage} of {limits.max_stage_bytes} bytes, but didn't "
        "allow external sort. Pass allowDiskUse:true to opt in.",
        kind="exceeded_memory_no_disk",
    )


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
    docs: list[dict[str, Any]],
    stages: list[dict[str, Any]],
    lookup: Lookup,
    limits: Limits = Limits(),
) -> list[dict[str, Any]]:
    stage_args.check(stages)  # as MongoDB parses a pipeline: before any document
    for stage in stages:
        name = stage_name(stage)
        arg = stage[name]
        docs = await _stage(name, arg, docs, lookup, limits)
    return docs


# stages that reduce their input as it comes: run_chunks feeds them a chunk at a time
REDUCING = ("$group", "$sortByCount", "$bucket", "$count")


async def run_chunks(
    chunks: AsyncIterator[list[dict[str, Any]]],
    stages: list[dict[str, Any]],
    lookup: Lookup,
    limits: Limits,
) -> list[dict[str, Any]]:
    """``run`` with the input of the first stage given a chunk at a time: a stage in
    REDUCING is fed each chunk (the node holds a chunk and what the stage keeps); any
    other gets the chunks together, their size counted for it as they come (past the
    limit, the rest is not read). Without stages, the chunks together, counted for the
    $group whose rows they are (an engine-run $group's whole result: an $out's)."""
    if not stages:
        held = Held("$group", limits)
        docs = []
        async for chunk in chunks:
            held.add_all(chunk)
            docs.extend(chunk)
        return docs
    name = stage_name(stages[0])
    arg = stages[0][name]
    if name == "$count":
        _counted(arg, 0)  # a bad field fails before the input is read
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        docs = _counted(arg, total)
    elif name in REDUCING:
        grouper = Grouper(_group_spec(name, arg), Held(name, limits))
        async for chunk in chunks:
            grouper.feed(chunk)
        docs = _grouped(name, arg, grouper.rows())
    else:
        held = Held(name, limits)
        docs = []
        async for chunk in chunks:
            held.add_all(chunk)
            docs.extend(chunk)
        docs = await _stage(name, arg, docs, lookup, limits, counted=True)
    return await run(docs, stages[1:], lookup, limits)


def _counted(field: Any, total: int) -> list[dict[str, Any]]:
    if not isinstance(field, str) or not field:
        raise invalid("the count field must be a non-empty string", kind="bad_value")
    return [{field: total}] if total else []


def _group_spec(name: str, arg: Any) -> Any:
    if name == "$bucket":
        return buckets.group_spec(arg)
    return arg if name == "$group" else {"_id": arg, "count": {"$sum": 1}}


def _grouped(name: str, arg: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A reducing stage's rows as it returns them."""
    if name == "$bucket":
        return buckets.in_order(arg, rows)
    return rows if name == "$group" else _by_count(rows)


def _by_count(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sort_docs(groups, {"count": -1})


async def _stage(
    name: str,
    arg: Any,
    docs: list[dict[str, Any]],
    lookup: Lookup,
    limits: Limits,
    *,
    counted: bool = False,  # ``docs`` were counted for this stage as they came
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
        return group(docs, arg, Held(name, limits))
    if name == "$sort":
        if not counted:
            Held(name, limits).add_all(docs)
        return sort_docs(docs, arg)
    if name == "$skip":
        return docs[stage_args.count(name, arg) :]
    if name == "$limit":
        return docs[: stage_args.count(name, arg)]
    if name == "$count":
        return _counted(arg, len(docs))
    if name == "$unwind":
        return list(_unwind(docs, arg))
    if name in ("$sortByCount", "$bucket"):
        return _grouped(name, arg, group(docs, _group_spec(name, arg), Held(name, limits)))
    if name == "$bucketAuto":
        if not counted:
            Held(name, limits).add_all(docs)
        return buckets.auto(docs, arg, lambda spec: Grouper(spec, Held(name, limits)))
    if name == "$fill":
        return await run(docs, fills.fill_stages(arg), lookup, limits)
    if name == "$unionWith":
        return docs + await _union_with(arg, lookup, limits)
    if name == "$setWindowFields":
        if not counted:
            Held(name, limits).add_all(docs)
        return windows.run(docs, arg, lambda spec: Grouper(spec, Held(name, limits)), sort_docs)
    if name in ("$replaceRoot", "$replaceWith"):
        expr = stage_args.new_root_expression(name, arg)
        return [stage_args.new_root(name, evaluate(expr, d), d) for d in docs]
    if name == "$facet":
        if not counted:
            Held(name, limits).add_all(docs)
        return [{key: await run(list(docs), sub, lookup, limits) for key, sub in arg.items()}]
    if name == "$lookup":
        return await _lookup(docs, arg, lookup, Held(name, limits))
    if name == "$graphLookup":
        return await graph_lookup.run(docs, arg, lookup, Held(name, limits))
    if name == "$sample":
        if not counted:
            Held(name, limits).add_all(docs)
        size = stage_args.sample_size(arg)
        return random.sample(docs, min(size, len(docs)))
    if name == "$documents":
        raise invalid("$documents is only valid as the first stage in a pipeline", location=40602)
    raise unknown_stage(name)


class Chunked:
    """Stages that give each document's outcome without seeing the others (STREAMING),
    run over a result a chunk at a time: ``$skip`` and ``$limit`` count across chunks,
    and ``done`` says a ``$limit`` has taken all it will."""

    def __init__(self, stages: list[dict[str, Any]], lookup: Lookup, limits: Limits) -> None:
        self.stages = [(stage_name(s), s[stage_name(s)]) for s in stages]
        stage_args.check(stages)
        self.lookup = lookup
        self.limits = limits
        # what each $skip still drops and each $limit still takes, by stage index
        self.left = {
            i: stage_args.count(name, arg)
            for i, (name, arg) in enumerate(self.stages)
            if name in _COUNTED
        }
        self.done = False

    async def __call__(self, items: list[Any]) -> list[Any]:
        docs = [bsonform.decode(d) if isinstance(d, bytes) else d for d in items]
        for i, (name, arg) in enumerate(self.stages):
            if name in _COUNTED:
                left = self.left[i]
                taken = min(left, len(docs))
                self.left[i] = left - taken
                if name == "$skip":
                    docs = docs[taken:]
                else:
                    docs = docs[:taken]
                    self.done = self.done or self.left[i] == 0
            else:
                docs = await _stage(name, arg, docs, self.lookup, self.limits)
        return docs


STREAMING = frozenset(
    {
        "$match",
        "$project",
        "$addFields",
        "$set",
        "$unset",
        "$unwind",
        "$replaceRoot",
        "$replaceWith",
        "$skip",
        "$limit",
        "$lookup",  # one query per chunk; its joined arrays are counted per chunk
        "$graphLookup",  # one query per chunk and depth
    }
)
_COUNTED = ("$skip", "$limit")


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
    """Set ``path`` in ``out`` as $addFields and $project's computed fields do (MISSING
    removes it): the embedded documents on the way are copied, never changed in place
    (``out`` is a shallow copy of a document other stages may hold); a value on the way
    that is not a document becomes one; an array on the way gets the field in each of
    its elements, an element that is not a document becoming a document of it alone."""
    head, _, rest = path.partition(".")
    if not rest:
        if value is MISSING:
            out.pop(head, None)
        else:
            out[head] = value
        return
    current = out.get(head, MISSING)
    if value is MISSING and not isinstance(current, (dict, list)):
        return  # nothing there to remove
    out[head] = _put_within(current, rest, value)


def _put_within(current: Any, path: str, value: Any) -> Any:
    if isinstance(current, list):
        return [_put_within(item, path, value) for item in current]
    if not isinstance(current, dict) and value is MISSING:
        return current
    inner = dict(current) if isinstance(current, dict) else {}
    _put(inner, path, value)
    return inner


def _add_fields(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, expr in spec.items():
        _put(out, key, evaluate(expr, doc))
    return out


def sort_docs(docs: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(docs)
    for key, direction in reversed(list(spec.items())):
        if isinstance(direction, dict):
            continue
        descending = direction < 0
        out.sort(
            key=functools.partial(path_sort_key, path=key, descending=descending),
            reverse=descending,
        )
    return out


def _unwind(docs: list[dict[str, Any]], arg: Any) -> Any:
    field, keep_empty, index_field = stage_args.unwind(arg)
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


def group(
    docs: list[dict[str, Any]], spec: dict[str, Any], held: Held | None = None
) -> list[dict[str, Any]]:
    grouper = Grouper(spec, held if held is not None else Held("$group", Limits()))
    grouper.feed(docs)
    return grouper.rows()


class Grouper:
    """A ``$group`` fed its documents a chunk at a time. Each group keeps its key and
    what its accumulators need, not its documents: a running value for
    ``$sum``/``$min``/``$max``/``$avg``/``$count``/``$first``/``$last``, the values
    themselves for ``$push``/``$addToSet`` (counted by ``held``)."""

    def __init__(self, spec: dict[str, Any], held: Held) -> None:
        if "_id" not in spec:
            raise invalid("a group specification must include an _id", kind="failed_to_parse")
        self.key = spec["_id"]
        self.accumulators: list[tuple[str, str, Any]] = []
        for name, acc in spec.items():
            if name == "_id":
                continue
            if not isinstance(acc, dict) or len(acc) != 1:
                raise invalid(
                    f"The field '{name}' must be an accumulator object", kind="failed_to_parse"
                )
            ((op, expr),) = acc.items()
            if op in group_accumulators.NAMES:
                group_accumulators.make(op, expr)  # its arguments checked before any document
            elif op not in ACCUMULATORS:
                raise invalid(f"unknown group operator '{op}'", kind="invalid_pipeline_operator")
            self.accumulators.append((name, op, expr))
        self.held = held
        self.groups: dict[Any, tuple[Any, list[list[Any]]]] = {}

    def feed(self, docs: list[dict[str, Any]]) -> None:
        accumulators, groups, held = self.accumulators, self.groups, self.held
        for doc in docs:
            key_value = evaluate(self.key, doc)
            if key_value is MISSING:
                key_value = None
            marker = hashable(key_value)
            entry = groups.get(marker)
            if entry is None:
                held.add(key_value)
                entry = groups[marker] = (key_value, [[] for _ in accumulators])
            for (_, op, expr), kept in zip(accumulators, entry[1], strict=True):
                _keep(op, expr, doc, kept, held)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for key_value, kept_lists in self.groups.values():
            row: dict[str, Any] = {"_id": key_value}
            for (name, op, _), kept in zip(self.accumulators, kept_lists, strict=True):
                row[name] = _accumulated(op, kept)
            out.append(row)
        return out


def _keep(op: str, expr: Any, doc: dict[str, Any], kept: list[Any], held: Held) -> None:
    """Fold one document into what a group keeps for accumulator ``op``."""
    if op == "$count":
        if kept:
            kept[0] += 1
        else:
            kept.append(1)
        return
    if op in group_accumulators.NAMES:
        if not kept:
            kept.append(group_accumulators.make(op, expr))
        kept[0].add(doc, held)
        return
    value = evaluate(expr, doc)
    if op == "$first":
        if not kept:
            kept.append(value)
            held.add(value)
    elif op == "$last":
        if kept:
            held.drop(kept[0])
            kept[0] = value
        else:
            kept.append(value)
        held.add(value)
    elif op == "$push":
        if value is not MISSING:
            kept.append(value)
            held.add(value)
    elif op == "$addToSet":
        if value is not MISSING and not any(compare(value, o) == 0 for o in kept):
            kept.append(value)
            held.add(value)
    else:
        kept.append(value)
        if len(kept) >= _FOLD_AT:
            _fold(op, kept)


def _fold(op: str, kept: list[Any]) -> None:
    """Replace the values kept for ``$sum``/``$min``/``$max`` by their result so far;
    for ``$avg``, by their numbers' sum and count (an ``_Average``)."""
    if op != "$avg":
        kept[:] = [accumulate_values(op, kept)]
        return
    average = kept[0] if kept and isinstance(kept[0], _Average) else _Average()
    for value in kept[1:] if kept and kept[0] is average else kept:
        average.add(value)
    kept[:] = [average]


class _Average:
    """The numbers an ``$avg`` has seen so far, as their sum and count."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.total: Any = 0
        self.count = 0

    def add(self, value: Any) -> None:
        if type_rank(value) != 3:  # not a number
            return
        number = value.to_decimal() if isinstance(value, Decimal128) else value
        if isinstance(number, Decimal) or isinstance(self.total, Decimal):
            self.total = Decimal(str(self.total)) + Decimal(str(number))
        else:
            self.total += number
        self.count += 1

    def result(self) -> Any:
        if not self.count:
            return None
        if isinstance(self.total, Decimal):
            return Decimal128(self.total / self.count)
        return float(self.total) / self.count


def _accumulated(op: str, kept: list[Any]) -> Any:
    if op in group_accumulators.NAMES:
        return kept[0].result()
    if op in ("$first", "$last"):
        return None if kept[0] is MISSING else kept[0]
    if op in ("$push", "$addToSet", "$count"):
        return kept[0] if op == "$count" else kept
    if op == "$avg":
        _fold(op, kept)
        result: Any = kept[0].result()
        return result
    return accumulate_values(op, kept)


async def _union_with(arg: Any, lookup: Lookup, limits: Limits) -> list[dict[str, Any]]:
    """The documents ``$unionWith`` appends: another collection's, through its own
    pipeline (a leading ``$match`` is the read's filter), counted against the stage
    limit as they are read."""
    spec = {"coll": arg} if isinstance(arg, str) else arg
    literal: Any = spec.get("pipeline") if isinstance(spec, dict) and "coll" not in spec else None
    given = stage_args.leading_documents(literal)
    if given is not MISSING:  # no collection: the pipeline's $documents
        found = stage_args.documents(given)
        Held("$unionWith", limits).add_all(found)
        return await run(found, literal[1:], lookup, limits)
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("coll"), str)
        or set(spec)
        - {
            "coll",
            "pipeline",
        }
    ):
        raise invalid(
            "$unionWith needs 'coll' (a name) and an optional 'pipeline'", kind="failed_to_parse"
        )
    stages = spec.get("pipeline", [])
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise invalid("$unionWith's 'pipeline' must be an array of stages", kind="failed_to_parse")
    query: dict[str, Any] = {}
    if stages and stage_name(stages[0]) == "$match":
        query, stages = stages[0]["$match"], stages[1:]
    found = await lookup(spec["coll"], query)
    Held("$unionWith", limits).add_all(found)
    return await run(found, stages, lookup, limits)


async def _lookup(
    docs: list[dict[str, Any]], arg: dict[str, Any], lookup: Lookup, held: Held
) -> list[dict[str, Any]]:
    source = arg.get("from")
    alias = arg.get("as")
    given = stage_args.leading_documents(arg.get("pipeline"))
    if given is not MISSING and source is None and isinstance(alias, str):
        return await _lookup_documents(docs, arg, given, lookup, held)
    if not isinstance(source, str) or not isinstance(alias, str):
        raise invalid("$lookup needs 'from' and 'as'", kind="failed_to_parse")
    if "localField" in arg:
        local, foreign = arg["localField"], arg["foreignField"]
        keys: list[Any] = []
        for doc in docs:
            keys.extend(_local_keys(doc, local))
        found = await lookup(source, {foreign: {"$in": keys}}) if keys else []
        held.add_all(found)
        out = []
        for doc in docs:
            wanted = _local_keys(doc, local)
            joined = [f for f in found if matches(f, {foreign: {"$in": wanted}})]
            if len(docs) > 1:
                held.add_all(joined)  # shared with found, but each output document copies it
            out.append({**doc, alias: joined})
        return out
    sub = arg.get("pipeline", [])
    let = arg.get("let", {})
    if not isinstance(sub, list) or not isinstance(let, dict):
        raise invalid(
            "$lookup's 'pipeline' must be an array and 'let' a document", kind="failed_to_parse"
        )
    out = []
    for start in range(0, len(docs), _JOINED_AT_ONCE):
        chunk = docs[start : start + _JOINED_AT_ONCE]
        scopes = [{k: evaluate(v, doc) for k, v in let.items()} for doc in chunk]
        joined_lists = await _joined_in_engine(source, sub, scopes, lookup, held.limits)
        if joined_lists is None:
            joined_lists = [
                await _joined_alone(source, sub, scope, lookup, held) for scope in scopes
            ]
        for doc, joined in zip(chunk, joined_lists, strict=True):
            held.add_all(joined)
            out.append({**doc, alias: joined})
    return out


# input documents whose $lookup sub-pipeline runs as one statement (pushdown.LookupJoin)
_JOINED_AT_ONCE = 1000


def _local_keys(doc: dict[str, Any], local: Any) -> list[Any]:
    """The values of a ``$lookup``'s ``localField`` in ``doc`` its ``foreignField`` may
    equal: an array's elements, a missing field as null."""
    value = field_values(doc, local)
    return value if isinstance(value, list) else [None if value is MISSING else value]


async def _lookup_documents(
    docs: list[dict[str, Any]], arg: dict[str, Any], given: Any, lookup: Lookup, held: Held
) -> list[dict[str, Any]]:
    """A ``$lookup`` with no ``from`` whose pipeline starts with ``$documents``: each input
    document joins those documents (evaluated with its ``let`` variables), those whose
    ``foreignField`` equals its ``localField`` when both are given, the rest of the
    pipeline run over them."""
    let = arg.get("let", {})
    if not isinstance(let, dict):
        raise invalid("$lookup's 'let' must be a document", kind="failed_to_parse")
    out = []
    for doc in docs:
        scope = {k: evaluate(v, doc) for k, v in let.items()}
        rows = stage_args.documents(given, scope)
        if "localField" in arg:
            wanted = _local_keys(doc, arg["localField"])
            rows = [r for r in rows if matches(r, {arg["foreignField"]: {"$in": wanted}})]
        joined = await _sub_pipeline(rows, arg["pipeline"][1:], scope, lookup, held.limits)
        held.add_all(joined)
        out.append({**doc, arg["as"]: joined})
    return out


async def _joined_in_engine(
    source: str,
    sub: list[dict[str, Any]],
    scopes: list[dict[str, Any]],
    lookup: Lookup,
    limits: Limits,
) -> list[list[dict[str, Any]]] | None:
    """Each input document's joined array (``scopes``: their let variables), the
    sub-pipeline's leading part run by the engine for all of them in one statement
    (pushdown.lookup_join); None when it does not compile or a value does not fit."""
    rows_of = getattr(lookup, "rows", None)
    if rows_of is None:
        return None
    from heliosdb.services.documents import pushdown  # it imports this module

    join = pushdown.lookup_join(sub)
    if join is None:
        return None
    places: list[int] = []
    distinct: dict[bytes, int] = {}
    rows: list[list[Any]] = []
    for variables in scopes:
        try:
            evaluated = [evaluate(expr, {}, variables) for expr, _ in join.slots]
        except HeliosError:
            return None  # the per-document path reports it, if a document reaches it
        row = join.values(evaluated)
        if row is None:
            return None
        key = orjson.dumps(row)
        place = distinct.get(key)
        if place is None:
            place = distinct[key] = len(rows)
            rows.append(row)
        places.append(place)
    bound = None if join.rest else limits.max_stage_bytes

    def statement(target: str, indexed: dict[str, str]) -> tuple[str, list[Any]]:
        return join.statement(target, indexed, rows, bound)

    try:
        found = await rows_of(source, statement)
    except pushdown.NotCompiled:
        return None
    arrays: list[list[bytes]] = [[] for _ in rows]
    total = 0
    for row in found:
        arrays[int(row[0]) - 1] = row[1]
        total += sum(map(len, row[1]))
    if bound is not None and total > bound:
        raise _exceeded("$lookup", limits)
    out = []
    for place, variables in zip(places, scopes, strict=True):
        # decoded for each document: later stages may change what they are given
        joined = [bsonform.decode(raw) for raw in arrays[place]]
        if join.rest:
            joined = await _sub_pipeline(joined, join.rest, variables, lookup, limits)
        out.append(joined)
    return out


async def _joined_alone(
    source: str,
    sub: list[dict[str, Any]],
    variables: dict[str, Any],
    lookup: Lookup,
    held: Held,
) -> list[dict[str, Any]]:
    """One input document's joined array: the whole collection read, the sub-pipeline
    run over it in Python."""
    rows = await lookup(source, {})
    return await _sub_pipeline(rows, sub, variables, lookup, held.limits)


async def _sub_pipeline(
    rows: list[dict[str, Any]],
    stages: list[dict[str, Any]],
    variables: dict[str, Any],
    lookup: Lookup,
    limits: Limits,
) -> list[dict[str, Any]]:
    """A $lookup's stages over ``rows``, in order: a ``$match``'s ``$expr`` sees the let
    variables (the other stages do not)."""
    for stage in stages:
        name = stage_name(stage)
        arg = stage[name]
        if name == "$match" and isinstance(arg, dict) and "$expr" in arg:
            expr = arg["$expr"]
            plain = {k: v for k, v in arg.items() if k != "$expr"}
            rows = [r for r in rows if truthy(evaluate(expr, r, variables)) and matches(r, plain)]
        else:
            rows = await _stage(name, arg, rows, lookup, limits)
    return rows
