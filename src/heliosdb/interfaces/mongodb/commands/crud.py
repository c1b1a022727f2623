"""Documents: insert, find/getMore/killCursors, update, delete, findAndModify, count,
distinct, explain. Each handler parses its arguments, calls the documents service
once per statement, and renders MongoDB's reply shape."""

from __future__ import annotations

from typing import Any

from bson.int64 import Int64

from heliosdb.errors import HeliosError
from heliosdb.interfaces.mongodb import errors
from heliosdb.interfaces.mongodb.commands import _args
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.cursors import DEFAULT_FIRST_BATCH
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import (
    FindQuery,
    bsonform,
    explained,
    values,
    variables,
    views,
)
from heliosdb.services.documents.projection import project
from heliosdb.services.documents.streaming import PROBE_ROWS
from heliosdb.services.documents.values import MISSING


def _principal(session: Session) -> Any:
    assert session.principal is not None
    return session.principal


@command("insert", writes=True)
async def insert(session: Session, request: Request) -> dict[str, Any]:
    """Insert documents, stored byte for byte as the client sent them."""
    coll = _args.collection(request)
    if "documents" in request.sequences:
        raw = request.sequences["documents"]
    else:
        docs = request.body.get("documents")
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            raise CommandError(14, "BSON field 'insert.documents' is the wrong type")
        raw = [bsonform.encode(d) for d in docs]
    session.state.opcounters["insert"] += len(raw)
    result = await session.services.documents.insert(
        _principal(session), request.db, coll, raw, ordered=request.body.get("ordered", True)
    )
    reply: dict[str, Any] = {"n": result.inserted}
    if result.errors:
        reply["writeErrors"] = [errors.write_error(e.index, e.error) for e in result.errors]
    return reply


def _find_query(request: Request) -> tuple[FindQuery, int, bool]:
    _args.simple_collation(request.body.get("collation"), request.name)
    if request.body.get("tailable"):
        # every collection here is uncapped (create refuses capped ones), as MongoDB says
        raise CommandError(
            2, "error processing query: tailable cursor requested on non capped collection"
        )
    if request.body.get("awaitData"):
        raise CommandError(2, "Cannot set 'awaitData' without also setting 'tailable'")
    limit = _args.integer(request, "limit")
    single = bool(request.body.get("singleBatch")) or limit < 0
    names = variables.values_of(request.body.get("let"))
    query = FindQuery(
        filter=variables.filter_(_args.document(request, "filter"), names),
        sort=_args.document(request, "sort"),
        skip=_args.integer(request, "skip"),
        limit=abs(limit),
        projection=_args.document(request, "projection"),
    )
    if query.skip < 0:
        raise CommandError(51024, "BSON field 'skip' value must be >= 0")
    batch = _args.integer(request, "batchSize", DEFAULT_FIRST_BATCH)
    if batch < 0:
        raise CommandError(51024, "BSON field 'batchSize' value must be >= 0")
    return query, batch, single


@command("find")
async def find(session: Session, request: Request) -> dict[str, Any]:
    """Run a query; the first batch now, the rest through getMore."""
    coll = _args.collection(request)
    query, batch_size, single = _find_query(request)
    await check_hint(session, request.db, coll, request.body.get("hint"))
    session.state.opcounters["query"] += 1
    # the first batch and one more: a result that has more is streamed (cursors.py)
    probe = batch_size + 1 if batch_size or not single else PROBE_ROWS
    items = await session.services.documents.find(
        _principal(session), request.db, coll, query, probe
    )
    namespace = f"{request.db}.{coll}"
    batch, cursor_id = session.state.cursors.open(
        namespace,
        session.owner,
        items,
        batch_size,
        single,
        lsid=lsid(request),
        connection=session.connection_id,
    )
    return {"cursor": {"firstBatch": batch, "id": cursor_id, "ns": namespace}}


async def check_hint(session: Session, db: str, coll: str, hint: Any) -> None:
    """A ``hint`` names an index (by name or key pattern) or is ``{$natural: 1|-1}``:
    the engine plans for itself, so the hint only has to exist, as MongoDB requires."""
    if hint is None or hint == "" or hint == {}:
        return
    if isinstance(hint, dict) and list(hint) == ["$natural"]:
        return
    try:
        indexes = await session.services.documents.list_indexes(_principal(session), db, coll)
    except HeliosError:
        return  # no such collection: nothing to read, nothing to plan
    for index in indexes:
        key = index["key"]
        if hint == index["name"] or (
            isinstance(hint, dict)
            and list(hint) == list(key)
            and all(values.equal(hint[k], key[k]) for k in key)
        ):
            return
    raise CommandError(2, "hint provided does not correspond to an existing index")


def lsid(request: Request) -> bytes | None:
    """The logical session id of a command, if it has a well-formed one."""
    value = request.body.get("lsid")
    if isinstance(value, dict) and isinstance(value.get("id"), bytes):
        return bytes(value["id"])
    return None


@command("getMore")
async def get_more(session: Session, request: Request) -> dict[str, Any]:
    """The next batch of an open cursor."""
    cursor_id = request.body.get("getMore")
    if isinstance(cursor_id, bool) or not isinstance(cursor_id, int):
        raise CommandError(14, "BSON field 'getMore.getMore' is the wrong type, expected 'long'")
    coll = request.body.get("collection")
    if not isinstance(coll, str):
        raise CommandError(14, "BSON field 'getMore.collection' is the wrong type")
    count = _args.integer(request, "batchSize", 0)
    namespace = session.state.cursors.namespace_of(int(cursor_id), session.owner)
    if namespace is not None and namespace != f"{request.db}.{coll}":
        raise CommandError(
            13,
            f"Requested getMore on namespace '{request.db}.{coll}', but cursor belongs to a "
            f"different namespace {namespace}",
        )
    session.state.opcounters["getmore"] += 1
    found = await session.state.cursors.more(
        int(cursor_id),
        session.owner,
        count,
        lsid=lsid(request),
        connection=session.connection_id,
    )
    if found is None:
        raise CommandError(43, f"cursor id {cursor_id} not found")
    cursor, batch = found
    return {"cursor": {"nextBatch": batch, "id": Int64(cursor.id), "ns": cursor.namespace}}


@command("killCursors")
async def kill_cursors(session: Session, request: Request) -> dict[str, Any]:
    """Close cursors early."""
    ids = request.body.get("cursors")
    if not isinstance(ids, list):
        raise CommandError(14, "BSON field 'killCursors.cursors' is the wrong type")
    killed, missing = [], []
    for cursor_id in ids:
        if await session.state.cursors.kill(int(cursor_id), session.owner):
            killed.append(Int64(cursor_id))
        else:
            missing.append(Int64(cursor_id))
    return {
        "cursorsKilled": killed,
        "cursorsNotFound": missing,
        "cursorsAlive": [],
        "cursorsUnknown": [],
    }


@command("update", writes=True)
async def update(session: Session, request: Request) -> dict[str, Any]:
    """Apply update statements: operators, replacements, upserts, multi."""
    coll = _args.collection(request)
    statements = _args.array(request, "updates")
    ordered = request.body.get("ordered", True)
    names = variables.values_of(request.body.get("let"))
    matched = modified = 0
    upserted: list[dict[str, Any]] = []
    write_errors: list[dict[str, Any]] = []
    for index, statement in enumerate(statements):
        session.state.opcounters["update"] += 1
        if not isinstance(statement, dict) or "u" not in statement:
            write_errors.append({"index": index, "code": 9, "errmsg": "update needs 'u'"})
            if ordered:
                break
            continue
        try:
            _args.simple_collation(statement.get("collation"), "update.updates")
            await check_hint(session, request.db, coll, statement.get("hint"))
            result = await session.services.documents.update(
                _principal(session),
                request.db,
                coll,
                variables.filter_(statement.get("q") or {}, names),
                variables.pipeline(statement["u"], names),
                upsert=bool(statement.get("upsert")),
                multi=bool(statement.get("multi")),
                array_filters=statement.get("arrayFilters"),
            )
        except HeliosError as exc:
            write_errors.append(errors.write_error(index, exc))
            if ordered:
                break
            continue
        except CommandError as exc:
            write_errors.append({"index": index, "code": exc.code, "errmsg": exc.message})
            if ordered:
                break
            continue
        matched += result.matched
        modified += result.modified
        if result.upserted_id is not MISSING:
            upserted.append({"index": index, "_id": result.upserted_id})
    reply: dict[str, Any] = {"n": matched + len(upserted), "nModified": modified}
    if upserted:
        reply["upserted"] = upserted
    if write_errors:
        reply["writeErrors"] = write_errors
    return reply


@command("delete", writes=True)
async def delete(session: Session, request: Request) -> dict[str, Any]:
    """Delete what each statement's filter selects (limit 1 or all)."""
    coll = _args.collection(request)
    statements = _args.array(request, "deletes")
    ordered = request.body.get("ordered", True)
    names = variables.values_of(request.body.get("let"))
    removed = 0
    write_errors: list[dict[str, Any]] = []
    for index, statement in enumerate(statements):
        session.state.opcounters["delete"] += 1
        try:
            if not isinstance(statement, dict) or "q" not in statement:
                raise CommandError(9, "delete needs 'q'")
            _args.simple_collation(statement.get("collation"), "delete.deletes")
            await check_hint(session, request.db, coll, statement.get("hint"))
            n, _ = await session.services.documents.delete(
                _principal(session),
                request.db,
                coll,
                variables.filter_(statement["q"], names),
                limit_one=statement.get("limit", 0) == 1,
            )
            removed += n
        except HeliosError as exc:
            write_errors.append(errors.write_error(index, exc))
            if ordered:
                break
        except CommandError as exc:
            write_errors.append({"index": index, "code": exc.code, "errmsg": exc.message})
            if ordered:
                break
    reply: dict[str, Any] = {"n": removed}
    if write_errors:
        reply["writeErrors"] = write_errors
    return reply


@command("findAndModify", "findandmodify", writes=True)
async def find_and_modify(session: Session, request: Request) -> dict[str, Any]:
    """Update or remove one document and return it (before or after)."""
    coll = _args.collection(request)
    _args.simple_collation(request.body.get("collation"), request.name)
    names = variables.values_of(request.body.get("let"))
    query = variables.filter_(_args.document(request, "query") or {}, names)
    await check_hint(session, request.db, coll, request.body.get("hint"))
    sort = _args.document(request, "sort")
    fields = _args.document(request, "fields")
    store = session.services.documents
    if request.body.get("remove"):
        if "update" in request.body:
            raise CommandError(9, "Cannot specify both an update and remove=true")
        n, removed = await store.delete(
            _principal(session), request.db, coll, query, limit_one=True, sort=sort
        )
        value = project(removed, fields) if removed is not None and fields else removed
        return {"lastErrorObject": {"n": n}, "value": value}
    if "update" not in request.body:
        raise CommandError(9, "Either an update or remove=true must be specified")
    result = await store.update(
        _principal(session),
        request.db,
        coll,
        query,
        variables.pipeline(request.body["update"], names),
        upsert=bool(request.body.get("upsert")),
        multi=False,
        array_filters=request.body.get("arrayFilters"),
        sort=sort,
        want_documents=True,
    )
    value = result.after if request.body.get("new") else result.before
    if value is not None and fields:
        value = project(value, fields)
    last: dict[str, Any] = {
        "n": result.matched or (1 if result.upserted_id is not MISSING else 0),
        "updatedExisting": result.matched > 0,
    }
    if result.upserted_id is not MISSING:
        last["upserted"] = result.upserted_id
    return {"lastErrorObject": last, "value": value}


@command("count")
async def count(session: Session, request: Request) -> dict[str, Any]:
    """How many documents match."""
    coll = _args.collection(request)
    _args.simple_collation(request.body.get("collation"), request.name)
    await check_hint(session, request.db, coll, request.body.get("hint"))
    n = await session.services.documents.count(
        _principal(session),
        request.db,
        coll,
        _args.document(request, "query"),
        _args.integer(request, "skip"),
        _args.integer(request, "limit"),
    )
    return {"n": n}


@command("distinct")
async def distinct(session: Session, request: Request) -> dict[str, Any]:
    """The distinct values of a field (array items count one by one)."""
    coll = _args.collection(request)
    _args.simple_collation(request.body.get("collation"), request.name)
    values = await session.services.documents.distinct(
        _principal(session),
        request.db,
        coll,
        request.body.get("key"),  # type: ignore[arg-type]
        _args.document(request, "query"),
    )
    return {"values": values}


@command("explain")
async def explain(session: Session, request: Request) -> dict[str, Any]:
    """The engine's plan for a find, count, distinct or aggregate (its leading $match),
    and for an update, delete or findAndModify, which writes nothing."""
    inner = request.body.get("explain")
    if not isinstance(inner, dict) or not inner:
        raise CommandError(9, "explain needs a command document")
    name = next(iter(inner))
    coll = inner.get(name)
    if not isinstance(coll, str):
        raise CommandError(73, "Invalid namespace specified")
    write = _explained_write(name, inner)
    if write is not None:
        plan = await session.services.documents.explain_write(
            _principal(session), request.db, coll, write, analyzed=_analyzed(request)
        )
        return _explain_reply(request, coll, write.query, plan, inner)
    if name not in ("find", "count", "distinct", "aggregate"):
        raise CommandError(59, f"Explain for {name} is not supported")
    analyzed = _analyzed(request)
    view = await session.services.documents.view(_principal(session), request.db, coll)
    if view is not None:  # the aggregate it runs, over the collection under the view
        query, sort = _leading(_view_stages(name, inner, view))
        coll = view.source
    elif name == "find":
        query, sort = inner.get("filter"), inner.get("sort")
    elif name in ("count", "distinct"):
        query, sort = inner.get("query"), None
    else:
        query, sort = _leading(inner.get("pipeline") or [])
    plan = await session.services.documents.explain(
        _principal(session), request.db, coll, query, sort, analyzed=analyzed
    )
    return _explain_reply(request, coll, query, plan, inner)


def _view_stages(name: str, inner: dict[str, Any], view: views.Resolved) -> list[Any]:
    """The stages a find, count, distinct or aggregate on ``view`` runs (views.py)."""
    if name == "find":
        return views.find_stages(view, inner.get("filter"), inner.get("sort"), 0, 0, None)
    if name == "count":
        return views.count_stages(view, inner.get("query"), 0, 0)
    if name == "distinct":
        return [*view.pipeline, {"$match": inner.get("query") or {}}]
    return [*view.pipeline, *(inner.get("pipeline") or [])]


def _leading(stages: list[Any]) -> tuple[Any, Any]:
    """The filter and sort of a pipeline's leading ``$match`` stages (one filter) and
    ``$sort`` after them: what the engine's statement starts with."""
    matches: list[Any] = []
    sort = None
    for stage in stages:
        if not isinstance(stage, dict) or len(stage) != 1 or sort is not None:
            break
        if "$match" in stage:
            if stage["$match"]:
                matches.append(stage["$match"])
        elif "$sort" in stage:
            sort = stage["$sort"]
        else:
            break
    query = matches[0] if len(matches) == 1 else {"$and": matches} if matches else None
    return query, sort


def _analyzed(request: Request) -> bool:
    """The explain's verbosity asks for executionStats (the plan runs)."""
    verbosity = request.body.get("verbosity", "allPlansExecution")
    if verbosity not in ("queryPlanner", "executionStats", "allPlansExecution"):
        raise CommandError(
            2,
            "verbosity string must be one of queryPlanner, executionStats, "
            f"allPlansExecution, not {verbosity!r}",
        )
    return str(verbosity) != "queryPlanner"


def _explain_reply(
    request: Request, coll: str, query: Any, plan: dict[str, Any], inner: dict[str, Any]
) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "queryPlanner": {
            "namespace": f"{request.db}.{coll}",
            "parsedQuery": query or {},
            "winningPlan": plan["winningPlan"],
            "rejectedPlans": [],
        },
    }
    if "executionStats" in plan:
        reply["executionStats"] = plan["executionStats"]
    reply["command"] = inner
    reply["serverInfo"] = {"host": "heliosdb", "version": "7.0.12"}
    return reply


def _explained_write(name: str, inner: dict[str, Any]) -> explained.Write | None:
    """The update or delete an explained ``update``, ``delete`` or ``findAndModify``
    would run (MongoDB explains one statement of an update or delete); None for others."""
    if name in ("update", "delete"):
        many = inner.get(name + "s")
        if not isinstance(many, list) or len(many) != 1 or not isinstance(many[0], dict):
            raise CommandError(9, f"explained {name} must have exactly one {name} statement")
        spec, query_key = many[0], "q"
        update_key = "u" if name == "update" else None
        multi = bool(spec.get("multi")) if update_key else spec.get("limit", 0) in (0, False)
    elif name.lower() == "findandmodify":
        spec, query_key, multi = inner, "query", False
        update_key = None if inner.get("remove") else "update"
    else:
        return None
    if update_key is not None and update_key not in spec:
        raise CommandError(9, f"an explained {name} needs '{update_key}' (or remove=true)")
    names = variables.values_of(inner.get("let"))
    return explained.Write(
        variables.filter_(spec.get(query_key) or {}, names),
        None if update_key is None else variables.pipeline(spec[update_key], names),
        sort=spec.get("sort"),
        multi=multi,
        upsert=bool(spec.get("upsert")),
        array_filters=spec.get("arrayFilters"),
    )
