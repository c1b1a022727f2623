"""``$group`` accumulators that keep more than a running value or a list: standard
deviations, ``$mergeObjects``, and the n-element ones (``$firstN $lastN $maxN $minN``,
``$top $bottom $topN $bottomN``). Each group holds one accumulator object per such
field; what it keeps is bounded by its ``n`` and counted against the stage's limit."""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol

from heliosdb.errors import invalid
from heliosdb.services.documents.expression_scope import is_number, number, present
from heliosdb.services.documents.expressions import evaluate, field_values
from heliosdb.services.documents.values import MISSING, compare


class Held(Protocol):
    """What ``pipeline.Held`` offers an accumulator: the stage's byte count."""

    def add(self, value: Any) -> None: ...

    def drop(self, value: Any) -> None: ...


class _Deviation:
    """``$stdDevPop``/``$stdDevSamp`` over the numbers seen (Welford's running sums)."""

    def __init__(self, op: str, expr: Any) -> None:
        self.sample = op == "$stdDevSamp"
        self.expr = expr
        self.count = 0
        self.mean = 0.0
        self.squares = 0.0

    def add(self, doc: Any, held: Held) -> None:
        value = evaluate(self.expr, doc)
        if not is_number(value) or isinstance(value, bool):
            return  # non-numbers are ignored, as MongoDB does
        x = float(number(value))
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.squares += delta * (x - self.mean)

    def result(self) -> Any:
        n = self.count - 1 if self.sample else self.count
        return math.sqrt(self.squares / n) if n > 0 else None


class _Merge:
    """``$mergeObjects``: later documents' fields win; null and missing are skipped."""

    def __init__(self, op: str, expr: Any) -> None:
        self.expr = expr
        self.merged: dict[str, Any] = {}

    def add(self, doc: Any, held: Held) -> None:
        value = evaluate(self.expr, doc)
        if value is None or value is MISSING:
            return
        if not isinstance(value, dict):
            raise invalid(
                f"$mergeObjects requires object inputs, but input is of type "
                f"{type(value).__name__}",
                kind="type_mismatch",
            )
        held.add(value)
        self.merged.update(value)

    def result(self) -> Any:
        return self.merged


def _count(op: str, spec: dict[str, Any]) -> int:
    n = evaluate(spec.get("n", MISSING), {})
    if isinstance(n, bool) or not is_number(n) or number(n) != int(number(n)) or number(n) < 1:
        raise invalid(f"'n' must be a positive integer constant for {op}", kind="bad_value")
    return int(number(n))


def _sort_key(sort: Any, op: str) -> Any:
    if not isinstance(sort, dict) or not sort or any(d not in (1, -1) for d in sort.values()):
        raise invalid(f"{op} requires a 'sortBy' document of fields and 1 or -1", kind="bad_value")

    def order(a: Any, b: Any) -> int:
        for path, direction in sort.items():
            c = compare(present(field_values(a, path)), present(field_values(b, path)))
            if c:
                return c * int(direction)
        return 0

    return functools.cmp_to_key(order)


class _Several:
    """The n-element accumulators. ``$firstN``/``$lastN`` keep arrival order and nulls;
    ``$maxN``/``$minN`` keep the largest or smallest values, nulls left out;
    ``$top``/``$bottom`` (n 1, a value) and ``$topN``/``$bottomN`` keep the outputs of
    the documents that sort first or last by ``sortBy``."""

    def __init__(self, op: str, spec: Any) -> None:
        ranked = op in ("$top", "$bottom", "$topN", "$bottomN")
        fields = ("sortBy", "output") if ranked else ("input",)
        allowed = fields if op in ("$top", "$bottom") else (*fields, "n")
        if not isinstance(spec, dict) or set(spec) != set(allowed):
            raise invalid(f"{op} needs exactly {', '.join(allowed)}", kind="failed_to_parse")
        self.op = op
        self.n = 1 if op in ("$top", "$bottom") else _count(op, spec)
        self.sort = _sort_key(spec["sortBy"], op) if "sortBy" in spec else None
        self.expr = spec.get("output", spec.get("input"))
        self.kept: list[tuple[Any, Any]] = []  # (what orders it, the value)

    def add(self, doc: Any, held: Held) -> None:
        value = present(evaluate(self.expr, doc))
        op, kept = self.op, self.kept
        if op == "$firstN":
            if len(kept) < self.n:
                kept.append((None, value))
                held.add(value)
            return
        if op in ("$maxN", "$minN"):
            if value is None:
                return
            key: Any = functools.cmp_to_key(compare)(value)
        elif op == "$lastN":
            key = None
        else:
            key = self.sort(doc) if self.sort is not None else None
        kept.append((key, value))
        held.add(value)
        if len(kept) > 2 * self.n:  # trim now and then, not at every document
            self._trim(held)

    def _trim(self, held: Held) -> None:
        kept, n = self.kept, self.n
        if self.op == "$lastN":
            dropped, self.kept = kept[:-n], kept[-n:]
        elif self.op in ("$bottom", "$bottomN"):  # the last n, still in sort order
            ordered = sorted(kept, key=lambda item: item[0])
            dropped, self.kept = ordered[:-n], ordered[-n:]
        else:  # $maxN from the largest down; $minN, $top, $topN from the first up
            ordered = sorted(kept, key=lambda item: item[0], reverse=self.op == "$maxN")
            dropped, self.kept = ordered[n:], ordered[:n]
        for _, value in dropped:
            held.drop(value)

    def result(self) -> Any:
        if self.op != "$firstN":
            self._trim(_Unheld())
        values = [value for _, value in self.kept]
        if self.op in ("$top", "$bottom"):
            return values[0] if values else None
        return values


class _Unheld:
    """No count: the trim of a group's result, which the stage no longer holds."""

    def add(self, value: Any) -> None:
        pass

    def drop(self, value: Any) -> None:
        pass


_MADE = {
    "$stdDevPop": _Deviation,
    "$stdDevSamp": _Deviation,
    "$mergeObjects": _Merge,
    **{
        op: _Several
        for op in ("$firstN", "$lastN", "$maxN", "$minN", "$top", "$bottom", "$topN", "$bottomN")
    },
}
NAMES = tuple(_MADE)


def make(op: str, expr: Any) -> Any:
    """A new accumulator for ``op`` (one of ``NAMES``): ``add(doc, held)``, ``result()``."""
    return _MADE[op](op, expr)
