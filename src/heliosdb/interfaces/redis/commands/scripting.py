"""EVAL / EVALSHA / SCRIPT without a Lua runtime: well-known scripts run natively.

HeliosDB has no Lua interpreter. It recognises the scripts of redis-py's ``Lock``
(release, extend, reacquire; compared with whitespace collapsed, so every redis-py version
matches) and runs them as native code in one engine transaction. ``SCRIPT LOAD`` keeps any
script's text by SHA1 on this node, so EVALSHA answers NOSCRIPT exactly as Redis does and
clients fall back to SCRIPT LOAD; any other script is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import OK
from heliosdb.interfaces.redis.commands.args import integer, positive, word
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import Call, command
from heliosdb.services.keyvalue import Tx

NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
MAX_SCRIPTS = 10_000
_scripts: dict[str, bytes] = {}

Native = Callable[[Tx, list[bytes], list[bytes]], Awaitable[Any]]


def _normal(text: bytes) -> bytes:
    return re.sub(rb"\s+", b" ", text).strip()


async def _token_matches(tx: Tx, key: bytes, token: bytes) -> bool:
    meta = await tx.write(key, "string")
    return meta is not None and meta.value == token


async def _release(tx: Tx, keys: list[bytes], argv: list[bytes]) -> int:
    if not await _token_matches(tx, keys[0], argv[0]):
        return 0
    await tx.delete([keys[0]])
    return 1


async def _extend(tx: Tx, keys: list[bytes], argv: list[bytes]) -> int:
    meta = await tx.write(keys[0], "string")
    if meta is None or meta.value != argv[0]:
        return 0
    if meta.expires_at_ms is None:
        return 0
    ttl = integer(argv[1])
    if argv[2] == b"0":
        ttl += meta.expires_at_ms - tx.now_ms
    await _pexpire(tx, keys[0], ttl)
    return 1


async def _reacquire(tx: Tx, keys: list[bytes], argv: list[bytes]) -> int:
    if not await _token_matches(tx, keys[0], argv[0]):
        return 0
    await _pexpire(tx, keys[0], integer(argv[1]))
    return 1


async def _pexpire(tx: Tx, key: bytes, ttl_ms: int) -> None:
    if ttl_ms <= 0:
        await tx.delete([key])
    else:
        await tx.set_expiry(key, tx.now_ms + ttl_ms)


_RELEASE = b"""local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then
return 0 end redis.call('del', KEYS[1]) return 1"""
_EXTEND = b"""local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then
return 0 end local expiration = redis.call('pttl', KEYS[1]) if not expiration then
expiration = 0 end if expiration < 0 then return 0 end local newttl = ARGV[2]
if ARGV[3] == "0" then newttl = ARGV[2] + expiration end
redis.call('pexpire', KEYS[1], newttl) return 1"""
_REACQUIRE = b"""local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then
return 0 end redis.call('pexpire', KEYS[1], ARGV[2]) return 1"""

KNOWN: dict[bytes, tuple[Native, int, int]] = {  # text -> (code, keys, args)
    _normal(_RELEASE): (_release, 1, 1),
    _normal(_EXTEND): (_extend, 1, 3),
    _normal(_REACQUIRE): (_reacquire, 1, 2),
}


def sha1(text: bytes) -> str:
    return hashlib.sha1(text).hexdigest()


def remember(text: bytes) -> str:
    digest = sha1(text)
    if len(_scripts) >= MAX_SCRIPTS:
        _scripts.clear()
    _scripts[digest] = text
    return digest


async def _run(call: Call, text: bytes) -> Any:
    args = call.args[2:]
    numkeys = positive(args[0], "ERR Number of keys can't be negative")
    if numkeys > len(args) - 1:
        raise RedisError("ERR Number of keys can't be greater than number of args")
    keys, argv = args[1 : 1 + numkeys], args[1 + numkeys :]
    known = KNOWN.get(_normal(text))
    if known is None or len(keys) != known[1] or len(argv) < known[2]:
        raise RedisError(
            "ERR scripting is not supported by HeliosDB (it runs redis-py's lock scripts only)"
        )
    return await known[0](await call.tx(), keys, argv)


@command("eval", -3, "write", help="EVAL script numkeys key... arg...")
async def eval_(call: Call) -> Any:
    remember(call.args[1])
    return await _run(call, call.args[1])


@command("evalsha", -3, "write")
async def evalsha(call: Call) -> Any:
    text = _scripts.get(call.args[1].decode(errors="replace").lower())
    if text is None:
        raise RedisError(NOSCRIPT)
    return await _run(call, text)


@command("script", -2, "")
async def script(call: Call) -> Any:
    sub = word(call.args[1])
    if sub == b"LOAD" and len(call.args) == 3:
        return remember(call.args[2]).encode()
    if sub == b"EXISTS" and len(call.args) >= 3:
        return [int(a.decode(errors="replace").lower() in _scripts) for a in call.args[2:]]
    if sub == b"FLUSH" and len(call.args) <= 3:
        _scripts.clear()
        return OK
    if sub in (b"LOAD", b"EXISTS"):
        raise errors.wrong_arity(f"script|{sub.decode().lower()}")
    raise errors.unknown_subcommand(call.args[1], "script")
