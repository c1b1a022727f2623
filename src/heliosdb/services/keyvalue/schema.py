"""The engine tables behind the key-value (Redis) data model, schema ``helios_kv``.

    helios_kv.keys     one row per live key: (db, key) -> type, string value, expiry, version
    helios_kv.hashes   (db, key, field) -> value
    helios_kv.lists    (db, key, pos) -> value; order is pos, pushes extend either end
    helios_kv.sets     (db, key, member)
    helios_kv.zsets    (db, key, member) -> score

Collections follow their key row: triggers on helios_kv.keys (migration 15; foreign keys
until then, whose per-item check cost more than the insert) delete or move a collection's
items with its row, so deleting or renaming a key is one statement. ``version`` changes on
every write (WATCH compares it); ``expires_at_ms`` is unix time in milliseconds and every
read filters on it; ``key_hash`` orders SCAN so a cursor survives concurrent inserts and
deletes. The DDL is engine migrations 4, 9, 12 and 15 (engine/migrations.py); grants are
applied at start.
"""

from __future__ import annotations

from heliosdb.engine.roles import RO, RW

SCHEMA = "helios_kv"

GRANTS = [
    f"GRANT USAGE ON SCHEMA helios_kv TO {RW}, {RO}",
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA helios_kv TO {RW}",
    f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA helios_kv TO {RW}",
    f"GRANT SELECT ON ALL TABLES IN SCHEMA helios_kv TO {RO}",
]
