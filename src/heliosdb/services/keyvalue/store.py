"""Transactions over the key-value tables and the key-level operations every type shares.

A :class:`Tx` is one engine transaction on one connection. Writers lock a key's row
(``UPDATE ... RETURNING`` bumps its version at the same time, which is what WATCH
compares), readers filter expired rows by the ``now_ms`` the transaction started with.
An expired row met by a writer is deleted on the spot (lazy expiry); the sweeper in
service.py deletes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from heliosdb.services.keyvalue.faults import Reason, fault

TYPES = ("string", "hash", "list", "set", "zset")
ITEM_TABLES = {
    "hash": "helios_kv.hashes",
    "list": "helios_kv.lists",
    "set": "helios_kv.sets",
    "zset": "helios_kv.zsets",
}
_PUT_TEMPLATE = (
    "WITH prev AS (SELECT type FROM helios_kv.keys WHERE db = $1 AND key = $2 FOR UPDATE), "
    "put AS (INSERT INTO helios_kv.keys (db, key, type, value, expires_at_ms) "
    "VALUES ($1, $2, 'string', $3, $4) ON CONFLICT (db, key) DO UPDATE SET "
    "type = 'string', value = EXCLUDED.value, "
    "expires_at_ms = CASE WHEN helios_kv.keys.expires_at_ms <= $5 THEN NULL ELSE @ttl END, "
    "version = nextval('helios_kv.versions') RETURNING 1) "
    "SELECT (SELECT type FROM prev) FROM put"
)
_PUT = _PUT_TEMPLATE.replace("@ttl", "EXCLUDED.expires_at_ms")
_PUT_KEEP_TTL = _PUT_TEMPLATE.replace("@ttl", "helios_kv.keys.expires_at_ms")
_VERSIONS = (
    "SELECT key, version FROM helios_kv.keys WHERE db = $1 AND key = ANY($2::bytea[]) "
    "AND (expires_at_ms IS NULL OR expires_at_ms > $3)"
)
_VERSIONS_LOCKED = _VERSIONS + " ORDER BY key FOR UPDATE"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Meta:
    type: str
    value: bytes | None
    expires_at_ms: int | None
    version: int


@dataclass(slots=True)
class Tx:
    """One engine transaction; ``db`` is the Redis database number (SELECT may change it)."""

    conn: Any
    db: int
    now_ms: int = field(default_factory=now_ms)
    changed: set[tuple[int, bytes]] = field(default_factory=set)
    pushed: set[tuple[int, bytes]] = field(default_factory=set)
    flushed: set[int] = field(default_factory=set)

    # -- lookups ---------------------------------------------------------------------------

    async def lookup(self, key: bytes) -> Meta | None:
        """The live key, read without a lock."""
        row = await self.conn.fetchrow(
            "SELECT type, value, expires_at_ms, version FROM helios_kv.keys "
            "WHERE db = $1 AND key = $2 AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
            self.db, key, self.now_ms,
        )  # fmt: skip
        return None if row is None else Meta(*row)

    async def lock(self, key: bytes) -> Meta | None:
        """The live key, locked and with a new version (the caller is about to write it)."""
        row = await self.conn.fetchrow(
            "UPDATE helios_kv.keys SET version = nextval('helios_kv.versions') "
            "WHERE db = $1 AND key = $2 RETURNING type, value, expires_at_ms, version",
            self.db, key,
        )  # fmt: skip
        if row is None:
            return None
        meta = Meta(*row)
        if meta.expires_at_ms is not None and meta.expires_at_ms <= self.now_ms:
            await self.conn.execute(
                "DELETE FROM helios_kv.keys WHERE db = $1 AND key = $2", self.db, key
            )
            return None
        self.changed.add((self.db, key))
        return meta

    async def read(self, key: bytes, type_: str) -> Meta | None:
        meta = await self.lookup(key)
        if meta is not None and meta.type != type_:
            raise fault(Reason.WRONG_TYPE)
        return meta

    async def write(self, key: bytes, type_: str) -> Meta | None:
        meta = await self.lock(key)
        if meta is not None and meta.type != type_:
            raise fault(Reason.WRONG_TYPE)
        return meta

    async def ensure(self, key: bytes, type_: str) -> Meta:
        """Lock the key of ``type_``, creating an empty one if it does not exist."""
        while True:
            meta = await self.write(key, type_)
            if meta is not None:
                return meta
            version = await self.conn.fetchval(
                "INSERT INTO helios_kv.keys (db, key, type) VALUES ($1, $2, $3) "
                "ON CONFLICT (db, key) DO NOTHING RETURNING version",
                self.db, key, type_,
            )  # fmt: skip
            if version is not None:
                self.changed.add((self.db, key))
                return Meta(type_, None, None, version)

    async def drop_if_empty(self, key: bytes, type_: str) -> None:
        """Redis deletes a collection the moment it becomes empty."""
        await self.conn.execute(
            f"DELETE FROM helios_kv.keys k WHERE db = $1 AND key = $2 AND NOT EXISTS "  # noqa: S608
            f"(SELECT 1 FROM {ITEM_TABLES[type_]} i WHERE i.db = $1 AND i.key = $2)",
            self.db, key,
        )  # fmt: skip

    # -- strings ---------------------------------------------------------------------------

    async def put_string(
        self, key: bytes, value: bytes, expires_at_ms: int | None, *, keep_ttl: bool = False
    ) -> None:
        """SET semantics: replace whatever the key held (any type), TTL replaced or kept."""
        old_type = await self.conn.fetchval(
            _PUT_KEEP_TTL if keep_ttl else _PUT,
            self.db, key, value, expires_at_ms, self.now_ms,
        )  # fmt: skip
        if old_type is not None and old_type != "string":
            await self.conn.execute(
                f"DELETE FROM {ITEM_TABLES[old_type]} WHERE db = $1 AND key = $2",  # noqa: S608
                self.db, key,
            )  # fmt: skip
        self.changed.add((self.db, key))

    async def update_string(self, key: bytes, value: bytes) -> None:
        """Replace a locked string's value, keeping its TTL (APPEND, INCR, SETRANGE)."""
        await self.conn.execute(
            "INSERT INTO helios_kv.keys (db, key, type, value) VALUES ($1, $2, 'string', $3) "
            "ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value",
            self.db, key, value,
        )  # fmt: skip
        self.changed.add((self.db, key))

    async def get_strings(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """MGET: values of string keys, None for missing keys and other types."""
        rows = await self.conn.fetch(
            "SELECT key, value FROM helios_kv.keys "
            "WHERE db = $1 AND key = ANY($2::bytea[]) AND type = 'string' "
            "AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
            self.db, list(keys), self.now_ms,
        )  # fmt: skip
        found = {bytes(r[0]): r[1] for r in rows}
        return [found.get(k) for k in keys]

    # -- keys ------------------------------------------------------------------------------

    async def delete(self, keys: Iterable[bytes]) -> int:
        keys = list(keys)
        rows = await self.conn.fetch(
            "DELETE FROM helios_kv.keys WHERE db = $1 AND key = ANY($2::bytea[]) "
            "RETURNING key, expires_at_ms",
            self.db, keys,
        )  # fmt: skip
        live = 0
        for row in rows:
            self.changed.add((self.db, bytes(row[0])))
            if row[1] is None or row[1] > self.now_ms:
                live += 1
        return live

    async def count_existing(self, keys: Sequence[bytes]) -> int:
        """EXISTS: each argument counts, repeated keys count again."""
        rows = await self.conn.fetch(
            "SELECT key FROM helios_kv.keys WHERE db = $1 AND key = ANY($2::bytea[]) "
            "AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
            self.db, list(set(keys)), self.now_ms,
        )  # fmt: skip
        present = {bytes(r[0]) for r in rows}
        return sum(1 for k in keys if k in present)

    async def versions(
        self, keys: Sequence[bytes], *, lock: bool = False
    ) -> dict[bytes, int | None]:
        """Each live key's version (None when missing); ``lock`` holds them until commit."""
        rows = await self.conn.fetch(
            _VERSIONS_LOCKED if lock else _VERSIONS, self.db, list(keys), self.now_ms
        )
        found = {bytes(r[0]): r[1] for r in rows}
        return {k: found.get(k) for k in keys}

    async def set_expiry(self, key: bytes, expires_at_ms: int | None) -> None:
        await self.conn.execute(
            "UPDATE helios_kv.keys SET expires_at_ms = $3 WHERE db = $1 AND key = $2",
            self.db, key, expires_at_ms,
        )  # fmt: skip
        self.changed.add((self.db, key))

    async def rename(self, src: bytes, dst: bytes, *, replace: bool) -> bool:
        """Move ``src`` (locked, live) to ``dst``; False if ``dst`` exists and not ``replace``."""
        target = await self.lock(dst)
        if target is not None:
            if not replace:
                return False
            await self.delete([dst])
        else:
            # An expired row may still hold the name.
            await self.conn.execute(
                "DELETE FROM helios_kv.keys WHERE db = $1 AND key = $2", self.db, dst
            )
        await self.conn.execute(
            "UPDATE helios_kv.keys SET key = $3, version = nextval('helios_kv.versions') "
            "WHERE db = $1 AND key = $2",
            self.db, src, dst,
        )  # fmt: skip
        self.changed.update({(self.db, src), (self.db, dst)})
        return True

    async def copy(self, src: Meta, src_key: bytes, dst_db: int, dst: bytes) -> None:
        """Copy a live key (and its items) to ``dst_db``/``dst``, which must not exist."""
        await self.conn.execute(
            "DELETE FROM helios_kv.keys WHERE db = $1 AND key = $2", dst_db, dst
        )
        await self.conn.execute(
            "INSERT INTO helios_kv.keys (db, key, type, value, expires_at_ms) "
            "SELECT $3, $4, type, value, expires_at_ms FROM helios_kv.keys "
            "WHERE db = $1 AND key = $2",
            self.db, src_key, dst_db, dst,
        )  # fmt: skip
        if src.type in ITEM_TABLES:
            columns = {
                "hash": "field, value",
                "list": "pos, value",
                "set": "member",
                "zset": "member, score",
            }[src.type]
            table = ITEM_TABLES[src.type]
            await self.conn.execute(
                f"INSERT INTO {table} (db, key, {columns}) "  # noqa: S608
                f"SELECT $3, $4, {columns} FROM {table} WHERE db = $1 AND key = $2",
                self.db, src_key, dst_db, dst,
            )  # fmt: skip
        self.changed.add((dst_db, dst))

    async def scan(self, cursor: int, count: int, type_: str | None) -> tuple[int, list[bytes]]:
        """One page in ``key_hash`` order; the cursor is the next hash as unsigned 64-bit."""
        start = cursor - 2**63
        rows = await self.conn.fetch(
            "SELECT key, key_hash FROM helios_kv.keys "
            "WHERE db = $1 AND key_hash >= $2 AND (expires_at_ms IS NULL OR expires_at_ms > $4) "
            "AND ($5::text IS NULL OR type = $5) ORDER BY key_hash LIMIT $3",
            self.db, start, count + 1, self.now_ms, type_,
        )  # fmt: skip
        if len(rows) <= count:
            return 0, [bytes(r[0]) for r in rows]
        last_hash = rows[-1][1]
        page = [bytes(r[0]) for r in rows if r[1] != last_hash]
        if not page:  # every row shares one hash: take them all
            rows = await self.conn.fetch(
                "SELECT key FROM helios_kv.keys WHERE db = $1 AND key_hash = $2",
                self.db, last_hash,
            )  # fmt: skip
            return (last_hash + 1 + 2**63) % 2**64, [bytes(r[0]) for r in rows]
        return last_hash + 2**63, page

    async def all_keys(self) -> list[bytes]:
        rows = await self.conn.fetch(
            "SELECT key FROM helios_kv.keys WHERE db = $1 AND "
            "(expires_at_ms IS NULL OR expires_at_ms > $2) ORDER BY key",
            self.db, self.now_ms,
        )  # fmt: skip
        return [bytes(r[0]) for r in rows]

    async def random_key(self) -> bytes | None:
        value = await self.conn.fetchval(
            "SELECT key FROM helios_kv.keys WHERE db = $1 AND "
            "(expires_at_ms IS NULL OR expires_at_ms > $2) "
            "AND key_hash >= (random() * 2^63 * 2 - 2^63)::bigint ORDER BY key_hash LIMIT 1",
            self.db, self.now_ms,
        )  # fmt: skip
        if value is None:
            value = await self.conn.fetchval(
                "SELECT key FROM helios_kv.keys WHERE db = $1 AND "
                "(expires_at_ms IS NULL OR expires_at_ms > $2) ORDER BY key_hash LIMIT 1",
                self.db, self.now_ms,
            )  # fmt: skip
        return None if value is None else bytes(value)

    async def size(self, db: int | None = None) -> tuple[int, int]:
        """(keys, keys with an expiry) of a database."""
        row = await self.conn.fetchrow(
            "SELECT count(*), count(expires_at_ms) FROM helios_kv.keys WHERE db = $1 AND "
            "(expires_at_ms IS NULL OR expires_at_ms > $2)",
            self.db if db is None else db, self.now_ms,
        )  # fmt: skip
        return int(row[0]), int(row[1])

    async def flush(self, db: int | None) -> None:
        if db is None:
            await self.conn.execute("DELETE FROM helios_kv.keys")
            self.flushed.update(range(16))
        else:
            await self.conn.execute("DELETE FROM helios_kv.keys WHERE db = $1", db)
            self.flushed.add(db)

    async def swap(self, a: int, b: int) -> None:
        # Three steps: (db, key) is unique at every row, so a one-statement swap collides.
        for src, dst in ((a, -1), (b, a), (-1, b)):
            await self.conn.execute(
                "UPDATE helios_kv.keys SET db = $2, version = nextval('helios_kv.versions') "
                "WHERE db = $1",
                src, dst,
            )  # fmt: skip
        self.flushed.update({a, b})
