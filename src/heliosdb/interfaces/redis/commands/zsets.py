"""Sorted-set commands."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import NULL_ARRAY, Double, format_double
from heliosdb.interfaces.redis.commands.args import (
    integer,
    lex_bound,
    positive,
    real,
    score_bound,
    timeout,
    word,
)
from heliosdb.interfaces.redis.commands.hashes import scan_options
from heliosdb.interfaces.redis.commands.keys import _cursor
from heliosdb.interfaces.redis.commands.lists import blocking, mpop_args
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import Tx, scans, zsets
from heliosdb.services.keyvalue.numbers import float_or_none
from heliosdb.services.keyvalue.zsets import Pair


def with_scores(call: Call, pairs: list[Pair]) -> list[Any]:
    if call.client.proto == 3:
        return [[m, Double(s)] for m, s in pairs]
    return [x for m, s in pairs for x in (m, Double(s))]


@command("zadd", -4, "write fast batched", (1, 1, 1))
async def zadd(call: Call) -> Any:
    args = call.args[2:]
    flags: set[bytes] = set()
    while args and word(args[0]) in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"):
        flags.add(word(args[0]))
        args = args[1:]
    if not args or len(args) % 2:
        raise RedisError(errors.SYNTAX)
    if b"NX" in flags and b"XX" in flags:
        raise RedisError("ERR XX and NX options at the same time are not compatible")
    if (b"GT" in flags and b"LT" in flags) or (b"NX" in flags and flags & {b"GT", b"LT"}):
        raise RedisError("ERR GT, LT, and/or NX options at the same time are not compatible")
    if b"INCR" in flags and len(args) != 2:
        raise RedisError("ERR INCR option supports a single increment-element pair")
    pairs = []
    for raw, member in zip(args[::2], args[1::2], strict=True):
        score = float_or_none(raw)
        if score is None:
            raise RedisError(errors.NOT_FLOAT)
        pairs.append((member, score))
    if not flags and not call.in_exec:
        return await call.kv.add(call.client.db, call.args[1], "zset", list(pairs))
    opts = zsets.AddOptions(**{f.decode().lower(): True for f in flags})
    count, result = await zsets.add(await call.tx(), call.args[1], pairs, opts)
    if opts.incr:
        return None if result is None else Double(result)
    return count


@command("zincrby", 4, "write fast", (1, 1, 1))
async def zincrby(call: Call) -> Any:
    delta = real(call.args[2])
    _, result = await zsets.add(
        await call.tx(), call.args[1], [(call.args[3], delta)], zsets.AddOptions(incr=True)
    )
    assert result is not None
    return Double(result)


@command("zrem", -3, "write fast", (1, 1, 1))
async def zrem(call: Call) -> Any:
    return await zsets.remove(await call.tx(), call.args[1], list(dict.fromkeys(call.args[2:])))


@command("zscore", 3, "read fast", (1, 1, 1))
async def zscore(call: Call) -> Any:
    score = (await zsets.scores(await call.tx(), call.args[1], [call.args[2]]))[0]
    return None if score is None else Double(score)


@command("zmscore", -3, "read fast", (1, 1, 1))
async def zmscore(call: Call) -> Any:
    found = await zsets.scores(await call.tx(), call.args[1], call.args[2:])
    return [None if s is None else Double(s) for s in found]


@command("zcard", 2, "read fast", (1, 1, 1))
async def zcard(call: Call) -> Any:
    return await zsets.cardinality(await call.tx(), call.args[1])


@command("zcount", 4, "read fast", (1, 1, 1))
async def zcount(call: Call) -> Any:
    test = zsets.score_in(score_bound(call.args[2]), score_bound(call.args[3]))
    return sum(1 for _, s in await zsets.ordered(await call.tx(), call.args[1]) if test(s))


@command("zlexcount", 4, "read fast", (1, 1, 1))
async def zlexcount(call: Call) -> Any:
    test = zsets.lex_in(lex_bound(call.args[2]), lex_bound(call.args[3]))
    return sum(1 for m, _ in await zsets.ordered(await call.tx(), call.args[1]) if test(m))


async def select_range(
    tx: Tx, key: bytes, low: bytes, high: bytes, mode: str, rev: bool, limit: tuple[int, int] | None
) -> list[Pair]:
    """ZRANGE's core: mode is rank, score or lex; rev swaps the order (and the bounds' roles)."""
    if mode == "rank":
        if limit is not None:
            raise RedisError(
                "ERR syntax error, LIMIT is only supported in combination with either "
                "BYSCORE or BYLEX"
            )
        start, stop = integer(low), integer(high)
        return zsets.by_rank(await zsets.ordered(tx, key), start, stop, rev)
    if mode == "score":
        lo, hi = score_bound(low), score_bound(high)
        if rev:
            lo, hi = hi, lo
        test = zsets.score_in(lo, hi)
        pairs = [p for p in await zsets.ordered(tx, key) if test(p[1])]
    else:
        lo_lex, hi_lex = lex_bound(low), lex_bound(high)
        if rev:
            lo_lex, hi_lex = hi_lex, lo_lex
        lex_test = zsets.lex_in(lo_lex, hi_lex)
        pairs = [p for p in await zsets.ordered(tx, key) if lex_test(p[0])]
    if rev:
        pairs.reverse()
    if limit is not None:
        pairs = zsets.limit(pairs, *limit)
    return pairs


def range_options(
    args: list[bytes], *, mode: str, rev: bool, allow_withscores: bool = True
) -> tuple[str, bool, tuple[int, int] | None, bool]:
    withscores = False
    limit = None
    i = 0
    while i < len(args):
        option = word(args[i])
        if option == b"WITHSCORES" and allow_withscores:
            withscores = True
        elif option == b"BYSCORE" and mode == "rank":
            mode = "score"
        elif option == b"BYLEX" and mode == "rank":
            mode = "lex"
        elif option == b"REV":
            rev = True
        elif option == b"LIMIT" and i + 2 < len(args):
            limit = (integer(args[i + 1]), integer(args[i + 2]))
            i += 2
        else:
            raise RedisError(errors.SYNTAX)
        i += 1
    if mode == "lex" and withscores:
        raise RedisError("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    return mode, rev, limit, withscores


def _range_command(name: str, mode: str, rev: bool) -> None:
    @command(name, -4, "read", (1, 1, 1))
    async def range_(call: Call) -> Any:
        m, r, limit, scores = range_options(
            call.args[4:], mode=mode, rev=rev, allow_withscores=mode != "lex"
        )
        if name != "zrange" and m != mode:
            raise RedisError(errors.SYNTAX)
        pairs = await select_range(
            await call.tx(), call.args[1], call.args[2], call.args[3], m, r, limit
        )
        return with_scores(call, pairs) if scores else [p[0] for p in pairs]


for _name, _mode, _rev in (
    ("zrange", "rank", False), ("zrevrange", "rank", True),
    ("zrangebyscore", "score", False), ("zrevrangebyscore", "score", True),
    ("zrangebylex", "lex", False), ("zrevrangebylex", "lex", True),
):  # fmt: skip
    _range_command(_name, _mode, _rev)


@command("zrangestore", -5, "write", (1, 2, 1))
async def zrangestore(call: Call) -> Any:
    mode, rev, limit, _ = range_options(
        call.args[5:], mode="rank", rev=False, allow_withscores=False
    )
    tx = await call.tx()
    pairs = await select_range(tx, call.args[2], call.args[3], call.args[4], mode, rev, limit)
    return await zsets.replace(tx, call.args[1], pairs)


def _rank_command(name: str, rev: bool) -> None:
    @command(name, -3, "read fast", (1, 1, 1))
    async def rank(call: Call) -> Any:
        withscore = False
        if len(call.args) == 4 and word(call.args[3]) == b"WITHSCORE":
            withscore = True
        elif len(call.args) > 3:
            raise RedisError(errors.SYNTAX)
        pairs = await zsets.ordered(await call.tx(), call.args[1])
        found = zsets.rank_of(pairs, call.args[2], rev)
        if found is None:
            return NULL_ARRAY if withscore else None
        return [found[0], Double(found[1])] if withscore else found[0]


_rank_command("zrank", False)
_rank_command("zrevrank", True)


def _pop_command(name: str, highest: bool) -> None:
    @command(name, -2, "write fast", (1, 1, 1))
    async def pop(call: Call) -> Any:
        if len(call.args) > 3:
            raise RedisError(errors.SYNTAX)
        count = 1
        if len(call.args) == 3:
            count = positive(call.args[2], "ERR value is out of range, must be positive")
        pairs = await zsets.pop(await call.tx(), call.args[1], count, highest=highest)
        if len(call.args) == 2 and call.client.proto == 3:
            return [pairs[0][0], Double(pairs[0][1])] if pairs else []
        return with_scores(call, pairs)


_pop_command("zpopmin", False)
_pop_command("zpopmax", True)


def _bpop_command(name: str, highest: bool) -> None:
    @command(name, -3, "write blocking", (1, -2, 1))
    async def bpop(call: Call) -> Any:
        wait = timeout(call.args[-1])
        keys = call.args[1:-1]

        async def attempt(tx: Tx) -> Any:
            for key in keys:
                pairs = await zsets.pop(tx, key, 1, highest=highest)
                if pairs:
                    return [key, pairs[0][0], Double(pairs[0][1])]
            return None

        return await blocking(call, keys, wait, attempt)


_bpop_command("bzpopmin", False)
_bpop_command("bzpopmax", True)


async def _mpop(call: Call, args: list[bytes], tx: Tx) -> Any:
    keys, where, count = mpop_args(args, (b"MIN", b"MAX"))
    for key in keys:
        pairs = await zsets.pop(tx, key, count, highest=where == b"MAX")
        if pairs:
            return [key, [[m, Double(s)] for m, s in pairs]]
    return None


@command("zmpop", -4, "write", (0, 0, 0))
async def zmpop(call: Call) -> Any:
    result = await _mpop(call, call.args[1:], await call.tx())
    return NULL_ARRAY if result is None else result


@command("bzmpop", -5, "write blocking", (0, 0, 0))
async def bzmpop(call: Call) -> Any:
    wait = timeout(call.args[1])
    keys, _, _ = mpop_args(call.args[2:], (b"MIN", b"MAX"))

    async def attempt(tx: Tx) -> Any:
        return await _mpop(call, call.args[2:], tx)

    return await blocking(call, keys, wait, attempt)


async def _remove_where(call: Call, mode: str) -> Any:
    tx = await call.tx()
    key, low, high = call.args[1], call.args[2], call.args[3]
    if mode == "rank":
        start, stop = integer(low), integer(high)
        victims = zsets.by_rank(await zsets.ordered(tx, key), start, stop, False)
    else:
        victims = await select_range(tx, key, low, high, mode, False, None)
    return await zsets.remove(tx, key, [m for m, _ in victims])


@command("zremrangebyrank", 4, "write", (1, 1, 1))
async def zremrangebyrank(call: Call) -> Any:
    return await _remove_where(call, "rank")


@command("zremrangebyscore", 4, "write", (1, 1, 1))
async def zremrangebyscore(call: Call) -> Any:
    return await _remove_where(call, "score")


@command("zremrangebylex", 4, "write", (1, 1, 1))
async def zremrangebylex(call: Call) -> Any:
    return await _remove_where(call, "lex")


async def _combine(
    call: Call, op: str, args: list[bytes], *, allow_withscores: bool
) -> tuple[list[Pair], bool]:
    numkeys = positive(args[0], "ERR numkeys should be greater than 0")
    if numkeys == 0:
        raise RedisError(f"ERR at least 1 input key is needed for 'z{op}' command")
    keys = args[1 : 1 + numkeys]
    if len(keys) < numkeys:
        raise RedisError(errors.SYNTAX)
    weights = [1.0] * numkeys
    aggregate = "sum"
    withscores = False
    rest = args[1 + numkeys :]
    i = 0
    while i < len(rest):
        option = word(rest[i])
        if option == b"WEIGHTS" and op != "diff" and i + numkeys < len(rest):
            weights = []
            for raw in rest[i + 1 : i + 1 + numkeys]:
                value = float_or_none(raw)
                if value is None:
                    raise RedisError("ERR weight value is not a float")
                weights.append(value)
            i += numkeys
        elif option == b"AGGREGATE" and op != "diff" and i + 1 < len(rest):
            aggregate = word(rest[i + 1]).decode(errors="replace").lower()
            if aggregate not in ("sum", "min", "max"):
                raise RedisError(errors.SYNTAX)
            i += 1
        elif option == b"WITHSCORES" and allow_withscores:
            withscores = True
        else:
            raise RedisError(errors.SYNTAX)
        i += 1
    tx = await call.tx()
    inputs = [await zsets.source(tx, k) for k in keys]
    return zsets.combine(op, inputs, weights, aggregate), withscores


def _combine_commands(op: str) -> None:
    @command(f"z{op}store", -4, "write", (1, 1, 1))
    async def store(call: Call) -> Any:
        pairs, _ = await _combine(call, op, call.args[2:], allow_withscores=False)
        return await zsets.replace(await call.tx(), call.args[1], pairs)

    @command(f"z{op}", -3, "read", (0, 0, 0))
    async def combine(call: Call) -> Any:
        pairs, withscores = await _combine(call, op, call.args[1:], allow_withscores=True)
        return with_scores(call, pairs) if withscores else [m for m, _ in pairs]


for _op in ("union", "inter", "diff"):
    _combine_commands(_op)


@command("zintercard", -3, "read", (0, 0, 0))
async def zintercard(call: Call) -> Any:
    numkeys = positive(call.args[1], "ERR numkeys should be greater than 0")
    keys = call.args[2 : 2 + numkeys]
    if numkeys == 0 or len(keys) < numkeys:
        raise RedisError("ERR numkeys should be greater than 0")
    rest = call.args[2 + numkeys :]
    limit = 0
    if rest:
        if len(rest) != 2 or word(rest[0]) != b"LIMIT":
            raise RedisError(errors.SYNTAX)
        limit = positive(rest[1], "ERR LIMIT can't be negative")
    tx = await call.tx()
    inputs = [await zsets.source(tx, k) for k in keys]
    size = len(zsets.combine("inter", inputs, [1.0] * numkeys, "sum"))
    return min(size, limit) if limit else size


@command("zrandmember", -2, "read", (1, 1, 1))
async def zrandmember(call: Call) -> Any:
    args = call.args
    count = integer(args[2]) if len(args) > 2 else None
    withscores = len(args) == 4 and word(args[3]) == b"WITHSCORES"
    if len(args) > 4 or (len(args) == 4 and not withscores):
        raise RedisError(errors.SYNTAX)
    pairs = zsets.random_pairs(await zsets.ordered(await call.tx(), args[1]), count)
    if count is None:
        return pairs[0][0] if pairs else None
    return with_scores(call, pairs) if withscores else [m for m, _ in pairs]


@command("zscan", -3, "read", (1, 1, 1))
async def zscan(call: Call) -> Any:
    cursor = _cursor(call.args[2])
    match, count, _ = scan_options(call.args[3:])
    following, rows = await scans.scan_elements(
        await call.tx(), call.args[1], "zset", cursor, count
    )
    out: list[bytes] = []
    for m, s in rows:
        if match is None or match.match(m):
            out.extend([m, format_double(s)])
    return [str(following).encode(), out]
