"""Hash commands."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import OK, Map
from heliosdb.interfaces.redis.commands.args import integer, real, word
from heliosdb.interfaces.redis.commands.keys import _cursor
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import hashes, scans
from heliosdb.services.keyvalue.service import glob_to_regex

MAX_SCAN_COUNT = 100_000


def _pairs(call: Call, name: str) -> list[tuple[bytes, bytes]]:
    args = call.args[2:]
    if len(args) % 2:
        raise errors.wrong_arity(name)
    return list(zip(args[::2], args[1::2], strict=True))


async def _set_fields(call: Call, name: str) -> int:
    pairs = _pairs(call, name)
    if call.in_exec:
        return await hashes.set_fields(await call.tx(), call.args[1], pairs)
    return await call.kv.add(call.client.db, call.args[1], "hash", list(pairs))


@command("hset", -4, "write fast batched", (1, 1, 1))
async def hset(call: Call) -> Any:
    return await _set_fields(call, "hset")


@command("hmset", -4, "write fast batched", (1, 1, 1))
async def hmset(call: Call) -> Any:
    await _set_fields(call, "hmset")
    return OK


@command("hsetnx", 4, "write fast", (1, 1, 1))
async def hsetnx(call: Call) -> Any:
    pairs = [(call.args[2], call.args[3])]
    return await hashes.set_fields(await call.tx(), call.args[1], pairs, nx=True)


@command("hget", 3, "read fast", (1, 1, 1))
async def hget(call: Call) -> Any:
    return (await hashes.get_fields(await call.tx(), call.args[1], [call.args[2]]))[0]


@command("hmget", -3, "read fast", (1, 1, 1))
async def hmget(call: Call) -> Any:
    return await hashes.get_fields(await call.tx(), call.args[1], call.args[2:])


@command("hgetall", 2, "read", (1, 1, 1))
async def hgetall(call: Call) -> Any:
    return Map(await hashes.get_all(await call.tx(), call.args[1]))


@command("hkeys", 2, "read", (1, 1, 1))
async def hkeys(call: Call) -> Any:
    return [f for f, _ in await hashes.get_all(await call.tx(), call.args[1])]


@command("hvals", 2, "read", (1, 1, 1))
async def hvals(call: Call) -> Any:
    return [v for _, v in await hashes.get_all(await call.tx(), call.args[1])]


@command("hdel", -3, "write fast", (1, 1, 1))
async def hdel(call: Call) -> Any:
    return await hashes.delete_fields(await call.tx(), call.args[1], call.args[2:])


@command("hexists", 3, "read fast", (1, 1, 1))
async def hexists(call: Call) -> Any:
    found = await hashes.get_fields(await call.tx(), call.args[1], [call.args[2]])
    return int(found[0] is not None)


@command("hlen", 2, "read fast", (1, 1, 1))
async def hlen(call: Call) -> Any:
    return await hashes.length(await call.tx(), call.args[1])


@command("hstrlen", 3, "read fast", (1, 1, 1))
async def hstrlen(call: Call) -> Any:
    found = await hashes.get_fields(await call.tx(), call.args[1], [call.args[2]])
    return len(found[0] or b"")


@command("hincrby", 4, "write fast", (1, 1, 1))
async def hincrby(call: Call) -> Any:
    delta = integer(call.args[3])
    return await hashes.incr_by(await call.tx(), call.args[1], call.args[2], delta)


@command("hincrbyfloat", 4, "write fast", (1, 1, 1))
async def hincrbyfloat(call: Call) -> Any:
    delta = real(call.args[3])
    return await hashes.incr_by_float(await call.tx(), call.args[1], call.args[2], delta)


@command("hrandfield", -2, "read", (1, 1, 1))
async def hrandfield(call: Call) -> Any:
    args = call.args
    count = integer(args[2]) if len(args) > 2 else None
    withvalues = False
    if len(args) == 4 and word(args[3]) == b"WITHVALUES":
        withvalues = True
    elif len(args) > 3:
        raise RedisError(errors.SYNTAX)
    pairs = await hashes.random_fields(await call.tx(), args[1], count)
    if count is None:
        return pairs[0][0] if pairs else None
    if withvalues:
        if call.client.proto == 3:
            return [[f, v] for f, v in pairs]
        return [x for pair in pairs for x in pair]
    return [f for f, _ in pairs]


@command("hscan", -3, "read", (1, 1, 1))
async def hscan(call: Call) -> Any:
    cursor = _cursor(call.args[2])
    match, count, novalues = scan_options(call.args[3:], allow_novalues=True)
    following, rows = await scans.scan_elements(
        await call.tx(), call.args[1], "hash", cursor, count
    )
    out: list[bytes] = []
    for f, v in rows:
        if match is None or match.match(f):
            out.extend([f] if novalues else [f, v])
    return [str(following).encode(), out]


def scan_options(args: list[bytes], *, allow_novalues: bool = False) -> tuple[Any, int, bool]:
    """MATCH, COUNT (a hint, default 10) and NOVALUES of HSCAN / SSCAN / ZSCAN."""
    match = None
    count = 10
    novalues = False
    i = 0
    while i < len(args):
        option = word(args[i])
        if option == b"NOVALUES" and allow_novalues:
            novalues = True
            i += 1
            continue
        if i + 1 >= len(args):
            raise RedisError(errors.SYNTAX)
        if option == b"MATCH":
            match = glob_to_regex(args[i + 1])
        elif option == b"COUNT":
            count = integer(args[i + 1])
            if count < 1:
                raise RedisError(errors.SYNTAX)
        else:
            raise RedisError(errors.SYNTAX)
        i += 2
    return match, min(count, MAX_SCAN_COUNT), novalues
