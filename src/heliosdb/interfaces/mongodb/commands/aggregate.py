"""aggregate: pipelines over a collection (or over nothing with ``aggregate: 1``)."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.mongodb.commands import _args
from heliosdb.interfaces.mongodb.commands.admin import collection_stats
from heliosdb.interfaces.mongodb.commands.crud import check_hint, lsid
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.cursors import DEFAULT_FIRST_BATCH
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import bsonform, variables
from heliosdb.services.documents.pipeline import stage_name

_DB_LEVEL_EMPTY = ("$currentOp", "$listLocalSessions", "$listSessions")


@command("aggregate")
async def aggregate(session: Session, request: Request) -> dict[str, Any]:
    """Run a pipeline; results come back as a cursor."""
    target = request.body.get("aggregate")
    stages = request.body.get("pipeline")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    cursor_spec = _args.document(request, "cursor")
    if cursor_spec is None and not request.body.get("explain"):
        raise CommandError(
            9, "The 'cursor' option is required, except for aggregate with the explain argument"
        )
    for stage in stages:
        if stage_name(stage) == "$changeStream":
            # what a standalone mongod answers: change streams need a replica set's oplog
            raise CommandError(40573, "The $changeStream stage is only supported on replica sets")
    _args.simple_collation(request.body.get("collation"), request.name)
    stages = variables.pipeline(stages, variables.values_of(request.body.get("let")))
    out_target = None
    if stages and stage_name(stages[-1]) in ("$out", "$merge"):
        if stage_name(stages[-1]) == "$merge":
            raise CommandError(238, "$merge is not supported")
        out_target = stages[-1]["$out"]
        stages = stages[:-1]
    assert session.principal is not None
    store = session.services.documents
    disk = request.body.get("allowDiskUse") is True
    batch_size = int((cursor_spec or {}).get("batchSize", DEFAULT_FIRST_BATCH))
    # the first batch and one more: a result that has more is streamed (cursors.py);
    # $out needs the whole result
    probe = max(batch_size, 0) + 1 if out_target is None else 0
    if target == 1 or target == 1.0:
        if stages and stage_name(stages[0]) in _DB_LEVEL_EMPTY:
            items: list[Any] = []
        else:
            items = await store.aggregate(
                session.principal, request.db, None, stages, allow_disk_use=disk
            )
        namespace = f"{request.db}.$cmd.aggregate"
    elif isinstance(target, str) and target:
        namespace = f"{request.db}.{target}"
        await check_hint(session, request.db, target, request.body.get("hint"))
        if stages and stage_name(stages[0]) == "$collStats":
            stats = await collection_stats(session, request.db, target)
            first = {"ns": namespace, "storageStats": stats, "count": stats["count"]}
            items = await store.aggregate(
                session.principal, request.db, None, stages[1:], [first], disk
            )
        else:
            items = await store.aggregate(
                session.principal, request.db, target, stages, allow_disk_use=disk, probe=probe
            )
    else:
        raise CommandError(73, "Invalid namespace specified")
    if out_target is not None:
        name = out_target if isinstance(out_target, str) else out_target.get("coll")
        db = request.db if isinstance(out_target, str) else out_target.get("db", request.db)
        if session.principal.read_only:
            raise CommandError(13, "not authorized to write with $out: the key is read-only")
        await store.drop_collection(session.principal, db, name)
        if items:
            await store.insert(session.principal, db, name, [bsonform.encode(d) for d in items])
        items = []
    batch, cursor_id = session.state.cursors.open(
        namespace,
        session.owner,
        items,
        batch_size,
        lsid=lsid(request),
        connection=session.connection_id,
    )
    return {"cursor": {"firstBatch": batch, "id": cursor_id, "ns": namespace}}
