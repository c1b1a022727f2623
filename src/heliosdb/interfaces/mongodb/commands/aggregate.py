"""aggregate: pipelines over a collection (or over nothing with ``aggregate: 1``)."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.mongodb.commands import _args, operations
from heliosdb.interfaces.mongodb.commands.admin import collection_stats
from heliosdb.interfaces.mongodb.commands.crud import check_hint, lsid
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.cursors import DEFAULT_FIRST_BATCH
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import merges, stage_args, variables
from heliosdb.services.documents.pipeline import stage_name

_DB_LEVEL_EMPTY = ("$listLocalSessions", "$listSessions")


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
    writer: merges.MergeSpec | tuple[str, str] | None = None
    if stages and stage_name(stages[-1]) in ("$out", "$merge"):
        writer, stages = _writer(stages[-1], request.db), stages[:-1]
    for stage in stages:
        if stage_name(stage) in ("$out", "$merge"):
            name = stage_name(stage)
            raise CommandError(40601, f"{name} can only be the final stage in the pipeline")
    stage_args.check(stages)
    assert session.principal is not None
    store = session.services.documents
    disk = request.body.get("allowDiskUse") is True
    batch_size = int((cursor_spec or {}).get("batchSize", DEFAULT_FIRST_BATCH))
    # the first batch and one more: a result that has more is streamed (cursors.py);
    # $out and $merge need the whole result
    probe = max(batch_size, 0) + 1 if writer is None else 0
    if target == 1 or target == 1.0:
        leading = stage_name(stages[0]) if stages else None
        items: list[Any] = []
        if leading == "$currentOp":  # mongosh's db.currentOp()
            ops = operations.current_op_stage(session, request.db, stages[0]["$currentOp"])
            items = await store.aggregate(
                session.principal, request.db, None, stages[1:], ops, disk
            )
        elif leading == "$documents":  # literal input: db.aggregate([{$documents: [...]}])
            given = stage_args.documents(stages[0]["$documents"])
            items = await store.aggregate(
                session.principal, request.db, None, stages[1:], given, disk
            )
        elif leading not in _DB_LEVEL_EMPTY:
            items = await store.aggregate(
                session.principal, request.db, None, stages, allow_disk_use=disk
            )
        namespace = f"{request.db}.$cmd.aggregate"
    elif isinstance(target, str) and target:
        namespace = f"{request.db}.{target}"
        await check_hint(session, request.db, target, request.body.get("hint"))
        if stages and stage_name(stages[0]) == "$documents":
            raise CommandError(73, "'$documents' can only be run with {aggregate: 1}")
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
    if writer is not None:
        await _write(session, writer, items)
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


def _writer(stage: dict[str, Any], db: str) -> merges.MergeSpec | tuple[str, str]:
    """A final ``$merge`` stage parsed, or the (db, collection) of an ``$out``."""
    if stage_name(stage) == "$merge":
        return merges.parse(stage["$merge"], db)
    return merges.target_of(stage["$out"], db, "$out")


async def _write(
    session: Session, writer: merges.MergeSpec | tuple[str, str], items: list[Any]
) -> None:
    """The results written as the final ``$out`` or ``$merge`` says (merges.py)."""
    assert session.principal is not None
    store = session.services.documents
    if isinstance(writer, merges.MergeSpec):
        await merges.merge(store, session.principal, writer, items)
    else:
        await merges.replace(store, session.principal, *writer, items)
