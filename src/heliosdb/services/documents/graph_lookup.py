"""``$graphLookup``: for each input document, the documents of another collection
reached by following ``connectFromField`` values to ``connectToField`` values, a
breadth-first search from the ``startWith`` values, each found document once (by
``_id``, so cycles end) with its depth.

The searches of all the input documents advance together, one round a depth: a round
asks the engine once for the documents of the ``from`` collection whose
``connectToField`` is one of the values no earlier round asked for, as the filter
``{connectToField: {$in: [...]}}`` (with ``restrictSearchWithMatch``) that filters.py
compiles, so an index on the field serves it. What a round finds is kept by value for
the stage, so a value shared by several searches is asked for once. Array semantics
are MongoDB's: a ``startWith`` or ``connectFromField`` array gives each of its
elements, and a ``connectToField`` array matches any of its elements (and a null
value, a document without the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from heliosdb.errors import invalid
from heliosdb.services.documents.expressions import evaluate
from heliosdb.services.documents.values import MISSING, candidates, hashable

_STRINGS = ("from", "as", "connectFromField", "connectToField", "depthField")
_REQUIRED = ("as", "startWith", "connectFromField", "connectToField")
_MAX_LONG = 2**63


@dataclass(frozen=True, slots=True)
class Spec:
    """A checked ``$graphLookup`` argument."""

    source: str
    alias: str
    start_with: Any
    connect_from: str
    connect_to: str
    max_depth: int | None
    depth_field: str | None
    restrict: dict[str, Any] | None


def parse(arg: Any) -> Spec:
    """``arg`` checked with MongoDB's codes, before any document is read."""
    if not isinstance(arg, dict):
        raise invalid("$graphLookup spec must be an object", kind="failed_to_parse")
    for name, value in arg.items():
        if name in _STRINGS:
            if not isinstance(value, str):
                raise invalid(
                    f"expected string as argument for {name}, found: {value!r}", location=40103
                )
            if name != "from" and value.startswith("$"):
                raise invalid(
                    f"FieldPath field names may not start with '$'. ({name}: {value})",
                    location=16410,
                )
        elif name == "maxDepth":
            _max_depth(value)
        elif name == "restrictSearchWithMatch":
            if not isinstance(value, dict):
                raise invalid("restrictSearchWithMatch must be an object", location=40185)
        elif name != "startWith":
            raise invalid(f"Unknown argument to $graphLookup: {name}", location=40104)
    if "from" not in arg:
        raise invalid("$graphLookup requires a 'from' field", kind="failed_to_parse")
    if not arg["from"]:
        raise invalid("invalid $graphLookup namespace: ''", kind="invalid_namespace")
    if any(name not in arg for name in _REQUIRED):
        raise invalid(
            "$graphLookup requires 'from', 'as', 'startWith', 'connectFromField', and "
            "'connectToField' to be specified.",
            location=40105,
        )
    return Spec(
        source=arg["from"],
        alias=arg["as"],
        start_with=arg["startWith"],
        connect_from=arg["connectFromField"],
        connect_to=arg["connectToField"],
        max_depth=_max_depth(arg["maxDepth"]) if "maxDepth" in arg else None,
        depth_field=arg.get("depthField"),
        restrict=arg.get("restrictSearchWithMatch"),
    )


def _max_depth(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
        raise invalid(f"maxDepth must be numeric, found: {value!r}", location=40100)
    number = value.to_decimal() if isinstance(value, Decimal128) else value
    if number != number:
        raise invalid("maxDepth could not be represented as a long long", location=40102)
    if number < 0:
        raise invalid("maxDepth requires a nonnegative argument", location=40101)
    if number >= _MAX_LONG or number != int(number):
        raise invalid(f"maxDepth could not be represented as a long long: {value}", location=40102)
    return int(number)


async def run(docs: list[dict[str, Any]], arg: Any, lookup: Any, held: Any) -> list[dict[str, Any]]:
    """Each of ``docs`` with its ``as`` array. ``lookup(collection, filter)`` reads
    documents; ``held`` counts what the stage keeps against its memory limit."""
    spec = parse(arg)
    found = _Found(spec, lookup, held)
    searches = [_Search(spec, _spread(evaluate(spec.start_with, doc))) for doc in docs]
    depth = 0
    while spec.max_depth is None or depth <= spec.max_depth:
        active = [s for s in searches if s.frontier]
        if not active:
            break
        await found.ask([v for s in active for v in s.frontier.values()])
        for search in active:
            search.advance(found, depth)
        depth += 1
    out = []
    for doc, search in zip(docs, searches, strict=True):
        joined = search.results()
        if len(docs) > 1:
            held.add_all(joined)  # each output document holds its own array
        out.append(_with(doc, spec.alias, joined))
    return out


class _Found:
    """What the rounds found, by the marker of the value asked for."""

    def __init__(self, spec: Spec, lookup: Any, held: Any) -> None:
        self.spec = spec
        self.lookup = lookup
        self.held = held
        self.by_value: dict[Any, list[dict[str, Any]]] = {}

    async def ask(self, values: list[Any]) -> None:
        wanted: dict[Any, Any] = {}
        for value in values:
            marker = _marker(value)
            if marker not in self.by_value:
                wanted[marker] = value
        if not wanted:
            return
        query: dict[str, Any] = {self.spec.connect_to: {"$in": list(wanted.values())}}
        if self.spec.restrict:
            query = {"$and": [query, self.spec.restrict]}
        rows = await self.lookup(self.spec.source, query)
        self.held.add_all(rows)
        for marker in wanted:
            self.by_value[marker] = []
        for row in rows:
            keys = {_marker(v) for v in candidates(row, self.spec.connect_to)}
            if any(v is None for v in _plain(row, self.spec.connect_to)):
                keys.add(_marker(None))
            for marker in keys & wanted.keys():
                self.by_value[marker].append(row)


def _marker(value: Any) -> Any:
    """The key of a value that equality matches: numbers of every type by value (a
    decimal that a double holds exactly as that double)."""
    if isinstance(value, Decimal128):
        exact = value.to_decimal()
        if exact.is_finite() and exact == Decimal(float(exact)):
            return hashable(float(exact))
    return hashable(value)


def _plain(row: dict[str, Any], path: str) -> list[Any]:
    """The values at ``path`` as a null query sees them: None where it is missing (or
    an array element lacks the rest of it)."""
    current: list[Any] = [row]
    for part in path.split("."):
        following: list[Any] = []
        for value in current:
            items = value if isinstance(value, list) else [value]
            for item in items:
                following.append(item.get(part) if isinstance(item, dict) else None)
        current = following
    return current


class _Search:
    """One input document's search: the values of its next round, what it found."""

    def __init__(self, spec: Spec, start: list[Any]) -> None:
        self.spec = spec
        self.frontier: dict[Any, Any] = {_marker(v): v for v in start}
        self.visited: dict[Any, tuple[dict[str, Any], int]] = {}

    def advance(self, found: _Found, depth: int) -> None:
        following: dict[Any, Any] = {}
        for marker in self.frontier:
            for row in found.by_value[marker]:
                key = hashable(row.get("_id"))
                if key in self.visited:
                    continue
                self.visited[key] = (row, depth)
                for value in (v for at in _at(row, self.spec.connect_from) for v in _spread(at)):
                    following[_marker(value)] = value
        self.frontier = following

    def results(self) -> list[dict[str, Any]]:
        field = self.spec.depth_field
        if field is None:
            return [dict(row) for row, _ in self.visited.values()]
        return [_with(row, field, Int64(depth)) for row, depth in self.visited.values()]


def _at(row: dict[str, Any], path: str) -> list[Any]:
    """Every value at ``path``, arrays on the way and at its end spread."""
    current: list[Any] = [row]
    for part in path.split("."):
        following: list[Any] = []
        for value in current:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and part in item:
                    following.append(item[part])
        current = following
    return current


def _spread(value: Any) -> list[Any]:
    """The values a search follows from ``value``: an array's elements."""
    if isinstance(value, list):
        return list(value)
    return [] if value is MISSING else [value]


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = dict(doc)
    target = out
    parts = path.split(".")
    for part in parts[:-1]:
        inner = target.get(part)
        target[part] = inner = dict(inner) if isinstance(inner, dict) else {}
        target = inner
    target[parts[-1]] = value
    return out
