"""Set commands."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import SetReply
from heliosdb.interfaces.redis.commands.args import integer, positive, word
from heliosdb.interfaces.redis.commands.hashes import scan_options
from heliosdb.interfaces.redis.commands.keys import _cursor
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import scans, sets


@command("sadd", -3, "write fast batched", (1, 1, 1))
async def sadd(call: Call) -> Any:
    if call.in_exec:
        return await sets.add(await call.tx(), call.args[1], call.args[2:])
    return await call.kv.add(
        call.client.db, call.args[1], "set", [(m, None) for m in call.args[2:]]
    )


@command("srem", -3, "write fast", (1, 1, 1))
async def srem(call: Call) -> Any:
    return await sets.remove(await call.tx(), call.args[1], call.args[2:])


@command("smembers", 2, "read", (1, 1, 1))
async def smembers(call: Call) -> Any:
    return SetReply(await sets.members(await call.tx(), call.args[1]))


@command("sismember", 3, "read fast", (1, 1, 1))
async def sismember(call: Call) -> Any:
    return int((await sets.contains(await call.tx(), call.args[1], [call.args[2]]))[0])


@command("smismember", -3, "read fast", (1, 1, 1))
async def smismember(call: Call) -> Any:
    return [int(x) for x in await sets.contains(await call.tx(), call.args[1], call.args[2:])]


@command("scard", 2, "read fast", (1, 1, 1))
async def scard(call: Call) -> Any:
    return await sets.cardinality(await call.tx(), call.args[1])


@command("spop", -2, "write fast", (1, 1, 1))
async def spop(call: Call) -> Any:
    if len(call.args) > 3:
        raise RedisError(errors.SYNTAX)
    if len(call.args) == 3:
        count = positive(call.args[2], "ERR value is out of range, must be positive")
        return SetReply(await sets.pop(await call.tx(), call.args[1], count))
    popped = await sets.pop(await call.tx(), call.args[1], 1)
    return popped[0] if popped else None


@command("srandmember", -2, "read", (1, 1, 1))
async def srandmember(call: Call) -> Any:
    if len(call.args) > 3:
        raise RedisError(errors.SYNTAX)
    if len(call.args) == 3:
        return await sets.random_members(await call.tx(), call.args[1], integer(call.args[2]))
    chosen = await sets.random_members(await call.tx(), call.args[1], 1)
    return chosen[0] if chosen else None


@command("smove", 4, "write fast", (1, 2, 1))
async def smove(call: Call) -> Any:
    return int(await sets.move(await call.tx(), call.args[1], call.args[2], call.args[3]))


def _family(op: str) -> None:
    @command(f"s{op}", -2, "read", (1, -1, 1))
    async def combine(call: Call) -> Any:
        return SetReply(await sets.combine(await call.tx(), op, call.args[1:]))

    @command(f"s{op}store", -3, "write", (1, -1, 1))
    async def combine_store(call: Call) -> Any:
        tx = await call.tx()
        values = await sets.combine(tx, op, call.args[2:])
        return await sets.store(tx, call.args[1], values)


for _op in ("inter", "union", "diff"):
    _family(_op)


@command("sintercard", -3, "read", (2, -1, 1))
async def sintercard(call: Call) -> Any:
    numkeys = positive(call.args[1], "ERR numkeys should be greater than 0")
    if numkeys == 0:
        raise RedisError("ERR numkeys should be greater than 0")
    keys = call.args[2 : 2 + numkeys]
    if len(keys) < numkeys:
        raise RedisError("ERR Number of keys can't be greater than number of args")
    rest = call.args[2 + numkeys :]
    limit = 0
    if rest:
        if len(rest) != 2 or word(rest[0]) != b"LIMIT":
            raise RedisError(errors.SYNTAX)
        limit = positive(rest[1], "ERR LIMIT can't be negative")
    result = await sets.combine(await call.tx(), "inter", keys)
    return min(len(result), limit) if limit else len(result)


@command("sscan", -3, "read", (1, 1, 1))
async def sscan(call: Call) -> Any:
    cursor = _cursor(call.args[2])
    match, count, _ = scan_options(call.args[3:])
    following, rows = await scans.scan_elements(await call.tx(), call.args[1], "set", cursor, count)
    page = [m for (m,) in rows if match is None or match.match(m)]
    return [str(following).encode(), page]
