"""Hashes: rows of helios_kv.hashes (db, key, field) -> value."""

from __future__ import annotations

import random

from heliosdb.services.keyvalue.faults import Reason
from heliosdb.services.keyvalue.numbers import (
    add_float,
    add_int,
    format_float,
    parse_float,
    parse_int,
)
from heliosdb.services.keyvalue.store import Tx

_SET = (
    "INSERT INTO helios_kv.hashes (db, key, field, value) "
    "SELECT $1, $2, f, v FROM unnest($3::bytea[], $4::bytea[]) AS t(f, v) "
    "ON CONFLICT (db, key, field) DO UPDATE SET value = EXCLUDED.value RETURNING (xmax = 0)"
)
_SET_NX = (
    "INSERT INTO helios_kv.hashes (db, key, field, value) "
    "SELECT $1, $2, f, v FROM unnest($3::bytea[], $4::bytea[]) AS t(f, v) "
    "ON CONFLICT (db, key, field) DO NOTHING RETURNING (xmax = 0)"
)


async def set_fields(
    tx: Tx, key: bytes, pairs: list[tuple[bytes, bytes]], *, nx: bool = False
) -> int:
    """HSET (or HSETNX with ``nx``): how many fields were new."""
    await tx.ensure(key, "hash")
    latest = dict(pairs)
    rows = await tx.conn.fetch(
        _SET_NX if nx else _SET, tx.db, key, list(latest), list(latest.values())
    )
    if nx and not rows:
        await tx.drop_if_empty(key, "hash")
    return sum(1 for r in rows if r[0])


async def get_fields(tx: Tx, key: bytes, fields: list[bytes]) -> list[bytes | None]:
    if await tx.read(key, "hash") is None:
        return [None] * len(fields)
    rows = await tx.conn.fetch(
        "SELECT field, value FROM helios_kv.hashes "
        "WHERE db = $1 AND key = $2 AND field = ANY($3::bytea[])",
        tx.db, key, fields,
    )  # fmt: skip
    found = {bytes(r[0]): r[1] for r in rows}
    return [found.get(f) for f in fields]


async def get_all(tx: Tx, key: bytes) -> list[tuple[bytes, bytes]]:
    if await tx.read(key, "hash") is None:
        return []
    rows = await tx.conn.fetch(
        "SELECT field, value FROM helios_kv.hashes WHERE db = $1 AND key = $2 ORDER BY field",
        tx.db, key,
    )  # fmt: skip
    return [(bytes(r[0]), r[1]) for r in rows]


async def delete_fields(tx: Tx, key: bytes, fields: list[bytes]) -> int:
    if await tx.write(key, "hash") is None:
        return 0
    result = await tx.conn.execute(
        "DELETE FROM helios_kv.hashes WHERE db = $1 AND key = $2 AND field = ANY($3::bytea[])",
        tx.db, key, fields,
    )  # fmt: skip
    await tx.drop_if_empty(key, "hash")
    return int(result.split()[-1])


async def length(tx: Tx, key: bytes) -> int:
    if await tx.read(key, "hash") is None:
        return 0
    return int(
        await tx.conn.fetchval(
            "SELECT count(*) FROM helios_kv.hashes WHERE db = $1 AND key = $2", tx.db, key
        )
    )


async def incr_by(tx: Tx, key: bytes, field: bytes, delta: int) -> int:
    await tx.ensure(key, "hash")
    raw = await _field(tx, key, field)
    current = 0 if raw is None else parse_int(raw, Reason.HASH_NOT_INTEGER)
    result = add_int(current, delta)
    await _put(tx, key, field, str(result).encode())
    return result


async def incr_by_float(tx: Tx, key: bytes, field: bytes, delta: float) -> bytes:
    await tx.ensure(key, "hash")
    raw = await _field(tx, key, field)
    current = 0.0 if raw is None else parse_float(raw, Reason.HASH_NOT_FLOAT)
    text = format_float(add_float(current, delta))
    await _put(tx, key, field, text)
    return text


async def random_fields(tx: Tx, key: bytes, count: int | None) -> list[tuple[bytes, bytes]]:
    """HRANDFIELD: one field (count None), distinct fields (count > 0) or repeats (< 0)."""
    pairs = await get_all(tx, key)
    if not pairs:
        return []
    if count is None:
        return [random.choice(pairs)]
    if count >= 0:
        return random.sample(pairs, min(count, len(pairs)))
    return [random.choice(pairs) for _ in range(-count)]


async def _field(tx: Tx, key: bytes, field: bytes) -> bytes | None:
    value: bytes | None = await tx.conn.fetchval(
        "SELECT value FROM helios_kv.hashes WHERE db = $1 AND key = $2 AND field = $3",
        tx.db, key, field,
    )  # fmt: skip
    return value


async def _put(tx: Tx, key: bytes, field: bytes, value: bytes) -> None:
    await tx.conn.execute(
        "INSERT INTO helios_kv.hashes (db, key, field, value) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (db, key, field) DO UPDATE SET value = EXCLUDED.value",
        tx.db, key, field, value,
    )  # fmt: skip
