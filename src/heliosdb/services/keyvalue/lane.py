"""A batch's GET and SET statements on pipelined engine connections (engine/pipeline.py).

A batch's SETs are one statement (coalesce.py): for one key that already holds a string
(every client on one hot key, every SET of bench/redis.sh) a plain ``UPDATE``, for many
keys a multi-row upsert of strings; its GETs one lookup (of one key, or ``key = ANY``).
Through asyncpg such a call cost about 80 us of the node's CPU (its statement cache,
argument codecs, protocol state machine and result object; arrays more); here the values
are encoded by hand (int2, bytea, int8, and binary arrays of them) and the statement goes
out as its own Bind/Execute/Sync on a raw connection, written at once; only the command
tag (a write) or the rows (a lookup, decoded as asyncpg decodes them) are read back.

The statements, their session settings (:func:`session_settings`: the generic plan, no
sequential scans, ``synchronous_commit off`` under ``redis.durability everysec``, as the
coalescer's pooled connections set them) and their implicit transactions are the pool
path's, so a write, its durability and its WAL are the same. What the lane does not
answer, the coalescer's pooled connection does (a method here says None): no pipeline
open yet or one busy, the statement not prepared there yet, parameter types other than
expected. An engine error comes back as the asyncpg exception the pool path raises (the
same Redis error); a lost connection or the client-side timeout raises :class:`Lost` and
the caller runs the statement on its pooled connection (SETs written twice write the
same values; the coalescer retries a failed batch that way too).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, cast

import asyncpg

from heliosdb.engine import Access, Engine
from heliosdb.engine.pipeline import Pipelines, Unfit, decode_rows
from heliosdb.errors import HeliosError

# A hot key that already holds a string: a plain UPDATE, which skips the upsert's
# speculative insertion and its tuple lock (one WAL record less per batch). No row (a new
# key, or one of another type): coalesce.py's upsert, then its collection-aware form.
UPDATE_ONE_STRING = (
    "UPDATE helios_kv.keys SET value = $3, expires_at_ms = $4, "
    "version = nextval('helios_kv.versions') "
    "WHERE db = $1 AND key = $2 AND type = 'string'"
)
# A batch's GETs of one key (every client on one hot key).
GET_ONE = (
    "SELECT key, type, value FROM helios_kv.keys WHERE db = $1 AND key = $2 "
    "AND (expires_at_ms IS NULL OR expires_at_ms > $3)"
)
# A batch's GETs of many keys: values of up to 8 KiB each (a batch of MAX_BATCH of them
# comes to a few MiB); a bigger one's row says 'big' in place of its type and has no value,
# and coalesce.py reads it with GET_BOUNDED (the usual batch costs the same).
GET_MANY = (
    "SELECT key, CASE WHEN octet_length(value) > 8192 THEN 'big' ELSE type END, "
    "CASE WHEN octet_length(value) <= 8192 THEN value END "
    "FROM helios_kv.keys WHERE db = $1 AND key = ANY($2::bytea[]) "
    "AND (expires_at_ms IS NULL OR expires_at_ms > $3)"
)
# The common case in one plain upsert: keys that are new or already strings. A key of another
# type is left alone here (the row count tells), and coalesce.py's _SET writes the batch.
SET_STRINGS = (
    "INSERT INTO helios_kv.keys (db, key, type, value, expires_at_ms) "
    "SELECT db, key, 'string', value, expires_at_ms "
    "FROM unnest($1::smallint[], $2::bytea[], $3::bytea[], $4::bigint[]) "
    "AS t(db, key, value, expires_at_ms) "
    "ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value, "
    "expires_at_ms = EXCLUDED.expires_at_ms, version = nextval('helios_kv.versions') "
    "WHERE helios_kv.keys.type = 'string'"
)
INT2, BYTEA, INT8, TEXT = 21, 17, 20, 25
INT2_ARRAY, BYTEA_ARRAY, INT8_ARRAY = 1005, 1001, 1016
_UPDATE_TYPES = (INT2, BYTEA, BYTEA, INT8)  # db, key, value, expires_at_ms
_SET_STRINGS_TYPES = (INT2_ARRAY, BYTEA_ARRAY, BYTEA_ARRAY, INT8_ARRAY)
_GET_TYPES = (INT2, BYTEA, INT8)  # db, key, now
_GET_MANY_TYPES = (INT2, BYTEA_ARRAY, INT8)  # db, keys, now
_GET_COLUMNS = (bytes, bytes.decode, bytes)  # key, type, value as asyncpg decodes them
_INT = struct.Struct("!i")
_INT16 = struct.Struct("!h")
_INT64 = struct.Struct("!q")
_ARRAY = struct.Struct("!iiIii")  # dimensions, has nulls, element type, length, lower bound
_NULL = b"\xff\xff\xff\xff"
_OWNER = "redis-coalescer"


class Lost(Exception):
    """The pipelined connection went away (or timed out) before the statement's answer."""


# Errors that say the lane's connection is gone, not that the engine refused the
# statement: asyncpg makes them PostgresErrors too (the pipeline fails what it had queued
# with ConnectionDoesNotExistError; a terminated backend's FATAL is AdminShutdownError),
# but the pooled connection can still answer, as for any other loss.
_GONE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


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
        encodes = {INT2, BYTEA, INT8, INT2_ARRAY, BYTEA_ARRAY, INT8_ARRAY}
        self.pipelines = Pipelines(engine, parameters, {BYTEA, TEXT}, encodes)
        # statements the engine answered here, errors too (INFO stats)
        self.sets = 0
        self.gets = 0

    def update(
        self, db: int, key: bytes, value: bytes, expires_at_ms: int | None
    ) -> asyncio.Future[str] | None:
        """Run UPDATE_ONE_STRING; the future gives its command tag ("UPDATE 1", as
        asyncpg's ``execute``) or the engine's error as asyncpg raises it, or
        :class:`Lost`. None: nothing was sent."""
        values = (_INT16.pack(db), key, value, _int8(expires_at_ms))
        return self._run(UPDATE_ONE_STRING, _UPDATE_TYPES, values, True)

    def set_strings(self, columns: tuple[list[Any], ...]) -> asyncio.Future[str] | None:
        """Run SET_STRINGS with (dbs, keys, values, expiries) as ``update``."""
        dbs, keys, values, expiries = columns
        encoded = (
            _array(INT2, [_INT16.pack(db) for db in dbs]),
            _array(BYTEA, keys),
            _array(BYTEA, values),
            _array(INT8, [_int8(at) for at in expiries]),
        )
        return self._run(SET_STRINGS, _SET_STRINGS_TYPES, encoded, True)

    def get(self, db: int, key: bytes, now_ms: int) -> asyncio.Future[list[list[Any]]] | None:
        """Run GET_ONE; the future gives its rows as asyncpg's (key, type, value), or an
        error as ``update``'s. None: nothing was sent."""
        values = (_INT16.pack(db), key, _INT64.pack(now_ms))
        return self._run(GET_ONE, _GET_TYPES, values, False)

    def get_many(
        self, db: int, keys: list[bytes], now_ms: int
    ) -> asyncio.Future[list[list[Any]]] | None:
        """Run GET_MANY as ``get``."""
        values = (_INT16.pack(db), _array(BYTEA, keys), _INT64.pack(now_ms))
        return self._run(GET_MANY, _GET_MANY_TYPES, values, False)

    def _run(
        self, sql: str, types: tuple[int, ...], values: tuple[bytes | None, ...], is_set: bool
    ) -> asyncio.Future[Any] | None:
        found = self.pipelines.prepared_now(Access.READ_WRITE, _OWNER, sql)
        if found is None:
            return None
        pipeline, prepared = found
        if prepared.parameters != types:
            return None
        future: asyncio.Future[Any] = pipeline.loop.create_future()

        def then(result: tuple[list[bytes], bytes] | None, error: BaseException | None) -> None:
            if future.done():  # the caller went away (the coalescer stopping)
                return
            if result is None and (
                not isinstance(error, asyncpg.PostgresError) or isinstance(error, _GONE)
            ):
                future.set_exception(Lost(repr(error)))
                return
            if is_set:
                self.sets += 1
            else:
                self.gets += 1
            if result is None:  # its ErrorResponse, as asyncpg raises it
                future.set_exception(cast(BaseException, error))
            elif is_set:
                future.set_result(result[1].decode())
            else:
                try:
                    future.set_result(decode_rows(result[0], _GET_COLUMNS))
                except HeliosError as exc:
                    future.set_exception(exc)

        try:
            pipeline.run_then(prepared, values, then, at_once=True)
        except (Unfit, struct.error):
            return None  # closed or its statements deallocated: nothing sent
        return future

    def close(self) -> None:
        self.pipelines.close()


def _int8(value: int | None) -> bytes | None:
    return None if value is None else _INT64.pack(value)


def _array(element: int, items: list[Any]) -> bytes:
    """A one-dimensional array of encoded elements (None: NULL) in the binary form."""
    parts = [_ARRAY.pack(1, None in items, element, len(items), 1)]
    for item in items:
        if item is None:
            parts.append(_NULL)
        else:
            parts += (_INT.pack(len(item)), item)
    return b"".join(parts)
