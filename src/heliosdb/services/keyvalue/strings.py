"""String values: GET/SET and the in-place edits that keep a key's TTL."""

from __future__ import annotations

from dataclasses import dataclass

from heliosdb.services.keyvalue.faults import Reason, fault
from heliosdb.services.keyvalue.numbers import (
    add_float,
    add_int,
    format_float,
    parse_float,
    parse_int,
)
from heliosdb.services.keyvalue.store import Tx

MAX_STRING = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SetOptions:
    expires_at_ms: int | None = None
    keep_ttl: bool = False
    nx: bool = False
    xx: bool = False
    get: bool = False


async def get(tx: Tx, key: bytes) -> bytes | None:
    meta = await tx.read(key, "string")
    return None if meta is None else meta.value


async def set_(tx: Tx, key: bytes, value: bytes, opts: SetOptions) -> tuple[bool, bytes | None]:
    """(whether it was set, the old value when ``opts.get``)."""
    if not (opts.nx or opts.xx or opts.get):
        await tx.put_string(key, value, opts.expires_at_ms, keep_ttl=opts.keep_ttl)
        return True, None
    meta = await tx.lock(key)
    if opts.get and meta is not None and meta.type != "string":
        raise fault(Reason.WRONG_TYPE)
    old = meta.value if meta is not None else None
    if (opts.nx and meta is not None) or (opts.xx and meta is None):
        return False, old
    await tx.put_string(key, value, opts.expires_at_ms, keep_ttl=opts.keep_ttl)
    return True, old


async def get_del(tx: Tx, key: bytes) -> bytes | None:
    meta = await tx.write(key, "string")
    if meta is None:
        return None
    await tx.delete([key])
    return meta.value


async def incr_by(tx: Tx, key: bytes, delta: int) -> int:
    meta = await tx.write(key, "string")
    current = 0 if meta is None or meta.value is None else parse_int(meta.value)
    result = add_int(current, delta)
    await tx.update_string(key, str(result).encode())
    return result


async def incr_by_float(tx: Tx, key: bytes, delta: float) -> bytes:
    meta = await tx.write(key, "string")
    current = 0.0 if meta is None or meta.value is None else parse_float(meta.value)
    text = format_float(add_float(current, delta))
    await tx.update_string(key, text)
    return text


async def append(tx: Tx, key: bytes, suffix: bytes) -> int:
    meta = await tx.write(key, "string")
    value = (meta.value or b"" if meta is not None else b"") + suffix
    if len(value) > MAX_STRING:
        raise fault(Reason.STRING_TOO_LONG)
    await tx.update_string(key, value)
    return len(value)


async def set_range(tx: Tx, key: bytes, offset: int, data: bytes) -> int:
    meta = await tx.write(key, "string")
    value = meta.value or b"" if meta is not None else b""
    if not data:
        return len(value)
    if offset + len(data) > MAX_STRING:
        raise fault(Reason.STRING_TOO_LONG)
    if len(value) < offset:
        value += b"\0" * (offset - len(value))
    value = value[:offset] + data + value[offset + len(data) :]
    await tx.update_string(key, value)
    return len(value)


def slice_range(length: int, start: int, end: int) -> tuple[int, int] | None:
    """Redis's inclusive [start, end] with negative indexes, clamped; None when empty."""
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end = length + end
    end = min(end, length - 1)
    if start > end or length == 0:
        return None
    return start, end


async def get_range(tx: Tx, key: bytes, start: int, end: int) -> bytes:
    value = await get(tx, key) or b""
    bounds = slice_range(len(value), start, end)
    return b"" if bounds is None else value[bounds[0] : bounds[1] + 1]


async def mset(tx: Tx, pairs: list[tuple[bytes, bytes]], *, only_new: bool) -> bool:
    if only_new and await tx.count_existing([k for k, _ in pairs]):
        return False
    for key, value in pairs:
        await tx.put_string(key, value, None)
    return True
