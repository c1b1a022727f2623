"""String commands: GET, SET and friends, counters, ranges, MGET/MSET."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import OK
from heliosdb.interfaces.redis.commands.args import integer, positive, real, word
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import strings
from heliosdb.services.keyvalue.store import now_ms

MAX_EXPIRE_MS = 2**62


def expiry_at(kind: bytes, raw: bytes, command_name: str, now: int) -> int:
    """EX/PX/EXAT/PXAT value -> absolute unix ms; invalid -> the command's expire error."""
    value = integer(raw)
    limit = MAX_EXPIRE_MS if kind in (b"PX", b"PXAT") else MAX_EXPIRE_MS // 1000
    if not 0 < value <= limit:
        raise errors.invalid_expire(command_name)
    if kind == b"EX":
        return now + value * 1000
    if kind == b"PX":
        return now + value
    if kind == b"EXAT":
        return value * 1000
    return value


@command("get", 2, "read fast", (1, 1, 1))
async def get(call: Call) -> Any:
    if call.in_exec:
        return await strings.get(await call.tx(), call.args[1])
    return await call.kv.get_string(call.client.db, call.args[1])


@command("set", -3, "write", (1, 1, 1))
async def set_(call: Call) -> Any:
    key, value = call.args[1], call.args[2]
    opts: dict[str, Any] = {}
    now = now_ms()
    i = 3
    args = call.args
    expiry_given = False
    while i < len(args):
        option = word(args[i])
        if option in (b"NX", b"XX") and not opts.get("nx" if option == b"XX" else "xx"):
            opts[option.decode().lower()] = True
        elif option == b"GET":
            opts["get"] = True
        elif option == b"KEEPTTL" and not expiry_given:
            opts["keep_ttl"] = True
        elif (
            option in (b"EX", b"PX", b"EXAT", b"PXAT")
            and i + 1 < len(args)
            and not expiry_given
            and not opts.get("keep_ttl")
        ):
            opts["expires_at_ms"] = expiry_at(option, args[i + 1], "set", now)
            expiry_given = True
            i += 1
        else:
            raise RedisError(errors.SYNTAX)
        i += 1
    if not opts and not call.in_exec:
        await call.kv.set_string(call.client.db, key, value, None)
        return OK
    done, old = await strings.set_(await call.tx(), key, value, strings.SetOptions(**opts))
    if opts.get("get"):
        return old
    return OK if done else None


@command("setnx", 3, "write fast", (1, 1, 1))
async def setnx(call: Call) -> Any:
    done, _ = await strings.set_(
        await call.tx(), call.args[1], call.args[2], strings.SetOptions(nx=True)
    )
    return int(done)


async def _set_with_expiry(call: Call, unit: bytes, name: str) -> Any:
    at = expiry_at(unit, call.args[2], name, now_ms())
    await strings.set_(
        await call.tx(), call.args[1], call.args[3], strings.SetOptions(expires_at_ms=at)
    )
    return OK


@command("setex", 4, "write", (1, 1, 1))
async def setex(call: Call) -> Any:
    return await _set_with_expiry(call, b"EX", "setex")


@command("psetex", 4, "write", (1, 1, 1))
async def psetex(call: Call) -> Any:
    return await _set_with_expiry(call, b"PX", "psetex")


@command("getset", 3, "write fast", (1, 1, 1))
async def getset(call: Call) -> Any:
    _, old = await strings.set_(
        await call.tx(), call.args[1], call.args[2], strings.SetOptions(get=True)
    )
    return old


@command("getdel", 2, "write fast", (1, 1, 1))
async def getdel(call: Call) -> Any:
    return await strings.get_del(await call.tx(), call.args[1])


@command("getex", -2, "write fast", (1, 1, 1))
async def getex(call: Call) -> Any:
    args = call.args
    new_expiry: int | None = None
    persist = False
    if len(args) > 2:
        option = word(args[2])
        if option == b"PERSIST" and len(args) == 3:
            persist = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and len(args) == 4:
            new_expiry = expiry_at(option, args[3], "getex", now_ms())
        else:
            raise RedisError(errors.SYNTAX)
    tx = await call.tx()
    meta = await tx.write(args[1], "string")
    if meta is None:
        return None
    if persist and meta.expires_at_ms is not None:
        await tx.set_expiry(args[1], None)
    elif new_expiry is not None:
        if new_expiry <= tx.now_ms:
            await tx.delete([args[1]])
        else:
            await tx.set_expiry(args[1], new_expiry)
    return meta.value


@command("mget", -2, "read fast", (1, -1, 1))
async def mget(call: Call) -> Any:
    return await (await call.tx()).get_strings(call.args[1:])


def _pairs(call: Call) -> list[tuple[bytes, bytes]]:
    args = call.args[1:]
    if len(args) % 2:
        raise errors.wrong_arity(call.command.name)
    return list(zip(args[::2], args[1::2], strict=True))


@command("mset", -3, "write", (1, -1, 2))
async def mset(call: Call) -> Any:
    await strings.mset(await call.tx(), _pairs(call), only_new=False)
    return OK


@command("msetnx", -3, "write", (1, -1, 2))
async def msetnx(call: Call) -> Any:
    return int(await strings.mset(await call.tx(), _pairs(call), only_new=True))


@command("append", 3, "write fast", (1, 1, 1))
async def append(call: Call) -> Any:
    return await strings.append(await call.tx(), call.args[1], call.args[2])


@command("strlen", 2, "read fast", (1, 1, 1))
async def strlen(call: Call) -> Any:
    return len(await strings.get(await call.tx(), call.args[1]) or b"")


@command("getrange", 4, "read", (1, 1, 1))
async def getrange(call: Call) -> Any:
    start, end = integer(call.args[2]), integer(call.args[3])
    return await strings.get_range(await call.tx(), call.args[1], start, end)


@command("substr", 4, "read", (1, 1, 1))
async def substr(call: Call) -> Any:
    return await getrange(call)


@command("setrange", 4, "write", (1, 1, 1))
async def setrange(call: Call) -> Any:
    offset = positive(call.args[2], "ERR offset is out of range")
    if offset + len(call.args[3]) > strings.MAX_STRING:
        raise RedisError(errors.STRING_TOO_LONG)
    return await strings.set_range(await call.tx(), call.args[1], offset, call.args[3])


@command("incr", 2, "write fast batched", (1, 1, 1))
async def incr(call: Call) -> Any:
    return await _incr_by(call, 1)


@command("decr", 2, "write fast batched", (1, 1, 1))
async def decr(call: Call) -> Any:
    return await _incr_by(call, -1)


@command("incrby", 3, "write fast batched", (1, 1, 1))
async def incrby(call: Call) -> Any:
    return await _incr_by(call, integer(call.args[2]))


@command("decrby", 3, "write fast batched", (1, 1, 1))
async def decrby(call: Call) -> Any:
    delta = integer(call.args[2])
    if delta == -(2**63):
        raise RedisError("ERR decrement would overflow")
    return await _incr_by(call, -delta)


async def _incr_by(call: Call, delta: int) -> int:
    if call.in_exec:
        return await strings.incr_by(await call.tx(), call.args[1], delta)
    return await call.kv.incr_by(call.client.db, call.args[1], delta)


@command("incrbyfloat", 3, "write fast", (1, 1, 1))
async def incrbyfloat(call: Call) -> Any:
    return await strings.incr_by_float(await call.tx(), call.args[1], real(call.args[2]))
