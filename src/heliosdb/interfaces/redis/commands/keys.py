"""Key commands: DEL, EXISTS, TYPE, RENAME, COPY, KEYS, SCAN, expiry, OBJECT."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import OK, Status
from heliosdb.interfaces.redis.commands.args import integer, positive, word
from heliosdb.interfaces.redis.commands.server import DATABASES
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue.service import glob_to_regex
from heliosdb.services.keyvalue.store import TYPES

MAX_EXPIRE_MS = 2**62


@command("del", -2, "write", (1, -1, 1))
async def del_(call: Call) -> Any:
    return await (await call.tx()).delete(call.args[1:])


@command("unlink", -2, "write fast", (1, -1, 1))
async def unlink(call: Call) -> Any:
    return await (await call.tx()).delete(call.args[1:])


@command("exists", -2, "read fast", (1, -1, 1))
async def exists(call: Call) -> Any:
    return await (await call.tx()).count_existing(call.args[1:])


@command("touch", -2, "read fast", (1, -1, 1))
async def touch(call: Call) -> Any:
    return await (await call.tx()).count_existing(list(dict.fromkeys(call.args[1:])))


@command("type", 2, "read fast", (1, 1, 1))
async def type_(call: Call) -> Any:
    meta = await (await call.tx()).lookup(call.args[1])
    return Status("none" if meta is None else meta.type)


async def _rename(call: Call, replace: bool) -> bool:
    tx = await call.tx()
    src, dst = call.args[1], call.args[2]
    meta = await tx.lock(src)
    if meta is None:
        raise RedisError(errors.NO_SUCH_KEY)
    if src == dst:
        return replace
    return await tx.rename(src, dst, replace=replace)


@command("rename", 3, "write", (1, 2, 1))
async def rename(call: Call) -> Any:
    await _rename(call, True)
    return OK


@command("renamenx", 3, "write fast", (1, 2, 1))
async def renamenx(call: Call) -> Any:
    return int(await _rename(call, False))


@command("copy", -3, "write", (1, 2, 1))
async def copy(call: Call) -> Any:
    args = call.args
    db = call.client.db
    replace = False
    i = 3
    while i < len(args):
        option = word(args[i])
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and i + 1 < len(args):
            db = integer(args[i + 1])
            if not 0 <= db < DATABASES:
                raise RedisError(errors.DB_OUT_OF_RANGE)
            i += 1
        else:
            raise RedisError(errors.SYNTAX)
        i += 1
    tx = await call.tx()
    src, dst = args[1], args[2]
    if src == dst and db == call.client.db:
        raise RedisError("ERR source and destination objects are the same")
    meta = await tx.lookup(src)
    if meta is None:
        return 0
    here = tx.db
    tx.db = db
    try:
        existing = await tx.lock(dst)
    finally:
        tx.db = here
    if existing is not None and not replace:
        return 0
    await tx.copy(meta, src, db, dst)
    return 1


@command("keys", 2, "read", help="KEYS pattern")
async def keys(call: Call) -> Any:
    regex = glob_to_regex(call.args[1])
    return [k for k in await (await call.tx()).all_keys() if regex.match(k)]


@command("scan", -2, "read")
async def scan(call: Call) -> Any:
    cursor = _cursor(call.args[1])
    match, count, type_ = None, 10, None
    args = call.args
    i = 2
    while i < len(args):
        option = word(args[i])
        if i + 1 >= len(args):
            raise RedisError(errors.SYNTAX)
        if option == b"MATCH":
            match = glob_to_regex(args[i + 1])
        elif option == b"COUNT":
            count = integer(args[i + 1])
            if count < 1:
                raise RedisError(errors.SYNTAX)
        elif option == b"TYPE":
            type_ = args[i + 1].decode(errors="replace").lower()
        else:
            raise RedisError(errors.SYNTAX)
        i += 2
    if type_ is not None and type_ not in TYPES:
        return [b"0", []]
    following, page = await (await call.tx()).scan(cursor, min(count, 100_000), type_)
    if match is not None:
        page = [k for k in page if match.match(k)]
    return [str(following).encode(), page]


def _cursor(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 2**64:
        raise RedisError(errors.INVALID_CURSOR)
    return int(raw)


@command("randomkey", 1, "read")
async def randomkey(call: Call) -> Any:
    return await (await call.tx()).random_key()


async def _expire(call: Call, unit_ms: int, absolute: bool) -> Any:
    name = call.command.name
    raw = integer(call.args[2])
    flags = {word(a) for a in call.args[3:]}
    if not flags <= {b"NX", b"XX", b"GT", b"LT"} or len(flags) != len(call.args[3:]):
        raise RedisError(f"ERR Unsupported option {call.args[3].decode(errors='replace')}")
    if b"NX" in flags and flags & {b"XX", b"GT", b"LT"}:
        raise RedisError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if {b"GT", b"LT"} <= flags:
        raise RedisError("ERR GT and LT options at the same time are not compatible")
    if abs(raw) > MAX_EXPIRE_MS // unit_ms:
        raise errors.invalid_expire(name)
    tx = await call.tx()
    at = raw * unit_ms if absolute else tx.now_ms + raw * unit_ms
    if not -(2**63) < at < 2**63:
        raise errors.invalid_expire(name)
    meta = await tx.lock(call.args[1])
    if meta is None:
        return 0
    current = meta.expires_at_ms
    if b"NX" in flags and current is not None:
        return 0
    if b"XX" in flags and current is None:
        return 0
    # A key without a TTL counts as an infinite one for GT and LT.
    if b"GT" in flags and (current is None or at <= current):
        return 0
    if b"LT" in flags and current is not None and at >= current:
        return 0
    if at <= tx.now_ms:
        await tx.delete([call.args[1]])
    else:
        await tx.set_expiry(call.args[1], at)
    return 1


@command("expire", -3, "write fast", (1, 1, 1))
async def expire(call: Call) -> Any:
    return await _expire(call, 1000, False)


@command("pexpire", -3, "write fast", (1, 1, 1))
async def pexpire(call: Call) -> Any:
    return await _expire(call, 1, False)


@command("expireat", -3, "write fast", (1, 1, 1))
async def expireat(call: Call) -> Any:
    return await _expire(call, 1000, True)


@command("pexpireat", -3, "write fast", (1, 1, 1))
async def pexpireat(call: Call) -> Any:
    return await _expire(call, 1, True)


async def _ttl(call: Call, unit_ms: int, absolute: bool) -> Any:
    tx = await call.tx()
    meta = await tx.lookup(call.args[1])
    if meta is None:
        return -2
    if meta.expires_at_ms is None:
        return -1
    if absolute:
        return meta.expires_at_ms // unit_ms
    remaining = meta.expires_at_ms - tx.now_ms
    return (remaining + unit_ms // 2) // unit_ms if unit_ms > 1 else remaining


@command("ttl", 2, "read fast", (1, 1, 1))
async def ttl(call: Call) -> Any:
    return await _ttl(call, 1000, False)


@command("pttl", 2, "read fast", (1, 1, 1))
async def pttl(call: Call) -> Any:
    return await _ttl(call, 1, False)


@command("expiretime", 2, "read fast", (1, 1, 1))
async def expiretime(call: Call) -> Any:
    return await _ttl(call, 1000, True)


@command("pexpiretime", 2, "read fast", (1, 1, 1))
async def pexpiretime(call: Call) -> Any:
    return await _ttl(call, 1, True)


@command("persist", 2, "write fast", (1, 1, 1))
async def persist(call: Call) -> Any:
    tx = await call.tx()
    meta = await tx.lock(call.args[1])
    if meta is None or meta.expires_at_ms is None:
        return 0
    await tx.set_expiry(call.args[1], None)
    return 1


_ENCODINGS = {"string": "embstr", "hash": "listpack", "list": "quicklist", "set": "hashtable"}


@command("object", -2, "read")
async def object_(call: Call) -> Any:
    sub = word(call.args[1])
    if sub == b"HELP":
        return [b"OBJECT <subcommand>", b"ENCODING <key>", b"FREQ <key>", b"IDLETIME <key>"]
    if len(call.args) != 3:
        raise errors.wrong_arity(f"object|{sub.decode(errors='replace').lower()}")
    if sub not in (b"ENCODING", b"FREQ", b"IDLETIME", b"REFCOUNT"):
        raise errors.unknown_subcommand(call.args[1], "object")
    meta = await (await call.tx()).lookup(call.args[2])
    if meta is None:
        return None
    if sub == b"ENCODING":
        if meta.type == "string" and meta.value is not None:
            if positive_or_none(meta.value) is not None:
                return b"int"
            return b"embstr" if len(meta.value) <= 44 else b"raw"
        return _ENCODINGS.get(meta.type, "skiplist").encode()
    return 1 if sub == b"REFCOUNT" else 0


def positive_or_none(raw: bytes) -> int | None:
    try:
        return integer(raw)
    except RedisError:
        return None


@command("wait", 3, "")
async def wait(call: Call) -> Any:
    positive(call.args[1])
    positive(call.args[2])
    return 0
