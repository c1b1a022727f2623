"""Sets: rows of helios_kv.sets (db, key, member)."""

from __future__ import annotations

import random

from heliosdb.services.keyvalue.store import Tx


async def add(tx: Tx, key: bytes, members: list[bytes]) -> int:
    await tx.ensure(key, "set")
    result = await tx.conn.execute(
        "INSERT INTO helios_kv.sets (db, key, member) "
        "SELECT $1, $2, m FROM unnest($3::bytea[]) AS t(m) ON CONFLICT DO NOTHING",
        tx.db, key, list(dict.fromkeys(members)),
    )  # fmt: skip
    return int(result.split()[-1])


async def remove(tx: Tx, key: bytes, members: list[bytes]) -> int:
    if await tx.write(key, "set") is None:
        return 0
    result = await tx.conn.execute(
        "DELETE FROM helios_kv.sets WHERE db = $1 AND key = $2 AND member = ANY($3::bytea[])",
        tx.db, key, members,
    )  # fmt: skip
    await tx.drop_if_empty(key, "set")
    return int(result.split()[-1])


async def members(tx: Tx, key: bytes, *, lock: bool = False) -> list[bytes]:
    meta = await (tx.write(key, "set") if lock else tx.read(key, "set"))
    if meta is None:
        return []
    rows = await tx.conn.fetch(
        "SELECT member FROM helios_kv.sets WHERE db = $1 AND key = $2 ORDER BY member",
        tx.db, key,
    )  # fmt: skip
    return [r[0] for r in rows]


async def contains(tx: Tx, key: bytes, candidates: list[bytes]) -> list[bool]:
    if await tx.read(key, "set") is None:
        return [False] * len(candidates)
    rows = await tx.conn.fetch(
        "SELECT member FROM helios_kv.sets WHERE db = $1 AND key = $2 "
        "AND member = ANY($3::bytea[])",
        tx.db, key, candidates,
    )  # fmt: skip
    present = {bytes(r[0]) for r in rows}
    return [c in present for c in candidates]


async def cardinality(tx: Tx, key: bytes) -> int:
    if await tx.read(key, "set") is None:
        return 0
    return int(
        await tx.conn.fetchval(
            "SELECT count(*) FROM helios_kv.sets WHERE db = $1 AND key = $2", tx.db, key
        )
    )


async def pop(tx: Tx, key: bytes, count: int) -> list[bytes]:
    everything = await members(tx, key, lock=True)
    chosen = random.sample(everything, min(count, len(everything)))
    if chosen:
        await remove(tx, key, chosen)
    return chosen


async def random_members(tx: Tx, key: bytes, count: int) -> list[bytes]:
    everything = await members(tx, key)
    if not everything:
        return []
    if count >= 0:
        return random.sample(everything, min(count, len(everything)))
    return [random.choice(everything) for _ in range(-count)]


async def combine(tx: Tx, op: str, keys: list[bytes]) -> list[bytes]:
    """SINTER / SUNION / SDIFF of the sets at ``keys`` (missing keys are empty sets)."""
    first = set(await members(tx, keys[0]))
    result = first
    for key in keys[1:]:
        if op == "inter" and not result:
            break
        other = set(await members(tx, key))
        if op == "inter":
            result &= other
        elif op == "union":
            result |= other
        else:
            result -= other
    return sorted(result)


async def store(tx: Tx, key: bytes, values: list[bytes]) -> int:
    """Replace ``key`` with the set ``values`` (deleting it when empty)."""
    await tx.lock(key)
    await tx.delete([key])
    if values:
        await add(tx, key, values)
    return len(values)


async def move(tx: Tx, src: bytes, dst: bytes, member: bytes) -> bool:
    await tx.read(dst, "set")
    if not await remove(tx, src, [member]):
        return False
    await add(tx, dst, [member])
    return True
