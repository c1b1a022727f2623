"""A batch's one-key SET on a pipelined engine connection (engine/pipeline.py).

A batch of SETs of one key that already holds a string (every client on one hot key, every
SET of bench/redis.sh) is one plain ``UPDATE`` (coalesce.py). Through asyncpg that call
cost about 80 us of the node's CPU (its statement cache, argument codecs, protocol state
machine and result object); here the four values are encoded by hand (int2, bytea, bytea,
int8) and the statement goes out as its own Bind/Execute/Sync on a raw connection, written
at once, and the command tag is all that is read back.

The statement, its session settings (:func:`session_settings`: the generic plan, no
sequential scans, ``synchronous_commit off`` under ``redis.durability everysec``, as the
coalescer's pooled connections set them) and its implicit transaction are the pool path's,
so the write, its durability and its WAL are the same. What it does not answer, the
coalescer's pooled connection does (:meth:`Lane.update` says None): no pipeline open yet or
one busy, the statement not prepared there yet, parameter types other than expected. An
engine error comes back as the asyncpg exception the pool path raises (the same Redis
error); a lost connection or the client-side timeout raises :class:`Lost` and the caller
runs the statement on its pooled connection (a SET written twice writes the same value).
"""

from __future__ import annotations

import asyncio
import struct

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.pipeline import Pipelines, Unfit

# A hot key that already holds a string: a plain UPDATE, which skips the upsert's
# speculative insertion and its tuple lock (one WAL record less per batch). No row (a new
# key, or one of another type): coalesce.py's upsert, then its collection-aware form.
UPDATE_ONE_STRING = (
    "UPDATE helios_kv.keys SET value = $3, expires_at_ms = $4, "
    "version = nextval('helios_kv.versions') "
    "WHERE db = $1 AND key = $2 AND type = 'string'"
)
INT2, BYTEA, INT8 = 21, 17, 20
_PARAMETERS = (INT2, BYTEA, BYTEA, INT8)  # db, key, value, expires_at_ms
_INT16 = struct.Struct("!h")
_INT64 = struct.Struct("!q")
_OWNER = "redis-coalescer"


class Lost(Exception):
    """The pipelined connection went away (or timed out) before the statement's answer."""


def session_settings(synchronous_commit: bool) -> dict[str, str]:
    """The coalescer's engine session settings (its pooled connections SET them, its
    pipelined ones start with them).

    Batches vary in size: a custom plan per execution would cost more planning than these
    index lookups and upserts take to run. A generic plan is made once, though, maybe while
    the tables are nearly empty, when a sequential scan looks cheapest and stays cached as
    they grow (LPUSH/HSET groups cost 0.4 ms of engine CPU per command that way). Every
    statement here reaches rows by (db, key ...), so index scans."""
    settings = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    return settings


class Lane:
    """The coalescer's pipelined connections (two, logged in as the read-write role)."""

    def __init__(self, engine: Engine, synchronous_commit: bool) -> None:
        parameters = {
            **engine.session_settings(),
            "application_name": "heliosdb-kv",
            **session_settings(synchronous_commit),
        }
        self.pipelines = Pipelines(engine, parameters, (), frozenset(_PARAMETERS))
        self.answered = 0  # statements the engine answered here, errors too (INFO stats)

    def update(
        self, db: int, key: bytes, value: bytes, expires_at_ms: int | None
    ) -> asyncio.Future[bytes] | None:
        """Run UPDATE_ONE_STRING; the future gives its command tag (b"UPDATE 1") or the
        engine's error as asyncpg raises it, or :class:`Lost`. None: nothing was sent."""
        found = self.pipelines.prepared_now(Access.READ_WRITE, _OWNER, UPDATE_ONE_STRING)
        if found is None:
            return None
        pipeline, prepared = found
        if prepared.parameters != _PARAMETERS:
            return None
        expires = None if expires_at_ms is None else _INT64.pack(expires_at_ms)
        future: asyncio.Future[bytes] = pipeline.loop.create_future()

        def then(result: tuple[list[bytes], bytes] | None, error: BaseException | None) -> None:
            if future.done():  # the caller went away (the coalescer stopping)
                return
            if result is not None:
                self.answered += 1
                future.set_result(result[1])
            elif isinstance(error, asyncpg.PostgresError):  # its ErrorResponse, as asyncpg's
                self.answered += 1
                future.set_exception(error)
            else:
                future.set_exception(Lost(repr(error)))

        try:
            values = (_INT16.pack(db), key, value, expires)
            pipeline.run_then(prepared, values, then, at_once=True)
        except (Unfit, struct.error):
            return None  # closed or its statements deallocated: nothing sent
        return future

    def close(self) -> None:
        self.pipelines.close()
