"""MULTI / EXEC / DISCARD / WATCH / UNWATCH: each EXEC is one engine transaction.

WATCH remembers each key's version; EXEC locks the watched rows, compares the versions
and runs the queue in the same transaction, each command inside a savepoint so a failing
one (WRONGTYPE, ...) leaves no partial effect and the others still apply, as in Redis.
"""

from __future__ import annotations

from typing import Any

from heliosdb.engine import Access
from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import NULL_ARRAY, OK
from heliosdb.interfaces.redis.errors import RedisError, to_redis
from heliosdb.interfaces.redis.registry import Call, command


@command("multi", 1, "noqueue fast")
async def multi(call: Call) -> Any:
    if call.client.multi is not None:
        raise RedisError("ERR MULTI calls can not be nested")
    call.client.multi = []
    call.client.dirty = False
    return OK


@command("discard", 1, "noqueue fast")
async def discard(call: Call) -> Any:
    if call.client.multi is None:
        raise RedisError("ERR DISCARD without MULTI")
    call.client.multi = None
    call.client.dirty = False
    call.client.watched.clear()
    return OK


@command("watch", -2, "noqueue read fast", (1, -1, 1))
async def watch(call: Call) -> Any:
    if call.client.multi is not None:
        raise RedisError("ERR WATCH inside MULTI is not allowed")
    tx = await call.tx()
    versions = await tx.versions(call.args[1:])
    for key, version in versions.items():
        call.client.watched.setdefault((call.client.db, key), version)
    return OK


@command("unwatch", 1, "noqueue fast")
async def unwatch(call: Call) -> Any:
    call.client.watched.clear()
    return OK


@command("exec", 1, "noqueue")
async def exec_(call: Call) -> Any:
    client = call.client
    if client.multi is None:
        raise RedisError("ERR EXEC without MULTI")
    queued, dirty = client.multi, client.dirty
    client.multi, client.dirty = None, False
    watched = dict(client.watched)
    client.watched.clear()
    if dirty:
        raise RedisError(errors.EXECABORT)
    writes = any(cmd.writes for cmd, _ in queued)
    access = Access.READ_WRITE if writes else call.access
    if writes and call.access is Access.READ_ONLY:
        access = Access.READ_ONLY
        writes = False
    replies: list[Any] = []
    start_db = client.db
    async with call.kv.transaction(access, client.db, write=writes, atomic=True) as tx:
        by_db: dict[int, list[bytes]] = {}
        for db, key in watched:
            by_db.setdefault(db, []).append(key)
        for db, keys in by_db.items():
            tx.db = db
            now = await tx.versions(keys, lock=writes)
            if any(now[k] != watched[(db, k)] for k in keys):
                return NULL_ARRAY
        tx.db = start_db
        for cmd, args in queued:
            sub = Call(cmd, args, client, call.server, shared_tx=tx, session=call.session)
            try:
                if call.session is not None:
                    call.session.check_permission(cmd)
                await tx.conn.execute("SAVEPOINT helios_exec")
                try:
                    reply = await cmd.handler(sub)
                except BaseException:
                    await tx.conn.execute("ROLLBACK TO SAVEPOINT helios_exec")
                    raise
                await tx.conn.execute("RELEASE SAVEPOINT helios_exec")
            except Exception as exc:  # noqa: BLE001 - a failed command is one error element
                reply = to_redis(exc)
            replies.append(reply)
    return replies
