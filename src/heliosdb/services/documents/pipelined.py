"""Finds on pipelined engine connections, started without a coroutine.

The MongoDB hot path (interfaces/mongodb/hotpath.py ``take_lone``) hands a plain find
here from the socket's read callback. When the find's statement is one the pool path
has already answered outside a transaction (``learn``: same SQL text, so same table,
filter, index hints and limit), and the principal's pipelined connection
(engine/pipeline.py, one per access level and principal, as a kept pool session) has it
prepared, its values are encoded here and the statement goes out with the others of the
same loop step in one write, its own Bind/Execute/Sync (its own implicit transaction
and snapshot, as a pooled statement has). ``done`` then gets the stored BSON of each
row, exactly the bytes the pool path returns.

Whatever this path cannot do as the pool would (a statement not learned or not yet
prepared here, a parameter or column type other than jsonb/bigint and bytea, a value
the encoder refuses, a busy or closed pipeline) makes ``start`` say False and nothing
ran; an engine error, a timeout or a changed plan gives ``done(None)``: the caller then
answers through the pool path, which runs the find again and reports what it finds.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from heliosdb.engine import Engine
from heliosdb.engine.codecs import json_default
from heliosdb.engine.pipeline import Pipeline, Pipelines, Unfit
from heliosdb.security.principals import Principal

BYTEA, INT8, JSONB = 17, 20, 3802
MAX_LEARNED = 4096
_INT64 = struct.Struct("!q")
_NULL = b"\xff\xff\xff\xff"
Done = Callable[[list[bytes] | None], None]


def _encode_jsonb(value: Any) -> bytes:
    # jsonb's binary form: version 1, then the text the pool's codec sends
    # (engine/codecs.py: orjson with json_default)
    return b"\x01" + orjson.dumps(value, default=json_default)


def _encode_int8(value: Any) -> bytes:
    if type(value) is not int:
        raise TypeError
    return _INT64.pack(value)


_ENCODERS: dict[int, Callable[[Any], bytes]] = {JSONB: _encode_jsonb, INT8: _encode_int8}


class PipelinedFinds:
    """The documents service's pipelined connections and the find statements they run."""

    def __init__(self, engine: Engine) -> None:
        settings = {**engine.session_settings(), "application_name": "heliosdb-documents"}
        self.pipelines = Pipelines(engine, settings, frozenset({BYTEA}), _ENCODERS.keys())
        engine.closers.append(self.pipelines.close)
        self._learned: set[str] = set()
        self.answered = 0  # finds answered here (serverStatus)

    def learn(self, sql: str) -> None:
        """The pool path answered ``sql`` outside a transaction: it may come here."""
        if sql not in self._learned:
            if len(self._learned) >= MAX_LEARNED:
                self._learned.clear()
            self._learned.add(sql)

    def start(self, principal: Principal, sql: str, values: Sequence[Any], done: Done) -> bool:
        """Run ``sql`` with ``values`` for ``principal``; False: nothing started (see the
        module docstring), else ``done`` is called once with the rows' BSON or None."""
        if sql not in self._learned:
            return False
        now = self.pipelines.prepared_now(
            principal.access, principal.id, sql, functools.partial(self._learned.discard, sql)
        )
        if now is None:
            return False
        pipeline, prepared = now
        encoders: tuple[Callable[[Any], bytes], ...] | None = prepared.checked  # type: ignore[assignment]
        if encoders is None:
            # made once per statement (its parameter types are all in _ENCODERS)
            encoders = tuple(_ENCODERS[oid] for oid in prepared.parameters)
            prepared.checked = encoders
        try:
            encoded = [encode(value) for encode, value in zip(encoders, values, strict=True)]
            future = pipeline.run(prepared, encoded)
        except (Unfit, TypeError, ValueError, OverflowError, struct.error):
            return False  # orjson's JSONEncodeError is a TypeError
        future.add_done_callback(functools.partial(self._answered, pipeline, sql, done))
        return True

    def _answered(
        self, pipeline: Pipeline, sql: str, done: Done, future: asyncio.Future[Any]
    ) -> None:
        if future.cancelled():
            done(None)
            return
        error = future.exception()
        if error is not None:
            if isinstance(error, asyncpg.InvalidCachedStatementError | asyncpg.PostgresError):
                pipeline.forget(sql)  # prepared again next time (or refused then)
            done(None)
            return
        rows, _ = future.result()
        found: list[bytes] = []
        for row in rows:
            # DataRow: int16 column count (1), int32 length, the column's bytes
            if row[2:6] == _NULL:
                done(None)
                return
            found.append(row[6:])
        self.answered += 1
        done(found)
