"""Databases and collections: list, create, drop, rename, statistics."""

from __future__ import annotations

from typing import Any

from bson.binary import Binary, UuidRepresentation

from heliosdb.interfaces.mongodb.commands import _args
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import views
from heliosdb.services.documents.matcher import matches


def _principal(session: Session) -> Any:
    assert session.principal is not None
    return session.principal


@command("listDatabases")
async def list_databases(session: Session, request: Request) -> dict[str, Any]:
    """Every database that holds a collection."""
    found = await session.services.documents.list_databases(_principal(session))
    query = _args.document(request, "filter") or {}
    if query:
        found = [d for d in found if matches(d, query)]
    total = sum(d["sizeOnDisk"] for d in found)
    if request.body.get("nameOnly"):
        return {"databases": [{"name": d["name"]} for d in found]}
    return {"databases": found, "totalSize": total, "totalSizeMb": total // (1024 * 1024)}


@command("listCollections")
async def list_collections(session: Session, request: Request) -> dict[str, Any]:
    """The database's collections and views as a cursor."""
    store = session.services.documents
    found = await store.list_collections(_principal(session), request.db)
    items = []
    for info in found:
        if request.body.get("nameOnly"):
            items.append({"name": info["name"], "type": "collection"})
        else:
            items.append(
                {
                    "name": info["name"],
                    "type": "collection",
                    "options": info["options"],
                    "info": {
                        "readOnly": False,
                        "uuid": Binary.from_uuid(info["uuid"], UuidRepresentation.STANDARD),
                    },
                    "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                }
            )
    for view in await store.list_views(_principal(session), request.db):
        items.append(
            {"name": view.name, "type": "view"}
            if request.body.get("nameOnly")
            else {
                "name": view.name,
                "type": "view",
                "options": view.describe(),
                "info": {"readOnly": True},
            }
        )
    items.sort(key=lambda i: str(i["name"]))
    query = _args.document(request, "filter") or {}
    if query:
        items = [i for i in items if matches(i, query)]
    namespace = f"{request.db}.$cmd.listCollections"
    cursor_spec = _args.document(request, "cursor") or {}
    batch_size = int(cursor_spec.get("batchSize", 0) or 0) or len(items) + 1
    batch, cursor_id = session.state.cursors.open(namespace, session.owner, items, batch_size)
    return {"cursor": {"id": cursor_id, "ns": namespace, "firstBatch": batch}}


@command("create", writes=True)
async def create(session: Session, request: Request) -> dict[str, Any]:
    """Create a collection, or a view (``viewOn`` and ``pipeline``); capped, time-series
    and clustered collections are not supported."""
    name = _args.collection(request)
    _unsupported_options(request.body)
    if "viewOn" in request.body:
        await session.services.documents.create_view(
            _principal(session),
            request.db,
            name,
            request.body["viewOn"],
            request.body.get("pipeline"),
        )
        return {}
    if "pipeline" in request.body:
        raise CommandError(9, "'pipeline' requires 'viewOn' to also be specified")
    options = {k: v for k, v in request.body.items() if k not in (request.name, *_ENVELOPE)}
    await session.services.documents.create_collection(
        _principal(session), request.db, name, options
    )
    return {}


# fields of a command that are no option of it
_ENVELOPE = (
    "lsid",
    "$readPreference",
    "writeConcern",
    "$clusterTime",
    "txnNumber",
    "apiVersion",
    "$db",
)

# Options that change what a collection accepts or how it compares: refused, since
# keeping them in the catalog without acting on them would let writes through that the
# client believes checked, or match documents by other rules than it asked for.
_REFUSED_OPTIONS = {
    "capped": "capped collections are not supported",
    "timeseries": "time-series collections are not supported",
    "clusteredIndex": "clustered collections are not supported",
    "validator": "document validation is not supported",
    "changeStreamPreAndPostImages": "change streams are not supported",
}


def _unsupported_options(body: dict[str, Any]) -> None:
    for option, message in _REFUSED_OPTIONS.items():
        value = body.get(option)
        if value in (None, False, {}) or (
            option == "changeStreamPreAndPostImages" and value == {"enabled": False}
        ):
            continue
        raise CommandError(238, f"{message} (create option '{option}')")
    _args.simple_collation(body.get("collation"), "create")


@command("drop", writes=True)
async def drop(session: Session, request: Request) -> dict[str, Any]:
    """Drop a collection (a missing one is fine, as in MongoDB 7.0)."""
    name = _args.collection(request)
    was = await session.services.documents.drop_collection(_principal(session), request.db, name)
    if was is None:
        return {}
    return {"nIndexesWas": was, "ns": f"{request.db}.{name}"}


@command("collMod", writes=True)
async def coll_mod(session: Session, request: Request) -> dict[str, Any]:
    """Change a view's ``viewOn`` and ``pipeline`` (a collection's options: not supported)."""
    name = _args.collection(request)
    store = session.services.documents
    view = await store.view(_principal(session), request.db, name)
    changes = set(request.body) & {"viewOn", "pipeline"}
    if view is None or not changes:
        raise CommandError(238, "collMod is supported for a view's 'viewOn' and 'pipeline' only")
    others = [k for k in request.body if k not in (request.name, "viewOn", "pipeline", *_ENVELOPE)]
    if others:
        raise CommandError(238, f"collMod option '{others[0]}' is not supported")
    changed = await store.modify_view(
        _principal(session),
        request.db,
        name,
        request.body.get("viewOn"),
        request.body.get("pipeline"),
    )
    if not changed:
        raise CommandError(26, f"ns does not exist: {request.db}.{name}")
    return {}


@command("dropDatabase", writes=True)
async def drop_database(session: Session, request: Request) -> dict[str, Any]:
    """Drop every collection of the database."""
    await session.services.documents.drop_database(_principal(session), request.db)
    return {"dropped": request.db}


@command("renameCollection", writes=True)
async def rename_collection(session: Session, request: Request) -> dict[str, Any]:
    """Rename ``db.a`` to ``db2.b`` (run on admin)."""
    source, target = request.body.get("renameCollection"), request.body.get("to")
    if (
        not isinstance(source, str)
        or not isinstance(target, str)
        or "." not in source
        or "." not in target
    ):
        raise CommandError(73, "Invalid namespace specified")
    db, coll = source.split(".", 1)
    to_db, to_coll = target.split(".", 1)
    await session.services.documents.rename_collection(
        _principal(session), db, coll, to_db, to_coll, bool(request.body.get("dropTarget"))
    )
    return {}


@command("dbStats")
async def db_stats(session: Session, request: Request) -> dict[str, Any]:
    """Sizes and counts over the database's collections."""
    store = session.services.documents
    principal = _principal(session)
    scale = max(int(request.body.get("scale", 1) or 1), 1)
    collections = await store.list_collections(principal, request.db)
    objects = size = storage = indexes = index_size = 0
    for info in collections:
        stats = await store.collection_stats(principal, request.db, info["name"])
        objects += stats["count"]
        size += stats["size"]
        storage += stats["storageSize"]
        indexes += stats["nindexes"]
        index_size += stats["totalIndexSize"]
    import shutil

    usage = shutil.disk_usage("/")
    return {
        "db": request.db,
        "collections": len(collections),
        "views": len(await store.list_views(principal, request.db)),
        "objects": objects,
        "avgObjSize": (size / objects) if objects else 0,
        "dataSize": size / scale,
        "storageSize": storage / scale,
        "indexes": indexes,
        "indexSize": index_size / scale,
        "totalSize": (storage + index_size) / scale,
        "scaleFactor": scale,
        "fsUsedSize": usage.used,
        "fsTotalSize": usage.total,
    }


async def collection_stats(session: Session, db: str, name: str) -> dict[str, Any]:
    stats = await session.services.documents.collection_stats(_principal(session), db, name)
    count = stats["count"]
    return {
        "ns": f"{db}.{name}",
        "count": count,
        "size": stats["size"],
        "avgObjSize": (stats["size"] // count) if count else 0,
        "storageSize": stats["storageSize"],
        "nindexes": stats["nindexes"],
        "totalIndexSize": stats["totalIndexSize"],
        "totalSize": stats["storageSize"] + stats["totalIndexSize"],
        "indexSizes": {n: 0 for n in stats.get("indexes", [])},
        "scaleFactor": 1,
    }


@command("collStats")
async def coll_stats(session: Session, request: Request) -> dict[str, Any]:
    """Size, count and indexes of one collection; a view answers 166, as on a mongod."""
    coll = _args.collection(request)
    if await session.services.documents.view(_principal(session), request.db, coll) is not None:
        raise views.not_on_view(request.db, coll)
    return await collection_stats(session, request.db, coll)
