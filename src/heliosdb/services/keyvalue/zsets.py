"""Sorted sets: rows of helios_kv.zsets (db, key, member) -> score, ordered (score, member).

Range queries load the ordered members and slice in Python; writes touch only their rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from heliosdb.services.keyvalue.faults import Reason, fault
from heliosdb.services.keyvalue.store import Tx
from heliosdb.services.keyvalue.strings import slice_range

Pair = tuple[bytes, float]


@dataclass(frozen=True, slots=True)
class ScoreBound:
    value: float
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class LexBound:
    value: bytes
    exclusive: bool = False
    infinite: int = 0  # -1 for "-", +1 for "+"


@dataclass(frozen=True, slots=True)
class AddOptions:
    nx: bool = False
    xx: bool = False
    gt: bool = False
    lt: bool = False
    ch: bool = False
    incr: bool = False


async def add(tx: Tx, key: bytes, pairs: list[Pair], opts: AddOptions) -> tuple[int, float | None]:
    """ZADD: (added or changed count, the new score under INCR, None if INCR was refused)."""
    if opts.xx:
        if await tx.write(key, "zset") is None:
            return 0, None
    else:
        await tx.ensure(key, "zset")
    members = [m for m, _ in pairs]
    current = dict(zip(members, await _scores(tx, key, members), strict=True))
    updates: dict[bytes, float] = {}
    added = changed = 0
    result: float | None = None
    for member, score in pairs:
        old = updates.get(member, current.get(member))
        if old is None:
            if opts.xx:
                continue
            new = score
            added += 1
        else:
            if opts.nx:
                continue
            new = old + score if opts.incr else score
            if math.isnan(new):
                raise fault(Reason.NAN_OR_INFINITY)
            if (opts.gt and new <= old) or (opts.lt and new >= old):
                continue
            if new != old:
                changed += 1
        updates[member] = new
        result = new
    if updates:
        await tx.conn.execute(
            "INSERT INTO helios_kv.zsets (db, key, member, score) "
            "SELECT $1, $2, m, s FROM unnest($3::bytea[], $4::float8[]) AS t(m, s) "
            "ON CONFLICT (db, key, member) DO UPDATE SET score = EXCLUDED.score",
            tx.db, key, list(updates), list(updates.values()),
        )  # fmt: skip
        tx.pushed.add((tx.db, key))
    else:
        await tx.drop_if_empty(key, "zset")
    return (added + changed if opts.ch else added), result


async def scores(tx: Tx, key: bytes, members: list[bytes]) -> list[float | None]:
    if await tx.read(key, "zset") is None:
        return [None] * len(members)
    return await _scores(tx, key, members)


async def _scores(tx: Tx, key: bytes, members: list[bytes]) -> list[float | None]:
    rows = await tx.conn.fetch(
        "SELECT member, score FROM helios_kv.zsets WHERE db = $1 AND key = $2 "
        "AND member = ANY($3::bytea[])",
        tx.db, key, members,
    )  # fmt: skip
    found = {bytes(r[0]): r[1] for r in rows}
    return [found.get(m) for m in members]


async def cardinality(tx: Tx, key: bytes) -> int:
    if await tx.read(key, "zset") is None:
        return 0
    return int(
        await tx.conn.fetchval(
            "SELECT count(*) FROM helios_kv.zsets WHERE db = $1 AND key = $2", tx.db, key
        )
    )


async def remove(tx: Tx, key: bytes, members: list[bytes]) -> int:
    if not members or await tx.write(key, "zset") is None:
        return 0
    result = await tx.conn.execute(
        "DELETE FROM helios_kv.zsets WHERE db = $1 AND key = $2 AND member = ANY($3::bytea[])",
        tx.db, key, members,
    )  # fmt: skip
    await tx.drop_if_empty(key, "zset")
    return int(result.split()[-1])


async def ordered(tx: Tx, key: bytes, *, lock: bool = False) -> list[Pair]:
    meta = await (tx.write(key, "zset") if lock else tx.read(key, "zset"))
    if meta is None:
        return []
    rows = await tx.conn.fetch(
        "SELECT member, score FROM helios_kv.zsets WHERE db = $1 AND key = $2 "
        "ORDER BY score, member",
        tx.db, key,
    )  # fmt: skip
    return [(bytes(r[0]), r[1]) for r in rows]


def score_in(low: ScoreBound, high: ScoreBound) -> Callable[[float], bool]:
    def test(score: float) -> bool:
        above = score > low.value if low.exclusive else score >= low.value
        below = score < high.value if high.exclusive else score <= high.value
        return above and below

    return test


def lex_in(low: LexBound, high: LexBound) -> Callable[[bytes], bool]:
    def test(member: bytes) -> bool:
        if low.infinite > 0 or high.infinite < 0:
            return False
        above = low.infinite < 0 or (member > low.value if low.exclusive else member >= low.value)
        below = high.infinite > 0 or (
            member < high.value if high.exclusive else member <= high.value
        )
        return above and below

    return test


def by_rank(pairs: list[Pair], start: int, stop: int, rev: bool) -> list[Pair]:
    if rev:
        pairs = pairs[::-1]
    bounds = slice_range(len(pairs), start, stop)
    return [] if bounds is None else pairs[bounds[0] : bounds[1] + 1]


def limit(pairs: list[Pair], offset: int, count: int) -> list[Pair]:
    if offset < 0:
        return []
    return pairs[offset:] if count < 0 else pairs[offset : offset + count]


async def pop(tx: Tx, key: bytes, count: int, *, highest: bool) -> list[Pair]:
    pairs = await ordered(tx, key, lock=True)
    chosen = (pairs[::-1] if highest else pairs)[:count]
    await remove(tx, key, [m for m, _ in chosen])
    return chosen


async def replace(tx: Tx, key: bytes, pairs: list[Pair]) -> int:
    """Store ``pairs`` as ``key`` (any old value goes; empty deletes the key)."""
    await tx.lock(key)
    await tx.delete([key])
    if pairs:
        await tx.ensure(key, "zset")
        await tx.conn.execute(
            "INSERT INTO helios_kv.zsets (db, key, member, score) "
            "SELECT $1, $2, m, s FROM unnest($3::bytea[], $4::float8[]) AS t(m, s)",
            tx.db, key, [m for m, _ in pairs], [s for _, s in pairs],
        )  # fmt: skip
        tx.pushed.add((tx.db, key))
    return len(pairs)


async def source(tx: Tx, key: bytes) -> dict[bytes, float]:
    """A ZUNION/ZINTER input: a sorted set, or a plain set whose members score 1."""
    meta = await tx.lookup(key)
    if meta is None:
        return {}
    if meta.type == "set":
        rows = await tx.conn.fetch(
            "SELECT member FROM helios_kv.sets WHERE db = $1 AND key = $2", tx.db, key
        )
        return {bytes(r[0]): 1.0 for r in rows}
    return dict(await ordered(tx, key))


def combine(
    op: str, inputs: list[dict[bytes, float]], weights: list[float], aggregate: str
) -> list[Pair]:
    def weighted(score: float, weight: float) -> float:
        product = score * weight
        return 0.0 if math.isnan(product) else product

    def merge(a: float, b: float) -> float:
        if aggregate == "min":
            return min(a, b)
        if aggregate == "max":
            return max(a, b)
        return 0.0 if math.isnan(a + b) else a + b

    if op == "diff":
        first = inputs[0]
        rest = set().union(*inputs[1:]) if len(inputs) > 1 else set()
        out = {m: s for m, s in first.items() if m not in rest}
    else:
        out = {}
        members = (
            set().union(*inputs) if op == "union" else set(inputs[0]).intersection(*inputs[1:])
        )
        for member in members:
            total: float | None = None
            for source_scores, weight in zip(inputs, weights, strict=True):
                if member in source_scores:
                    value = weighted(source_scores[member], weight)
                    total = value if total is None else merge(total, value)
            assert total is not None
            out[member] = total
    return sorted(out.items(), key=lambda p: (p[1], p[0]))


def rank_of(pairs: list[Pair], member: bytes, rev: bool) -> tuple[int, float] | None:
    for i, (m, s) in enumerate(pairs[::-1] if rev else pairs):
        if m == member:
            return i, s
    return None


def random_pairs(pairs: list[Pair], count: int | None) -> list[Pair]:
    if not pairs:
        return []
    if count is None:
        return [random.choice(pairs)]
    if count >= 0:
        return random.sample(pairs, min(count, len(pairs)))
    return [random.choice(pairs) for _ in range(-count)]
