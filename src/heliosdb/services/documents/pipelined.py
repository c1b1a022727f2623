"""Finds on pipelined engine connections, started without a coroutine.

The MongoDB hot path (interfaces/mongodb/hotpath.py ``take_lone``) hands a plain find
here from the socket's read callback. When the find's statement is one the pool path
has already answered outside a transaction (``learn``: same SQL text, so same table,
filter, index hints and limit), and the principal's pipelined connection
(engine/pipeline.py, two per access level and principal, as a kept pool session) has it
prepared, its values are encoded here and the statement goes out with the others of the
same loop step in one write, its own Bind/Execute/Sync (its own implicit transaction
and snapshot, as a pooled statement has). ``done`` then gets the stored BSON of each
row, exactly the bytes the pool path returns, called from the pipeline's read callback
(``run_then``). Finds by one plain ``_id`` of one loop step are gathered when the
step's statements are written (``before_flush``) and go out as one statement, as
lookups.py batches them on the pool path (``batch_statement``: up to 32 ids as that
many parameters, so the engine keeps one generic plan); so do a step's finds by one
scalar equality on an indexed field with the same limit (lookups.py ``equal_sql``:
each value's own condition and limit in a ``LATERAL`` subquery, up to 32 values). A
find_one of that kind alone in its step runs its scalar half first (``_first``).

Whatever this path cannot do as the pool would (a statement not learned or not yet
prepared here, a parameter or column type other than jsonb/bigint and bytea, a value
the encoder refuses, a busy or closed pipeline) makes ``start`` say False and nothing
ran; an engine error, a timeout or a changed plan gives ``done(None)``: the caller then
answers through the pool path, which runs the find again and reports what it finds.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from heliosdb.engine import Engine
from heliosdb.engine.codecs import json_default
from heliosdb.engine.pipeline import Pipeline, Pipelines, Prepared, Unfit
from heliosdb.engine.roles import Access
from heliosdb.security.principals import Principal
from heliosdb.services.documents.learned import MAX_LEARNED, Learned, run_encoded
from heliosdb.services.documents.lookups import Batched

BYTEA, INT8, JSONB, JSONB_ARRAY = 17, 20, 3802, 3807
_INT = struct.Struct("!i")
_INT64 = struct.Struct("!q")
_ARRAY_HEAD = struct.Struct("!iiiii")  # dimensions, has nulls, element type, size, lower bound
_NULL = b"\xff\xff\xff\xff"
Done = Callable[[list[bytes] | None], None]
FIRST_MISS, FIRST_OFF = 8, 8  # _first's weight of a miss, and where it stops trying


def _encode_jsonb(value: Any) -> bytes:
    # jsonb's binary form: version 1, then the text the pool's codec sends
    # (engine/codecs.py: orjson with json_default)
    return b"\x01" + orjson.dumps(value, default=json_default)


def _encode_int8(value: Any) -> bytes:
    if type(value) is not int:
        raise TypeError
    return _INT64.pack(value)


def _encode_jsonb_array(values: Any) -> bytes:
    parts = [_ARRAY_HEAD.pack(1, 0, JSONB, len(values), 1)]
    for value in values:
        item = _encode_jsonb(value)
        parts += (_INT.pack(len(item)), item)
    return b"".join(parts)


_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    JSONB: _encode_jsonb,
    INT8: _encode_int8,
    JSONB_ARRAY: _encode_jsonb_array,
}


class _Step:
    """The finds of one loop step waiting to go out together (by _id, or by one
    equality with the same limit)."""

    __slots__ = ("batch", "finds", "pipeline", "prepared", "sql")

    def __init__(self, pipeline: Pipeline, prepared: Prepared, sql: str, batch: Batched) -> None:
        self.batch = batch
        self.pipeline = pipeline  # picked for the step's first find; its statements go there
        self.prepared = prepared  # the single find's statement, for a find that goes alone
        self.sql = sql
        self.finds: list[tuple[Sequence[Any], Done]] = []


# a step's principal (id and access level), Batched's target and condition, and the
# limit of an equality (strings: hashed in C, where a frozen dataclass's hash is a
# Python call)
StepKey = tuple[str, Access, str, str | None, Any]


class PipelinedFinds:
    """The documents service's pipelined connections and the find statements they run."""

    def __init__(self, engine: Engine) -> None:
        settings = {**engine.session_settings(), "application_name": "heliosdb-documents"}
        self.pipelines = Pipelines(
            engine, settings, frozenset({BYTEA, INT8}), _ENCODERS.keys(), one_write=True
        )
        engine.closers.append(self.pipelines.close)
        self._learned = Learned()
        self._steps: dict[StepKey, _Step] = {}
        # by equality statement: how often its scalar half alone found nothing (_first)
        self._misses: dict[str, int] = {}
        self.answered = 0  # finds answered here (serverStatus)
        # statements that answered several finds, and the finds they answered: by _id,
        # by an equality (lookups.Batched.where)
        self.batches = {False: 0, True: 0}
        self.batched = {False: 0, True: 0}

    def learn(self, sql: str) -> None:
        """The pool path answered ``sql`` outside a transaction: it may come here."""
        self._learned.add(sql)

    def start(
        self,
        principal: Principal,
        sql: str,
        values: Sequence[Any],
        done: Done,
        batch: Batched | None = None,
    ) -> bool:
        """Run ``sql`` with ``values`` for ``principal``; False: nothing started (see the
        module docstring), else ``done`` is called once with the rows' BSON or None.

        ``batch``: ``sql`` finds one ``_id`` (``values[0]``), or the matches of one
        scalar equality (``values[0]``) up to a limit (``values[-1]``), and ``batch``
        makes the statement for many: the finds of one loop step with the same
        ``batch`` (and limit) go out together, each answered from its own position
        (they were all in flight at once, so one snapshot for all of them is a valid
        order). The step's first find picks the pipeline, and a later one of the same
        statement joins it without asking again (in the same loop step, nothing it
        was picked on has changed)."""
        if batch is not None:
            where = batch.where
            key = (
                principal.id,
                principal.access,
                batch.target,
                where,
                None if where is None else values[-1],
            )
            step = self._steps.get(key)
            if step is not None and (step.sql is sql or step.sql == sql):
                step.finds.append((values, done))
                return True
        now = self._learned.prepared_now(self.pipelines, principal, sql)
        if now is None:
            return False
        pipeline, prepared = now
        if batch is not None:
            if step is None:
                step = self._steps[key] = _Step(pipeline, prepared, sql, batch)
                pipeline.before_flush(functools.partial(self._go, key))
            step.finds.append((values, done))
            return True
        return self._run(pipeline, prepared, sql, values, done)

    def _run(
        self, pipeline: Pipeline, prepared: Prepared, sql: str, values: Sequence[Any], done: Done
    ) -> bool:
        # its parameter types are all in _ENCODERS
        then = functools.partial(self._answered, pipeline, sql, done)
        return run_encoded(pipeline, prepared, _ENCODERS, values, then)

    def _answered(
        self,
        pipeline: Pipeline,
        sql: str,
        done: Done,
        result: tuple[list[bytes], bytes] | None,
        error: BaseException | None,
    ) -> None:
        if result is None:
            if isinstance(error, asyncpg.PostgresError):
                pipeline.forget(sql)  # prepared again next time (or refused then)
            done(None)
            return
        rows = result[0]
        found: list[bytes] = []
        for row in rows:
            # DataRow: int16 column count (1), int32 length, the column's bytes
            if row[2:6] == _NULL:
                done(None)
                return
            found.append(row[6:])
        self.answered += 1
        done(found)

    def _go(self, key: StepKey) -> None:
        """The step's finds of one kind: several in one statement, one alone in its own,
        on the pipeline picked for the step (where the step's other statements go, so
        they share its write)."""
        step = self._steps.pop(key)
        pipeline = step.pipeline
        batch_of = step.batch
        finds = step.finds
        while len(finds) > 1:
            most = batch_of.most
            some, rest = finds[:most], finds[most:]
            # find_ones: their scalar half first (as _first), those it misses alone after
            first = batch_of.scalar is not None and some[0][0][-1] == 1 and self._tries(step)
            sql, params = batch_of.statement([values for values, _ in some], first)
            batch = self.pipelines.ready_on(pipeline, sql)
            if batch is None:
                break  # prepared in the background meanwhile: each goes alone this time
            try:
                # by the parameters' types; NULL for the padding
                encoded = [
                    None if v is None else _ENCODERS[oid](v)
                    for oid, v in zip(batch.parameters, params, strict=True)
                ]
                pipeline.run_then(
                    batch,
                    encoded,
                    functools.partial(
                        self._batch_answered,
                        pipeline,
                        sql,
                        some,
                        batch_of.where is not None,
                        step if first else None,
                    ),
                )
            except (Unfit, TypeError, ValueError, OverflowError, KeyError, struct.error):
                break
            finds = rest
        first = batch_of.first
        for values, done in finds:
            if (
                first is not None
                and values[-1] == 1
                and self._first(pipeline, step, first, values, done)
            ):
                continue
            if not self._run(pipeline, step.prepared, step.sql, values, done):
                done(None)

    def _first(
        self, pipeline: Pipeline, step: _Step, first: str, values: Sequence[Any], done: Done
    ) -> bool:
        """A find_one by one equality, alone in its step: its scalar half first
        (lookups.scalar_first), the union only when that finds nothing. Not while the
        statement's finds mostly find nothing (``_misses``: each miss adds FIRST_MISS,
        each hit and each find not tried takes one off, tried below FIRST_OFF: on while
        fewer than about one in nine miss). False: nothing started."""
        if self._misses and not self._tries(step):  # (none: every one found so far)
            return False
        prepared = pipeline.ready(first)
        if prepared is None:
            self.pipelines.ready_on(pipeline, first)  # prepared in the background
            return False
        then = functools.partial(self._first_answered, pipeline, step, values, done)
        return run_encoded(pipeline, prepared, _ENCODERS, values[:1], then)  # the value

    def _tries(self, step: _Step) -> bool:
        """Whether the step's find_ones take their scalar half first (``_first``)."""
        misses = self._misses.get(step.sql)
        if misses is not None and misses >= FIRST_OFF:
            self._misses[step.sql] = misses - 1
            return False
        return True

    def _missed(self, sql: str, hits: int, misses: int) -> None:
        """Count finds of the equality statement ``sql`` whose scalar half alone found
        a document (``hits``) or not (``misses``, each FIRST_MISS)."""
        count = self._misses.get(sql, 0) + misses * FIRST_MISS - hits
        if count > 0:
            if len(self._misses) >= MAX_LEARNED:
                self._misses.clear()
            self._misses[sql] = count
        elif self._misses:
            self._misses.pop(sql, None)

    def _first_answered(
        self,
        pipeline: Pipeline,
        step: _Step,
        values: Sequence[Any],
        done: Done,
        result: tuple[list[bytes], bytes] | None,
        error: BaseException | None,
    ) -> None:
        if result is not None and result[0]:  # the limit (1) filled: the union's rows
            if self._misses:
                self._missed(step.sql, 1, 0)
            self._answered(pipeline, step.batch.first, done, result, None)  # type: ignore[arg-type]
            return
        if result is None:
            if isinstance(error, asyncpg.PostgresError):
                pipeline.forget(step.batch.first)  # type: ignore[arg-type]
            done(None)
            return
        self._missed(step.sql, 0, 1)
        if not self._run(pipeline, step.prepared, step.sql, values, done):
            done(None)

    def _batch_answered(
        self,
        pipeline: Pipeline,
        sql: str,
        finds: list[tuple[Sequence[Any], Done]],
        equality: bool,
        first: _Step | None,
        result: tuple[list[bytes], bytes] | None,
        error: BaseException | None,
    ) -> None:
        """``first``: the statement was the finds' scalar half (the step's): those it
        found nothing for run their own union statement now."""
        found: list[list[bytes]] | None = None
        if result is not None:
            found = [[] for _ in finds]
            for row in result[0]:
                # DataRow: int16 2, int32 8, int64 position, int32 length, the BSON
                position = _INT64.unpack_from(row, 6)[0]
                if row[14:18] == _NULL or not 0 < position <= len(finds):
                    found = None  # (a padding NULL never matches: no such position)
                    break
                found[position - 1].append(row[18:])
        elif isinstance(error, asyncpg.PostgresError):
            pipeline.forget(sql)
        if found is None:
            for _, done in finds:
                done(None)
            return
        self.answered += len(finds)
        self.batches[equality] += 1
        self.batched[equality] += len(finds)
        if first is not None:
            missed = [find for find, docs in zip(finds, found, strict=True) if not docs]
            self._missed(first.sql, len(finds) - len(missed), len(missed))
            for values, done in missed:
                self.answered -= 1  # (counted when its union answers)
                if not self._run(pipeline, first.prepared, first.sql, values, done):
                    done(None)
        for (_, done), docs in zip(finds, found, strict=True):
            if docs or first is None:
                done(docs)
