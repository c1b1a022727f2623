"""``$setWindowFields``: each document gets fields computed over a window of its
partition (the documents with the same ``partitionBy`` value, in ``sortBy`` order).

Window operators: ``$rank``, ``$denseRank``, ``$documentNumber``, ``$shift``, and the
``$group`` accumulators (``$sum $avg $min $max $count $push $addToSet $first $last
$stdDevPop $stdDevSamp`` ...) over a window of ``documents: [lower, upper]`` (positions
relative to the document: ``"unbounded"``, ``"current"`` or a number) or ``range:
[lower, upper]`` (values of the one numeric ``sortBy`` field relative to the
document's, or with ``unit`` of a date one in time units; found by binary search);
without ``window``, the whole partition. The accumulators are the ``$group`` stage's
own (a ``Grouper`` fed the window's documents), so they answer alike. ``$locf``,
``$linearFill``, ``$expMovingAvg``, ``$derivative`` and ``$integral`` are fills.py's.

The stage holds its input (counted against the stage limit by the caller) and returns
it sorted by partition, then ``sortBy``, as MongoDB does.
"""

from __future__ import annotations

import datetime as dt
import functools
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from heliosdb.errors import invalid
from heliosdb.services.documents import fills
from heliosdb.services.documents.bsonform import date_millis
from heliosdb.services.documents.expression_scope import is_number, number, present
from heliosdb.services.documents.expressions import evaluate, field_values
from heliosdb.services.documents.values import MISSING, compare, hashable

# a $group over one window: its spec in, a grouper (feed, rows) out
GroupMaker = Callable[[dict[str, Any]], Any]
Sorter = Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]
_RANKS = ("$rank", "$denseRank", "$documentNumber")
_UNBOUNDED = "unbounded"
_CURRENT = "current"


def _check(arg: Any) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    if not isinstance(arg, dict) or not isinstance(arg.get("output"), dict):
        raise invalid("$setWindowFields requires an 'output' object", kind="failed_to_parse")
    unknown = set(arg) - {"partitionBy", "sortBy", "output"}
    if unknown:
        raise invalid(
            f"$setWindowFields got an unknown field: {sorted(unknown)[0]}", kind="failed_to_parse"
        )
    sort = arg.get("sortBy")
    if sort is not None and (
        not isinstance(sort, dict) or not sort or any(d not in (1, -1) for d in sort.values())
    ):
        raise invalid("$setWindowFields 'sortBy' must be fields and 1 or -1", kind="bad_value")
    return arg.get("partitionBy"), sort, arg["output"]


def run(
    docs: list[dict[str, Any]], arg: Any, make_group: GroupMaker, sort_docs: Sorter
) -> list[dict[str, Any]]:
    partition_by, sort, output = _check(arg)
    fields = [(name, _Field(name, spec, sort)) for name, spec in output.items()]
    ordered = sort_docs(docs, sort) if sort else list(docs)
    partitions: dict[Any, list[dict[str, Any]]] = {}
    keys: list[Any] = []
    for doc in ordered:
        key = present(evaluate(partition_by, doc)) if partition_by is not None else None
        marker = hashable(key)
        if marker not in partitions:
            partitions[marker] = []
            keys.append((key, marker))
        partitions[marker].append(doc)
    keys.sort(key=lambda item: functools.cmp_to_key(compare)(item[0]))
    out: list[dict[str, Any]] = []
    for _, marker in keys:
        members = partitions[marker]
        computed = [field.values(members, make_group) for _, field in fields]
        for i, doc in enumerate(members):
            new = dict(doc)
            for (name, _), values in zip(fields, computed, strict=True):
                value = values[i]
                if value is not MISSING:
                    _set_path(new, name, value)
            out.append(new)
    return out


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = doc
    for part in parts[:-1]:
        inner = target.get(part)
        inner = dict(inner) if isinstance(inner, dict) else {}
        target[part] = inner
        target = inner
    target[parts[-1]] = value


class _Field:
    """One output field: its operator, argument and window."""

    def __init__(self, name: str, spec: Any, sort: dict[str, Any] | None) -> None:
        if not isinstance(spec, dict):
            raise invalid(
                f"$setWindowFields output '{name}' must be an object", kind="failed_to_parse"
            )
        ops = [k for k in spec if k != "window"]
        if len(ops) != 1:
            raise invalid(
                f"$setWindowFields output '{name}' needs exactly one window operator",
                kind="failed_to_parse",
            )
        self.op = ops[0]
        self.arg = spec[self.op]
        self.sort = sort
        window = spec.get("window")
        if self.op in _RANKS or self.op == "$shift":
            if window is not None:
                raise invalid(f"{self.op} does not accept a 'window'", kind="failed_to_parse")
            if not sort:
                raise invalid(f"{self.op} requires a 'sortBy'", kind="failed_to_parse")
            if self.op in ("$rank", "$denseRank") and len(sort) != 1:
                raise invalid(f"{self.op} requires a 'sortBy' of one field", kind="bad_value")
        if self.op in fills.WALKING:
            if window is not None:
                raise invalid(f"{self.op} does not accept a 'window'", kind="failed_to_parse")
            if self.op != "$locf" and not sort:
                raise invalid(f"{self.op} requires a 'sortBy'", kind="failed_to_parse")
            if self.op == "$linearFill" and len(sort or {}) != 1:
                raise invalid("$linearFill requires a 'sortBy' of one field", kind="bad_value")
            if self.op == "$expMovingAvg":
                fills.check_exp_moving_avg(self.arg)
        if self.op in fills.AXIS:
            fills.check_axis(self.arg, self.op)
            if not sort or len(sort) != 1:
                raise invalid(f"{self.op} requires a 'sortBy' of one field", kind="bad_value")
            if self.op == "$derivative" and window is None:
                raise invalid("$derivative requires explicit window bounds", kind="failed_to_parse")
        self.kind, self.bounds, self.unit = _window(window, sort, self.op)

    def values(self, docs: list[dict[str, Any]], make_group: GroupMaker) -> list[Any]:
        if self.op in _RANKS:
            return self._ranks(docs)
        if self.op == "$shift":
            return self._shift(docs)
        if self.op == "$locf":
            return fills.locf(docs, self.arg)
        if self.op == "$linearFill":
            assert self.sort is not None
            return fills.linear_fill(docs, self.arg, self.sort)
        if self.op == "$expMovingAvg":
            return fills.exp_moving_avg(docs, self.arg)
        if self.op in fills.AXIS:
            return self._axis(docs)
        spec = {"_id": None, "r": {self.op: self.arg}}
        if self.kind == "all":
            result = _folded(make_group(spec), docs, self.op)
            return [result] * len(docs)
        if self.kind == "documents" and self.bounds == (_UNBOUNDED, 0):
            group = make_group(spec)  # a running fold: each document adds itself
            out = []
            for doc in docs:
                group.feed([doc])
                out.append(_result(group, self.op))
            return out
        return [_folded(make_group(spec), docs[a:b], self.op) for a, b in self._spans(docs)]

    def _spans(self, docs: list[dict[str, Any]]) -> list[tuple[int, int]]:
        n = len(docs)
        low, high = self.bounds
        if self.kind == "documents":
            return [
                (
                    0 if low == _UNBOUNDED else max(0, i + int(low)),
                    n if high == _UNBOUNDED else min(n, i + int(high) + 1),
                )
                for i in range(n)
            ]
        return self._range_spans(docs)

    def _range_spans(self, docs: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Each document's window of a range: the documents whose sortBy value is
        within the bounds of its own ("current": the document itself), found by binary
        search in the partition's ascending values."""
        assert self.sort is not None
        path = next(iter(self.sort))
        low, high = self.bounds
        values = [present(field_values(d, path)) for d in docs]
        keys = [_range_key(v, self.unit) for v in values]
        spans = []
        for i, (value, key) in enumerate(zip(values, keys, strict=True)):
            if low == _UNBOUNDED:
                start = 0
            elif low == _CURRENT:
                start = i
            else:
                start = bisect_left(keys, self._moved(value, key, low))
            if high == _UNBOUNDED:
                end = len(docs)
            elif high == _CURRENT:
                end = i + 1
            else:
                end = bisect_right(keys, self._moved(value, key, high))
            spans.append((start, max(start, end)))
        return spans

    def _moved(self, value: Any, key: float, offset: float) -> float:
        if self.unit is None:
            return key + offset
        return fills.shifted(value, self.unit, offset)

    def _axis(self, docs: list[dict[str, Any]]) -> list[Any]:
        """``$derivative``/``$integral`` over each document's window."""
        assert self.sort is not None
        expr, unit = fills.check_axis(self.arg, self.op)
        xs = [fills.axis(fills.sort_value(d, self.sort), unit, self.op) for d in docs]
        ys = [evaluate(expr, d) for d in docs]

        def over(a: int, b: int) -> Any:
            if self.op == "$derivative":
                return fills.derivative(ys[a:b], xs[a:b])
            return fills.integral(ys[a:b], xs[a:b])

        if self.kind == "all":
            return [over(0, len(docs))] * len(docs)
        return [over(a, b) for a, b in self._spans(docs)]

    def _ranks(self, docs: list[dict[str, Any]]) -> list[Any]:
        if self.op == "$documentNumber":
            return list(range(1, len(docs) + 1))
        assert self.sort is not None
        path = next(iter(self.sort))
        out: list[Any] = []
        previous: Any = MISSING
        rank = dense = 0
        for i, doc in enumerate(docs):
            value = present(field_values(doc, path))
            if previous is MISSING or compare(value, previous) != 0:
                rank, dense = i + 1, dense + 1
                previous = value
            out.append(rank if self.op == "$rank" else dense)
        return out

    def _shift(self, docs: list[dict[str, Any]]) -> list[Any]:
        arg = self.arg
        if not isinstance(arg, dict) or "output" not in arg or "by" not in arg:
            raise invalid("$shift requires 'output' and 'by'", kind="failed_to_parse")
        by = arg["by"]
        if isinstance(by, bool) or not is_number(by) or number(by) != int(number(by)):
            raise invalid("$shift's 'by' must be an integer", kind="bad_value")
        default = arg.get("default")
        n = len(docs)
        return [
            present(evaluate(arg["output"], docs[i + int(by)])) if 0 <= i + int(by) < n else default
            for i in range(n)
        ]


def _range_key(value: Any, unit: str | None) -> float:
    """A sortBy value as a range window measures it: a number, or (with ``unit``) a
    date's milliseconds."""
    if unit is not None:
        if not isinstance(value, dt.datetime):
            raise invalid("a range window with 'unit' needs Date 'sortBy' values", location=5429513)
        return float(date_millis(value))
    if not is_number(value) or isinstance(value, bool):
        raise invalid("a range window needs numeric 'sortBy' values", kind="type_mismatch")
    return float(number(value))


def _window(
    window: Any, sort: dict[str, Any] | None, op: str
) -> tuple[str, tuple[Any, Any], str | None]:
    if window is None:
        return "all", (_UNBOUNDED, _UNBOUNDED), None
    kinds = [k for k in ("documents", "range") if isinstance(window, dict) and k in window]
    if len(kinds) != 1 or set(window) - {kinds[0], "unit"}:
        raise invalid(
            "a window takes one of 'documents' or 'range' (and a 'unit' with 'range')",
            kind="failed_to_parse",
        )
    kind = kinds[0]
    bounds = window[kind]
    unit = None
    if "unit" in window:
        if kind != "range":
            raise invalid("a window's 'unit' goes with a 'range'", kind="failed_to_parse")
        unit = fills.check_unit(window["unit"], "a window's 'unit'", fills.UNITS)
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise invalid(f"a '{kind}' window needs [lower, upper]", kind="failed_to_parse")
    parsed = tuple(_bound(b, kind, unit) for b in bounds)
    if kind == "range" and (not sort or len(sort) != 1):
        raise invalid("Range-based bounds require sortBy a single field", location=5339902)
    if kind == "range" and sort and next(iter(sort.values())) != 1:
        raise invalid("Range-based bounds require an ascending sortBy", location=8947401)
    if kind == "documents" and not sort and parsed != (_UNBOUNDED, _UNBOUNDED):
        raise invalid("a 'documents' window needs a 'sortBy'", kind="bad_value")
    low, high = (0 if b == _CURRENT else b for b in parsed)
    if low != _UNBOUNDED and high != _UNBOUNDED and low > high:
        raise invalid("a window's lower bound must not be past its upper bound", kind="bad_value")
    if parsed == (_UNBOUNDED, _UNBOUNDED):
        return "all", parsed, unit
    return kind, parsed, unit


def _bound(value: Any, kind: str, unit: str | None) -> Any:
    if value == _UNBOUNDED:
        return _UNBOUNDED
    if value == _CURRENT:
        # a range's "current" is the document itself, not the values equal to its own
        return _CURRENT if kind == "range" else 0
    if isinstance(value, bool) or not is_number(value):
        raise invalid(
            "a window bound is 'unbounded', 'current' or a number", kind="failed_to_parse"
        )
    if (kind == "documents" or unit is not None) and number(value) != int(number(value)):
        raise invalid(
            f"a '{kind}' window bound {'with a unit ' if unit else ''}must be an integer",
            kind="failed_to_parse",
        )
    return float(number(value)) if kind == "range" else int(number(value))


# what an accumulator gives an empty window
_EMPTY = {"$sum": 0, "$count": 0, "$push": [], "$addToSet": []}


def _folded(group: Any, docs: list[dict[str, Any]], op: str) -> Any:
    group.feed(docs)
    return _result(group, op)


def _result(group: Any, op: str) -> Any:
    rows = group.rows()
    if not rows:
        empty = _EMPTY.get(op)
        return list(empty) if isinstance(empty, list) else empty
    value = rows[0]["r"]
    return list(value) if isinstance(value, list) else value  # lists keep growing
