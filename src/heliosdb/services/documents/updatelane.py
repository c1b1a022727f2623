"""update_one on pipelined engine connections, started without a coroutine.

The MongoDB lone-update path (interfaces/mongodb/loneupdate.py) hands an update_one
with a top-level ``$set``/``$inc`` (inplace.py) here from the socket's read callback.
When its in-place statement is one the pool path has already run outside a transaction
(``learn``: same SQL text, so same table, filter and index hints) and the principal's
pipelined connection (engine/pipeline.py, four per principal here, as kept pool sessions)
has it prepared and idle, the values are encoded here and the statement is written at
once (after any of the same loop step already waiting), its own Bind/Execute/Sync: its
own implicit transaction, committed before the engine says ReadyForQuery, exactly the
one statement (row lock, new forms, write) the pool path runs. ``done`` then gets
(matched, modified) from the pipeline's read callback (``run_then``).

What this path does not answer itself, it leaves to the pool path, which runs the update
again and reports what it finds; it only does so when nothing was written:

- ``start`` says False (nothing ran): a statement not learned or not yet prepared here,
  a parameter or column type other than those below, a value the encoder refuses, a
  busy or closed pipeline;
- ``done(None)``: the engine refused the statement (any engine error rolls the implicit
  transaction back: a duplicate key, a missing table, a changed plan, a lock timeout),
  the function left the document alone (``unsupported``: a type it does not handle) or
  nothing matched an upsert.

A timeout of the client-side bound or a lost engine connection may come after the
commit: the update is not run again (an ``$inc`` would count twice) and ``done`` gets
the error the pool path would report (``from_engine``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from heliosdb.engine import Engine
from heliosdb.engine.pipeline import ENCODERS, Pipeline, Pipelines
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import HeliosError
from heliosdb.security.principals import Principal
from heliosdb.services.documents.learned import Learned, run_encoded
from heliosdb.services.documents.pipelined import BYTEA, INT8, JSONB
from heliosdb.services.documents.pipelined import _encode_jsonb as encode_jsonb

INT4, TEXT = 23, 25
# its engine connections' application_name (the finds' are heliosdb-documents)
APPLICATION_NAME = "heliosdb-documents-updates"
# DataRow of (matched, modified, unsupported): int16 3, then (int32 4, int4) three times
_ROW = struct.Struct("!hiiiiii")
Outcome = tuple[int, int] | HeliosError | None
Done = Callable[[Outcome], None]


def _encode_bytea(value: Any) -> bytes:
    if type(value) is not bytes:
        raise TypeError
    return value


_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    JSONB: encode_jsonb,
    INT8: ENCODERS[INT8],
    TEXT: ENCODERS[TEXT],
    BYTEA: _encode_bytea,
}


class _Pipelines(Pipelines):
    # Updates do not queue behind each other on one connection (see ``start``): a
    # principal gets another connection whenever all of its are busy, up to the engine
    # pool's size (``engine.pool_size``; all principals' together up to twice that), so
    # each of its clients at work at once finds one free. With four at most, sixteen
    # clients updating at once sent three in four updates down the pool path, at about
    # 1.5x the node's CPU per update.
    GROWS = True

    def __init__(self, engine: Engine, *args: Any) -> None:
        super().__init__(engine, *args)
        self.PER_OWNER = max(1, engine.settings.pool_size)
        self.MAX_GROWN = 2 * self.PER_OWNER  # four each for eight owners before


class UpdateLane:
    """The documents service's pipelined connections for in-place updates."""

    def __init__(self, engine: Engine) -> None:
        settings = {**engine.session_settings(), "application_name": APPLICATION_NAME}
        self.pipelines = _Pipelines(engine, settings, frozenset({INT4}), _ENCODERS.keys())
        engine.closers.append(self.pipelines.close)
        self._learned = Learned()
        self.answered = 0  # updates answered here

    def learn(self, sql: str) -> None:
        """The pool path ran ``sql`` outside a transaction: it may come here."""
        self._learned.add(sql)

    def start(
        self, principal: Principal, sql: str, values: Sequence[Any], upsert: bool, done: Done
    ) -> bool:
        """Run the in-place statement ``sql`` with ``values`` for ``principal``; False:
        nothing started, else ``done`` is called once (see the module docstring)."""
        now = self._learned.prepared_now(self.pipelines, principal, sql)
        if now is None:
            return False
        pipeline, prepared = now
        if pipeline.in_flight:
            # All the principal's pipelines are busy: an update queued behind another
            # would wait for that one's commit (its WAL flush) on the same backend, where
            # the pool path's connections commit side by side (and flush together).
            return False
        # written at once: the client waits for nothing else, and the loop's other
        # ready work (change capture of the last update) would delay it
        then = _Update(self, pipeline, sql, upsert, done)
        return run_encoded(pipeline, prepared, _ENCODERS, values, then, at_once=True)


class _Update:
    """One started update: what its statement's answer means (``run_then``'s callback)."""

    __slots__ = ("done", "lane", "pipeline", "sql", "upsert")

    def __init__(
        self, lane: UpdateLane, pipeline: Pipeline, sql: str, upsert: bool, done: Done
    ) -> None:
        self.lane, self.pipeline, self.sql, self.upsert, self.done = (
            lane,
            pipeline,
            sql,
            upsert,
            done,
        )

    def __call__(
        self, result: tuple[list[bytes], bytes] | None, error: BaseException | None
    ) -> None:
        done = self.done
        if result is None:
            if _rolled_back(error):
                if not isinstance(error, asyncpg.IntegrityConstraintViolationError):
                    self.pipeline.forget(self.sql)  # prepared again next time (or refused)
                done(None)  # rolled back: the pool path runs it again and reports
            else:
                done(from_engine(error or ConnectionError()))  # it may have committed
            return
        rows = result[0]
        if len(rows) != 1 or len(rows[0]) != _ROW.size:
            done(None)
            return
        _, _, matched, _, modified, _, unsupported = _ROW.unpack(rows[0])
        if unsupported or (self.upsert and not matched):
            done(None)  # nothing written: the general path applies it (or inserts)
            return
        self.lane.answered += 1
        done((matched, modified))


def _rolled_back(error: BaseException | None) -> bool:
    """Whether the statement surely wrote nothing: the engine answered it with an error
    (its implicit transaction rolled back), not a lost connection or a FATAL one, which
    may come after the commit."""
    return (
        isinstance(error, asyncpg.PostgresError)
        and not isinstance(error, asyncpg.PostgresConnectionError)
        and getattr(error, "severity_en", None) == "ERROR"
    )
