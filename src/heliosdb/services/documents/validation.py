"""What MongoDB's ``validate`` reports about a collection, read from the engine.

The documents are counted; every engine index of the collection (each MongoDB index's
expression index and its array index, the primary key for ``_id_``, a unique index's
key table and its unique index) must be valid and ready in ``pg_index`` (an index build
that failed half way leaves one that is not, and the engine stops using it). Keys per
index: the documents an index holds (a sparse one: those with one of its fields), a
unique index the rows of its key table (each array element a key, as MongoDB counts).
Reads only: nothing is rewritten or locked beyond what a read takes.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# the catalog's key expressions; values are parameters.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from heliosdb.security.principals import Principal
from heliosdb.services.documents import catalog, keytables
from heliosdb.services.documents.catalog import IndexSpec, key_expression, table

if TYPE_CHECKING:
    from heliosdb.services.documents.store import DocumentStore

_INDEXES = """
SELECT c.relname AS name, i.indisvalid AND i.indisready AS valid
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = ANY($1::text[]::regclass[])
"""


@dataclass
class Validation:
    records: int
    keys: dict[str, int] = field(default_factory=dict)  # by MongoDB index name, _id_ first
    # engine indexes that are not valid, by the MongoDB index they serve (or their own name)
    invalid: dict[str, list[str]] = field(default_factory=dict)


async def validate(
    store: DocumentStore, principal: Principal, db: str, coll: str
) -> Validation | None:
    """The collection ``db.coll`` checked; None when it does not exist."""
    target = table(db, coll)
    async with store._conn(principal) as conn:
        specs = await store._missing_ok(catalog.indexes(conn, db, coll), [])
        sparse = [s for s in specs if s.options.get("sparse") and not s.unique]
        counts = ", ".join(
            ["count(*)"]
            + [
                "count(*) FILTER (WHERE "
                + " OR ".join(f"{key_expression(p)} IS NOT NULL" for p in s.key)
                + ")"
                for s in sparse
            ]
        )
        row = await store._missing_ok(conn.fetchrow(f"SELECT {counts} FROM {target}"), None)
        if row is None:
            return None
        found = Validation(row[0], {"_id_": row[0]})
        for spec in specs:
            found.keys[spec.name] = row[0]
        for spec, n in zip(sparse, list(row)[1:], strict=True):
            found.keys[spec.name] = n
        unique = [s for s in specs if s.unique]
        for spec in unique:
            found.keys[spec.name] = await store._run(
                conn.fetchval(f"SELECT count(*) FROM {keytables.key_table(spec)}")
            )
        tables = [target, *(keytables.key_table(s) for s in unique)]
        engine = await store._run(conn.fetch(_INDEXES, tables))
    owners = _owners(coll, specs)
    for name, valid in engine:
        if not valid:
            found.invalid.setdefault(owners.get(name, name), []).append(name)
    return found


def _owners(coll: str, specs: list[IndexSpec]) -> dict[str, str]:
    """The MongoDB index name of each engine index name of the collection."""
    owners = {f"{coll}_pkey": "_id_"}
    for spec in specs:
        for name in (
            spec.engine_name,
            catalog.multikey_index_name(spec.engine_name),
            keytables.unique_name(spec),
        ):
            owners[name] = spec.name
    return owners
