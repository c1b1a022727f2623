"""List commands, including the blocking pops that wait for a push from any client."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from heliosdb.engine import Access
from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import NULL_ARRAY, OK
from heliosdb.interfaces.redis.commands.args import integer, positive, timeout, word
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import Tx, lists

Attempt = Callable[[Tx], Awaitable[Any]]


def _push(name: str, left: bool, only_existing: bool) -> None:
    @command(name, -3, "write fast batched", (1, 1, 1))
    async def push(call: Call) -> Any:
        if call.in_exec:
            return await lists.push(
                await call.tx(), call.args[1], call.args[2:], left=left, only_existing=only_existing
            )
        return await call.kv.push(
            call.client.db, call.args[1], call.args[2:], left=left, only_existing=only_existing
        )


for _name, _left, _existing in (
    ("lpush", True, False), ("rpush", False, False), ("lpushx", True, True),
    ("rpushx", False, True),
):  # fmt: skip
    _push(_name, _left, _existing)


def _pop(name: str, left: bool) -> None:
    @command(name, -2, "write fast", (1, 1, 1))
    async def pop(call: Call) -> Any:
        if len(call.args) > 3:
            raise errors.wrong_arity(name)
        if len(call.args) == 3:
            count = positive(call.args[2], "ERR value is out of range, must be positive")
            values = await lists.pop(await call.tx(), call.args[1], count, left=left)
            return NULL_ARRAY if values is None else values
        values = await lists.pop(await call.tx(), call.args[1], 1, left=left)
        return values[0] if values else None


_pop("lpop", True)
_pop("rpop", False)


@command("llen", 2, "read fast", (1, 1, 1))
async def llen(call: Call) -> Any:
    return await lists.length(await call.tx(), call.args[1])


@command("lrange", 4, "read", (1, 1, 1))
async def lrange(call: Call) -> Any:
    start, stop = integer(call.args[2]), integer(call.args[3])
    return await lists.range_(await call.tx(), call.args[1], start, stop)


@command("lindex", 3, "read", (1, 1, 1))
async def lindex(call: Call) -> Any:
    return await lists.index(await call.tx(), call.args[1], integer(call.args[2]))


@command("lset", 4, "write", (1, 1, 1))
async def lset(call: Call) -> Any:
    await lists.set_at(await call.tx(), call.args[1], integer(call.args[2]), call.args[3])
    return OK


@command("linsert", 5, "write", (1, 1, 1))
async def linsert(call: Call) -> Any:
    where = word(call.args[2])
    if where not in (b"BEFORE", b"AFTER"):
        raise RedisError(errors.SYNTAX)
    return await lists.insert(
        await call.tx(), call.args[1], where == b"BEFORE", call.args[3], call.args[4]
    )


@command("lrem", 4, "write", (1, 1, 1))
async def lrem(call: Call) -> Any:
    return await lists.remove(await call.tx(), call.args[1], integer(call.args[2]), call.args[3])


@command("ltrim", 4, "write", (1, 1, 1))
async def ltrim(call: Call) -> Any:
    start, stop = integer(call.args[2]), integer(call.args[3])
    await lists.trim(await call.tx(), call.args[1], start, stop)
    return OK


@command("lpos", -3, "read", (1, 1, 1))
async def lpos(call: Call) -> Any:
    rank, count, maxlen = 1, None, 0
    args = call.args[3:]
    if len(args) % 2:
        raise RedisError(errors.SYNTAX)
    for option, raw in zip(args[::2], args[1::2], strict=True):
        option = word(option)
        if option == b"RANK":
            rank = integer(raw)
            if rank == 0 or rank == -(2**63):
                raise RedisError(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the "
                    "second ... or use negative to start from the end of the list"
                )
        elif option == b"COUNT":
            count = positive(raw, "ERR COUNT can't be negative")
        elif option == b"MAXLEN":
            maxlen = positive(raw, "ERR MAXLEN can't be negative")
        else:
            raise RedisError(errors.SYNTAX)
    found = await lists.positions(await call.tx(), call.args[1], call.args[2], rank, count, maxlen)
    if count is None:
        return found[0] if found else None
    return found


def _side(raw: bytes) -> bool:
    side = word(raw)
    if side not in (b"LEFT", b"RIGHT"):
        raise RedisError(errors.SYNTAX)
    return side == b"LEFT"


@command("lmove", 5, "write", (1, 2, 1))
async def lmove(call: Call) -> Any:
    src_left, dst_left = _side(call.args[3]), _side(call.args[4])
    return await lists.move(await call.tx(), call.args[1], call.args[2], src_left, dst_left)


@command("rpoplpush", 3, "write", (1, 2, 1))
async def rpoplpush(call: Call) -> Any:
    return await lists.move(await call.tx(), call.args[1], call.args[2], False, True)


async def blocking(call: Call, keys: list[bytes], wait: float | None, attempt: Attempt) -> Any:
    """Try now; unless inside EXEC, sleep until a push to ``keys`` or the timeout, retry."""
    if call.in_exec:
        result = await attempt(await call.tx())
        return NULL_ARRAY if result is None else result
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        async with call.kv.transaction(Access.READ_WRITE, call.client.db, write=True) as tx:
            result = await attempt(tx)
        if result is not None:
            return result
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return NULL_ARRAY
        await call.kv.wait_for_push(call.client.db, keys, remaining)
        if call.client.closing or (call.session is not None and call.session.peer_gone()):
            call.client.closing = True
            return NULL_ARRAY


def _first_pop(keys: list[bytes], left: bool, count: int | None) -> Attempt:
    async def attempt(tx: Tx) -> Any:
        for key in keys:
            values = await lists.pop(tx, key, count or 1, left=left)
            if values:
                return [key, values] if count is not None else [key, values[0]]
        return None

    return attempt


def _bpop(name: str, left: bool) -> None:
    @command(name, -3, "write blocking", (1, -2, 1))
    async def bpop(call: Call) -> Any:
        wait = timeout(call.args[-1])
        keys = call.args[1:-1]
        return await blocking(call, keys, wait, _first_pop(keys, left, None))


_bpop("blpop", True)
_bpop("brpop", False)


@command("blmove", 6, "write blocking", (1, 2, 1))
async def blmove(call: Call) -> Any:
    src_left, dst_left = _side(call.args[3]), _side(call.args[4])
    wait = timeout(call.args[5])

    async def attempt(tx: Tx) -> Any:
        return await lists.move(tx, call.args[1], call.args[2], src_left, dst_left)

    result = await blocking(call, [call.args[1]], wait, attempt)
    return None if result is NULL_ARRAY else result


@command("brpoplpush", 4, "write blocking", (1, 2, 1))
async def brpoplpush(call: Call) -> Any:
    wait = timeout(call.args[3])

    async def attempt(tx: Tx) -> Any:
        return await lists.move(tx, call.args[1], call.args[2], False, True)

    result = await blocking(call, [call.args[1]], wait, attempt)
    return None if result is NULL_ARRAY else result


def mpop_args(args: list[bytes], sides: tuple[bytes, ...]) -> tuple[list[bytes], bytes, int]:
    """numkeys key... WHERE [COUNT n] -> (keys, where, count)."""
    numkeys = positive(args[0], "ERR numkeys should be greater than 0")
    if numkeys == 0:
        raise RedisError("ERR numkeys should be greater than 0")
    if len(args) < numkeys + 2:
        raise RedisError(errors.SYNTAX)
    keys = args[1 : 1 + numkeys]
    where = word(args[1 + numkeys])
    if where not in sides:
        raise RedisError(errors.SYNTAX)
    rest = args[2 + numkeys :]
    count = 1
    if rest:
        if len(rest) != 2 or word(rest[0]) != b"COUNT":
            raise RedisError(errors.SYNTAX)
        count = positive(rest[1], "ERR count should be greater than 0")
        if count == 0:
            raise RedisError("ERR count should be greater than 0")
    return keys, where, count


@command("lmpop", -4, "write", (0, 0, 0))
async def lmpop(call: Call) -> Any:
    keys, where, count = mpop_args(call.args[1:], (b"LEFT", b"RIGHT"))
    result = await _first_pop(keys, where == b"LEFT", count)(await call.tx())
    return NULL_ARRAY if result is None else result


@command("blmpop", -5, "write blocking", (0, 0, 0))
async def blmpop(call: Call) -> Any:
    wait = timeout(call.args[1])
    keys, where, count = mpop_args(call.args[2:], (b"LEFT", b"RIGHT"))
    return await blocking(call, keys, wait, _first_pop(keys, where == b"LEFT", count))
