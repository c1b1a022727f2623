"""createIndexes, listIndexes, dropIndexes: real engine expression indexes."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.mongodb.commands import _args
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import IndexSpec
from heliosdb.services.documents.catalog import default_index_name

_OPTIONS = (
    "unique",
    "sparse",
    "expireAfterSeconds",
    "partialFilterExpression",
    "collation",
    "hidden",
    "background",
    "weights",
    "default_language",
)


def _spec(raw: Any) -> IndexSpec:
    if not isinstance(raw, dict):
        raise CommandError(14, "an index specification must be an object")
    key = raw.get("key")
    if not isinstance(key, dict) or not key:
        raise CommandError(67, "Index keys cannot be empty.", codeName="CannotCreateIndex")
    for field, direction in key.items():
        if field == "$**" or field.endswith(".$**"):
            # a wildcard index would need every path indexed (not built): refused, never
            # an index of a field literally named "$**"
            raise CommandError(238, "wildcard indexes are not supported")
        if field.startswith("$") or not field or ".." in field or field.endswith("."):
            raise CommandError(
                67,
                f"Index key contains an illegal field name: {field!r}",
                codeName="CannotCreateIndex",
            )
        if isinstance(direction, str):
            raise CommandError(
                67, f"Index type '{direction}' is not supported", codeName="CannotCreateIndex"
            )
        if isinstance(direction, bool) or not isinstance(direction, (int, float)) or direction == 0:
            raise CommandError(
                67,
                f"Values in the index key pattern can't be 0: {field}",
                codeName="CannotCreateIndex",
            )
    if "partialFilterExpression" in raw:
        raise CommandError(238, "partialFilterExpression is not supported")
    # an index of a locale's order would be silently the simple one
    _args.simple_collation(raw.get("collation"), "createIndexes.indexes")
    name = raw.get("name") or default_index_name(key)
    if not isinstance(name, str):
        raise CommandError(14, "index name must be a string")
    if name == "_id_" or list(key) == ["_id"]:
        return IndexSpec("_id_", {"_id": 1})
    options = {k: raw[k] for k in _OPTIONS if k in raw and k not in ("background",)}
    if options.get("unique") is False:
        options.pop("unique")
    return IndexSpec(name, dict(key), options)


@command("createIndexes", writes=True)
async def create_indexes(session: Session, request: Request) -> dict[str, Any]:
    """Create indexes (single, compound, unique, sparse, TTL) as engine indexes."""
    coll = _args.collection(request)
    raw = request.body.get("indexes")
    if not isinstance(raw, list) or not raw:
        raise CommandError(2, "Must specify at least one index to create")
    specs = [s for s in (_spec(r) for r in raw) if s.name != "_id_"]
    assert session.principal is not None
    before, after, created = await session.services.documents.create_indexes(
        session.principal, request.db, coll, specs
    )
    reply: dict[str, Any] = {
        "numIndexesBefore": before,
        "numIndexesAfter": after,
        "createdCollectionAutomatically": created,
    }
    if before == after:
        reply["note"] = "all indexes already exist"
    return reply


@command("listIndexes")
async def list_indexes(session: Session, request: Request) -> dict[str, Any]:
    """The collection's indexes as a cursor."""
    coll = _args.collection(request)
    assert session.principal is not None
    items = await session.services.documents.list_indexes(session.principal, request.db, coll)
    namespace = f"{request.db}.{coll}"
    batch, cursor_id = session.state.cursors.open(namespace, session.owner, items, len(items) + 1)
    return {"cursor": {"firstBatch": batch, "id": cursor_id, "ns": namespace}}


@command("dropIndexes", "deleteIndexes", writes=True)
async def drop_indexes(session: Session, request: Request) -> dict[str, Any]:
    """Drop indexes by name, key pattern, list of names, or "*"."""
    coll = _args.collection(request)
    which = request.body.get("index")
    if which is None:
        raise CommandError(40414, "BSON field 'dropIndexes.index' is missing but a required field")
    assert session.principal is not None
    was = await session.services.documents.drop_indexes(session.principal, request.db, coll, which)
    return {"nIndexesWas": was}
