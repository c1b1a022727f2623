"""HSCAN / SSCAN / ZSCAN pages: a collection walked in the order of its elements' hashes.

Each element (hash field, set or zset member) has a 64-bit hash, the same md5-based one as
``keys.key_hash``, indexed per key (engine migration 9). A page is the elements whose hash is
at or past the cursor, in hash order; the next cursor is the first hash not returned, as an
unsigned 64-bit number. Elements sharing one hash value are never split across pages, so
every element present for the whole iteration is returned at least once, whatever is added
or removed meanwhile (Redis's SCAN guarantee); cursor 0 starts and ends an iteration.
"""

from __future__ import annotations

from typing import Any

from heliosdb.services.keyvalue.store import Tx

_HASH = "(('x' || substr(md5({0}), 1, 16))::bit(64)::bigint)"
_PAGE = (
    "SELECT {columns}, {hash} AS h FROM {table} "
    "WHERE db = $1 AND key = $2 AND {hash} >= $3 ORDER BY {hash} LIMIT $4"
)
_SAME_HASH = "SELECT {columns} FROM {table} WHERE db = $1 AND key = $2 AND {hash} = $3"
_TABLES = {
    "hash": ("helios_kv.hashes", "field", "field, value"),
    "set": ("helios_kv.sets", "member", "member"),
    "zset": ("helios_kv.zsets", "member", "member, score"),
}
_SQL = {
    type_: (
        _PAGE.format(columns=columns, table=table, hash=_HASH.format(element)),
        _SAME_HASH.format(columns=columns, table=table, hash=_HASH.format(element)),
    )
    for type_, (table, element, columns) in _TABLES.items()
}
SIGNED = 2**63


async def scan_elements(
    tx: Tx, key: bytes, type_: str, cursor: int, count: int
) -> tuple[int, list[tuple[Any, ...]]]:
    """One page of ``key`` (a hash, set or zset): (next cursor, rows).

    Rows are (field, value), (member,) or (member, score). A missing key is an empty
    collection; a key of another type raises WRONGTYPE.
    """
    if await tx.read(key, type_) is None:
        return 0, []
    page_sql, same_hash_sql = _SQL[type_]
    rows = await tx.conn.fetch(page_sql, tx.db, key, cursor - SIGNED, count + 1)
    if len(rows) <= count:
        return 0, [tuple(r)[:-1] for r in rows]
    last_hash = rows[-1][-1]
    page = [tuple(r)[:-1] for r in rows if r[-1] != last_hash]
    if page:
        return last_hash + SIGNED, page
    # Every fetched element shares one hash value: take all of them, continue past it.
    rows = await tx.conn.fetch(same_hash_sql, tx.db, key, last_hash)
    following = (last_hash + 1 + SIGNED) % 2**64
    return following, [tuple(r) for r in rows]
