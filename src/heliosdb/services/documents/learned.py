"""What the documents service's pipelined lanes share: the statements the pool path has
answered (only those may take a pipeline, see pipelined.py and updatelane.py) and
running one with its values encoded by its parameter types."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from heliosdb.engine.pipeline import Pipeline, Pipelines, Prepared, Then, Unfit
from heliosdb.security.principals import Principal

MAX_LEARNED = 4096


class Learned:
    """Statements the pool path answered outside a transaction: same SQL text, so same
    table, filter, index hints and limit; they may run on a pipeline."""

    __slots__ = ("_sql",)

    def __init__(self) -> None:
        # each learned statement with what forgets it (made once, not at every run)
        self._sql: dict[str, Callable[[], object]] = {}

    def add(self, sql: str) -> None:
        if sql not in self._sql:
            if len(self._sql) >= MAX_LEARNED:
                self._sql.clear()
            self._sql[sql] = functools.partial(self._sql.pop, sql, None)

    def prepared_now(
        self, pipelines: Pipelines, principal: Principal, sql: str
    ) -> tuple[Pipeline, Prepared] | None:
        """A pipeline of ``principal``'s with ``sql`` prepared, when ``sql`` was learned
        (Pipelines.prepared_now; a statement the engine refuses to prepare is forgotten)."""
        forget = self._sql.get(sql)
        if forget is None:
            return None
        return pipelines.prepared_now(principal.access, principal.id, sql, forget)


def run_encoded(
    pipeline: Pipeline,
    prepared: Prepared,
    encoders: Mapping[int, Callable[[Any], bytes]],
    values: Sequence[Any],
    then: Then,
    at_once: bool = False,
) -> bool:
    """``values`` encoded by ``prepared``'s parameter types (all keys of ``encoders``)
    and run with ``run_then`` (``at_once`` as there); False: a value the encoder refuses
    or a pipeline that takes nothing more, and nothing was sent."""
    encode_each: tuple[Callable[[Any], bytes], ...] | None = prepared.checked  # type: ignore[assignment]
    if encode_each is None:
        # made once per statement
        encode_each = tuple(encoders[oid] for oid in prepared.parameters)
        prepared.checked = encode_each
    try:
        encoded = [encode(value) for encode, value in zip(encode_each, values, strict=True)]
        pipeline.run_then(prepared, encoded, then, at_once=at_once)
    except (Unfit, TypeError, ValueError, OverflowError, struct.error):
        return False  # orjson's JSONEncodeError is a TypeError
    return True
