"""Lists: rows of helios_kv.lists ordered by ``pos``; pushes extend either end.

Pushes, pops, LLEN, LRANGE and LINDEX touch only the rows they need; the rarer edits
that shift the middle (LINSERT, LREM, LTRIM) rewrite the list with positions 0..n-1.
"""

from __future__ import annotations

from heliosdb.services.keyvalue.faults import Reason, fault
from heliosdb.services.keyvalue.store import Tx
from heliosdb.services.keyvalue.strings import slice_range


async def push(
    tx: Tx, key: bytes, values: list[bytes], *, left: bool, only_existing: bool = False
) -> int:
    if only_existing:
        if await tx.write(key, "list") is None:
            return 0
    else:
        await tx.ensure(key, "list")
    lo, hi = await _ends(tx, key)
    count = hi - lo + 1
    n = len(values)
    positions = [lo - 1 - i for i in range(n)] if left else [hi + 1 + i for i in range(n)]
    await tx.conn.execute(
        "INSERT INTO helios_kv.lists (db, key, pos, value) "
        "SELECT $1, $2, p, v FROM unnest($3::bigint[], $4::bytea[]) AS t(p, v)",
        tx.db, key, positions, values,
    )  # fmt: skip
    tx.pushed.add((tx.db, key))
    return count + n


_ENDS = (
    "SELECT (SELECT pos FROM helios_kv.lists WHERE db = $1 AND key = $2 ORDER BY pos LIMIT 1), "
    "(SELECT pos FROM helios_kv.lists WHERE db = $1 AND key = $2 ORDER BY pos DESC LIMIT 1)"
)
_POP_LEFT = (
    "DELETE FROM helios_kv.lists WHERE db = $1 AND key = $2 AND pos IN "
    "(SELECT pos FROM helios_kv.lists WHERE db = $1 AND key = $2 "
    "ORDER BY pos ASC LIMIT $3) RETURNING pos, value"
)
_POP_RIGHT = _POP_LEFT.replace("ASC", "DESC")


async def pop(tx: Tx, key: bytes, count: int, *, left: bool) -> list[bytes] | None:
    """Up to ``count`` values from one end; None when the key does not exist."""
    if await tx.write(key, "list") is None:
        return None
    rows = await tx.conn.fetch(_POP_LEFT if left else _POP_RIGHT, tx.db, key, count)
    await tx.drop_if_empty(key, "list")
    rows = sorted(rows, key=lambda r: r[0], reverse=not left)
    return [r[1] for r in rows]


async def length(tx: Tx, key: bytes) -> int:
    if await tx.read(key, "list") is None:
        return 0
    lo, hi = await _ends(tx, key)
    return hi - lo + 1


async def _ends(tx: Tx, key: bytes) -> tuple[int, int]:
    """First and last position; (0, -1) for no items.

    Positions are always contiguous (pushes and pops work at the ends, edits in the middle
    rewrite 0..n-1), so the length is last - first + 1 and costs two index probes.
    """
    row = await tx.conn.fetchrow(_ENDS, tx.db, key)
    if row[0] is None:
        return 0, -1
    return int(row[0]), int(row[1])


async def range_(tx: Tx, key: bytes, start: int, stop: int) -> list[bytes]:
    if await tx.read(key, "list") is None:
        return []
    if start < 0 or stop < 0:
        total = await length(tx, key)
        bounds = slice_range(total, start, stop)
        if bounds is None:
            return []
        start, stop = bounds
    if start > stop:
        return []
    rows = await tx.conn.fetch(
        "SELECT value FROM helios_kv.lists WHERE db = $1 AND key = $2 "
        "ORDER BY pos OFFSET $3 LIMIT $4",
        tx.db, key, start, stop - start + 1,
    )  # fmt: skip
    return [r[0] for r in rows]


async def index(tx: Tx, key: bytes, idx: int) -> bytes | None:
    if idx < 0:
        if await tx.read(key, "list") is None:
            return None
        idx += await length(tx, key)
        if idx < 0:
            return None
    values = await range_(tx, key, idx, idx)
    return values[0] if values else None


async def set_at(tx: Tx, key: bytes, idx: int, value: bytes) -> None:
    if await tx.write(key, "list") is None:
        raise fault(Reason.NO_SUCH_KEY)
    if idx < 0:
        idx += await length(tx, key)
    updated = None
    if idx >= 0:
        updated = await tx.conn.fetchval(
            "UPDATE helios_kv.lists SET value = $4 WHERE db = $1 AND key = $2 AND pos = "
            "(SELECT pos FROM helios_kv.lists WHERE db = $1 AND key = $2 "
            "ORDER BY pos OFFSET $3 LIMIT 1) RETURNING 1",
            tx.db, key, idx, value,
        )  # fmt: skip
    if updated is None:
        raise fault(Reason.INDEX_OUT_OF_RANGE)


async def items(tx: Tx, key: bytes, *, lock: bool) -> list[bytes] | None:
    meta = await (tx.write(key, "list") if lock else tx.read(key, "list"))
    if meta is None:
        return None
    rows = await tx.conn.fetch(
        "SELECT value FROM helios_kv.lists WHERE db = $1 AND key = $2 ORDER BY pos",
        tx.db, key,
    )  # fmt: skip
    return [r[0] for r in rows]


async def replace(tx: Tx, key: bytes, values: list[bytes]) -> None:
    """Rewrite a locked list; an empty one is deleted."""
    await tx.conn.execute("DELETE FROM helios_kv.lists WHERE db = $1 AND key = $2", tx.db, key)
    if not values:
        await tx.delete([key])
        return
    await tx.conn.execute(
        "INSERT INTO helios_kv.lists (db, key, pos, value) "
        "SELECT $1, $2, p - 1, v FROM unnest($3::bytea[]) WITH ORDINALITY AS t(v, p)",
        tx.db, key, values,
    )  # fmt: skip


async def insert(tx: Tx, key: bytes, before: bool, pivot: bytes, value: bytes) -> int:
    values = await items(tx, key, lock=True)
    if values is None:
        return 0
    try:
        at = values.index(pivot)
    except ValueError:
        return -1
    values.insert(at if before else at + 1, value)
    await replace(tx, key, values)
    tx.pushed.add((tx.db, key))
    return len(values)


async def remove(tx: Tx, key: bytes, count: int, value: bytes) -> int:
    values = await items(tx, key, lock=True)
    if values is None:
        return 0
    order = range(len(values)) if count >= 0 else range(len(values) - 1, -1, -1)
    limit = abs(count) or len(values)
    drop: set[int] = set()
    for i in order:
        if values[i] == value:
            drop.add(i)
            if len(drop) >= limit:
                break
    if drop:
        await replace(tx, key, [v for i, v in enumerate(values) if i not in drop])
    return len(drop)


async def trim(tx: Tx, key: bytes, start: int, stop: int) -> None:
    values = await items(tx, key, lock=True)
    if values is None:
        return
    bounds = slice_range(len(values), start, stop)
    kept = [] if bounds is None else values[bounds[0] : bounds[1] + 1]
    if len(kept) != len(values):
        await replace(tx, key, kept)


async def positions(
    tx: Tx, key: bytes, value: bytes, rank: int, count: int | None, maxlen: int
) -> list[int]:
    values = await items(tx, key, lock=False) or []
    n = len(values)
    indexes = range(n) if rank > 0 else range(n - 1, -1, -1)
    found: list[int] = []
    skip = abs(rank) - 1
    want = 1 if count is None else (count or n)
    for scanned, i in enumerate(indexes):
        if maxlen and scanned >= maxlen:
            break
        if values[i] == value:
            if skip:
                skip -= 1
                continue
            found.append(i)
            if len(found) >= want:
                break
    return found


async def move(tx: Tx, src: bytes, dst: bytes, from_left: bool, to_left: bool) -> bytes | None:
    await tx.read(dst, "list")  # WRONGTYPE before anything is popped
    popped = await pop(tx, src, 1, left=from_left)
    if not popped:
        return None
    await push(tx, dst, popped, left=to_left)
    return popped[0]
