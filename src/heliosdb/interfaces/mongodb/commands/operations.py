"""Operations and diagnostics: currentOp, killOp, validate, profile, top, dataSize,
getDefaultRWConcern.

``currentOp`` lists the messages this node's MongoDB connections are running (each
connection records the message it runs and since when: connection.Session.op_data,
``op_since``), one op document each in MongoDB's shape, and with ``$all`` the idle
connections too. The opid of an op is handed out when a currentOp first sees it. A
principal sees only its own connections' operations unless it is an admin key (then
``$ownOps: true`` narrows it to its own); the other fields of the command are a query
on the op documents. A command's credentials (SCRAM payloads, passwords) are redacted.

``killOp`` cancels the connection's task running that op: whatever engine statement it
waits for is cancelled with it (asyncpg sends the engine a CancelRequest), and the
client gets 11601 Interrupted. A find answered from the socket's read callback
(hotpath.take_lone, loneupdate.py: a plain find that fits one batch, a plain
update_one) has no task and runs to its end. An unknown opid, or another principal's
op for a key that is not an admin key, answers ok, as MongoDB does.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any

from bson.int64 import Int64

from heliosdb.interfaces.mongodb import codec
from heliosdb.interfaces.mongodb.commands import _args
from heliosdb.interfaces.mongodb.connection import Request, ServerState, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command
from heliosdb.services.documents import validation
from heliosdb.services.documents.matcher import matches

# currentOp's own fields and the envelope: the rest of its body is the query on ops
_CURRENT_OP_FIELDS = frozenset(
    {
        "currentOp",
        "$all",
        "$ownOps",
        "$truncateOps",
        "lsid",
        "$db",
        "$readPreference",
        "$clusterTime",
        "comment",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    }
)
# MongoDB's ``op`` of a command; the rest are "command"
_OP_KINDS = {
    "find": "query",
    "getMore": "getmore",
    "insert": "insert",
    "update": "update",
    "delete": "remove",
    "killCursors": "killcursors",
}
# commands whose whole text is credentials, and fields that hold them in others
_SECRET_COMMANDS = frozenset(
    {"saslStart", "saslContinue", "authenticate", "createUser", "updateUser", "copydbsaslstart"}
)
_SECRET_FIELDS = frozenset({"payload", "pwd", "password", "speculativeAuthenticate"})
_REDACTED = "###"


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opid(state: ServerState, other: Session) -> int:
    """The opid of ``other``'s message in progress (handed out once per message)."""
    if other.op_id_since != other.op_since:
        other.op_id = next(state.op_ids)
        other.op_id_since = other.op_since
    return other.op_id


def _redacted(name: str, body: dict[str, Any]) -> dict[str, Any]:
    if name in _SECRET_COMMANDS:
        return {name: _REDACTED}
    return {k: (_REDACTED if k in _SECRET_FIELDS else v) for k, v in body.items()}


def _namespace(name: str, db: str, body: dict[str, Any]) -> str:
    target = body.get("collection") if name == "getMore" else body.get(name)
    if isinstance(target, str) and target:
        return f"{db}.{target}"
    return f"{db}.$cmd"


def _connection_fields(other: Session, now: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "op",
        "host": socket.gethostname(),
        "desc": f"conn{other.connection_id}",
        "connectionId": other.connection_id,
        "client": other.peer,
    }
    metadata = other.client_metadata
    if metadata is not None:
        application = metadata.get("application")
        if isinstance(application, dict) and isinstance(application.get("name"), str):
            doc["appName"] = application["name"]
        doc["clientMetadata"] = metadata
    doc["active"] = False
    doc["currentOpTime"] = now
    if other.principal is not None:
        doc["effectiveUsers"] = [{"user": other.user, "db": other.auth_db}]
    return doc


def _op_document(state: ServerState, other: Session, data: bytes, now: str) -> dict[str, Any]:
    """``other``'s connection running the message ``data``, as currentOp shows it."""
    doc = _connection_fields(other, now)
    running = max(time.monotonic() - other.op_since, 0.0)
    doc.update(
        {
            "active": True,
            "threaded": True,
            "opid": _opid(state, other),
            "secs_running": Int64(int(running)),
            "microsecs_running": Int64(int(running * 1_000_000)),
        }
    )
    try:
        message = codec.parse_frame(data)
    except codec.ProtocolError:
        return doc  # it was refused: the connection is closing
    body = dict(message.body)
    if message.op_code == codec.OP_QUERY:
        db = message.namespace.partition(".")[0]
    else:
        db = str(body.get("$db", ""))
    name = next(iter(body), "")
    if isinstance(body.get("lsid"), dict):
        doc["lsid"] = body["lsid"]
    doc.update(
        {
            "op": _OP_KINDS.get(name, "command"),
            "ns": _namespace(name, db, body),
            "command": _redacted(name, body),
            "numYields": 0,
            "locks": {},
            "waitingForLock": False,
            "lockStats": {},
        }
    )
    return doc


def current_ops(
    session: Session, *, idle: bool, own: bool, query: dict[str, Any]
) -> list[dict[str, Any]]:
    """The op documents of this node's MongoDB connections that ``session`` may see:
    its own principal's only unless it is an admin key and ``own`` is false; idle
    connections too with ``idle``; those that match ``query``. (The ``$currentOp``
    aggregation stage's documents are these.)"""
    viewer = session.principal
    assert viewer is not None
    own = own or not viewer.is_admin
    state = session.state
    now = _now_text()
    found = []
    for other in list(state.connections.values()):
        if own and (other.principal is None or other.principal.id != viewer.id):
            continue
        data = other.op_data
        if data is not None:
            doc = _op_document(state, other, data, now)
        elif idle:
            doc = _connection_fields(other, now)
        else:
            continue
        if not query or matches(doc, query):
            found.append(doc)
    return found


def current_op_stage(session: Session, db: str, spec: Any) -> list[dict[str, Any]]:
    """The documents a leading ``$currentOp`` stage starts an ``aggregate: 1`` on
    ``admin`` with (mongosh's ``db.currentOp()``): ``allUsers`` (default false: the
    key's own operations), ``idleConnections`` (default false); ``truncateOps``,
    ``localOps`` and ``backtrace`` change nothing here."""
    if db != "admin":
        raise CommandError(73, "$currentOp must be run against the 'admin' database")
    if not isinstance(spec, dict):
        raise CommandError(9, "$currentOp options must be an object")
    known = {
        "allUsers",
        "idleConnections",
        "truncateOps",
        "localOps",
        "backtrace",
        "idleSessions",
        "idleCursors",
    }
    for key, value in spec.items():
        if key not in known:
            raise CommandError(40415, f"BSON field '$currentOp.{key}' is an unknown field.")
        if not isinstance(value, bool):
            raise CommandError(
                14, f"BSON field '$currentOp.{key}' is the wrong type, expected 'bool'"
            )
    return current_ops(
        session,
        idle=spec.get("idleConnections") is True,
        own=spec.get("allUsers") is not True,
        query={},
    )


@command("currentOp")
async def current_op(session: Session, request: Request) -> dict[str, Any]:
    """The operations in progress on this node's MongoDB connections (``$all``: and the
    idle connections); a key sees its own unless it is an admin key."""
    body = request.body
    if request.db != "admin":
        raise CommandError(13, "currentOp may only be run against the admin database.")
    query = {k: v for k, v in body.items() if k not in _CURRENT_OP_FIELDS}
    ops = current_ops(
        session, idle=body.get("$all") is True, own=body.get("$ownOps") is True, query=query
    )
    return {"inprog": ops}


@command("killOp")
async def kill_op(session: Session, request: Request) -> dict[str, Any]:
    """Interrupt an operation currentOp listed (its client gets 11601 Interrupted); the
    key's own operations, any with an admin key."""
    if request.db != "admin":
        raise CommandError(13, "killOp may only be run against the admin database.")
    opid = request.body.get("op")
    if opid is None:
        raise CommandError(4, 'Did not provide "op" field')
    if isinstance(opid, bool) or not isinstance(opid, (int, float)) or opid != int(opid):
        raise CommandError(14, "Expected op to be an integral number")
    viewer = session.principal
    assert viewer is not None
    for other in list(session.state.connections.values()):
        data = other.op_data
        if (
            data is None
            or other.op_id != opid
            or other.op_id_since != other.op_since
            or other is session
        ):
            continue
        if not viewer.is_admin and (other.principal is None or other.principal.id != viewer.id):
            break  # as if unknown: another key's operation
        task = other.op_task
        if task is not None and other.op_killed is not data:
            other.op_killed = data
            task.cancel()
        break
    return {"info": "attempting to kill op"}


@command("validate")
async def validate(session: Session, request: Request) -> dict[str, Any]:
    """Count a collection's documents and check each of its indexes is valid in the
    engine (``full``: the same checks); nothing is rewritten."""
    name = _args.collection(request)
    for option in ("repair", "fixMultikey"):
        if request.body.get(option):
            raise CommandError(238, f"validate's '{option}' is not supported")
    assert session.principal is not None
    store = session.services.documents
    ns = f"{request.db}.{name}"
    if await store.view(session.principal, request.db, name) is not None:
        raise CommandError(166, f"Namespace {ns} is a view, not a collection")
    found = await validation.validate(store, session.principal, request.db, name)
    if found is None:
        raise CommandError(26, f"Collection '{ns}' does not exist to validate.")
    errors = [
        f"index '{index}' is not valid in the engine ({', '.join(engine)})"
        for index, engine in found.invalid.items()
    ]
    return {
        "ns": ns,
        "nInvalidDocuments": 0,
        "nNonCompliantDocuments": 0,
        "nrecords": found.records,
        "nIndexes": len(found.keys),
        "keysPerIndex": found.keys,
        "indexDetails": {index: {"valid": index not in found.invalid} for index in found.keys},
        "valid": not errors,
        "repaired": False,
        "warnings": [],
        "errors": errors,
        "extraIndexEntries": [],
        "missingIndexEntries": [],
        "corruptRecords": [],
    }


# What a mongod answers for profiling off: level 0 and its default thresholds.
_PROFILE_OFF = {"was": 0, "slowms": 100, "sampleRate": 1.0}


@command("profile")
async def profile(session: Session, request: Request) -> dict[str, Any]:
    """Profiling is off (level 0): ``-1`` reads that, ``0`` sets it; levels 1 and 2
    answer 238 (the node has no profiler)."""
    level = request.body.get("profile")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or level not in (-1, 0, 1, 2):
        raise CommandError(2, "profile level must be -1, 0, 1 or 2")
    if level in (1, 2):
        raise CommandError(238, "the database profiler is not supported: profiling stays off")
    for option in ("slowms", "sampleRate", "filter"):
        if option in request.body and level == 0:
            raise CommandError(
                238, f"profile's '{option}' is not supported: the node logs no slow operations"
            )
    return dict(_PROFILE_OFF)


@command("top")
async def top(session: Session, request: Request) -> dict[str, Any]:
    """Per-collection time and counts: not kept by this node (238)."""
    raise CommandError(
        238, "top is not supported: the node keeps operation counts per node (serverStatus)"
    )


@command("dataSize")
async def data_size(session: Session, request: Request) -> dict[str, Any]:
    """The BSON bytes and documents of a collection (``dataSize: "db.coll"``)."""
    ns = request.body.get("dataSize")
    if not isinstance(ns, str) or "." not in ns:
        raise CommandError(73, "Invalid namespace specified")
    for option in ("keyPattern", "min", "max"):
        if option in request.body:
            raise CommandError(238, f"dataSize's '{option}' is not supported")
    db, coll = ns.split(".", 1)
    assert session.principal is not None
    started = time.monotonic()
    stats = await session.services.documents.collection_stats(session.principal, db, coll)
    return {
        "estimate": False,
        "size": Int64(stats["size"]),
        "numObjects": Int64(stats["count"]),
        "millis": Int64(int((time.monotonic() - started) * 1000)),
    }


@command("getDefaultRWConcern")
async def get_default_rw_concern(session: Session, request: Request) -> dict[str, Any]:
    """The implicit defaults of a standalone: read concern local, write concern w: 1."""
    return {
        "defaultReadConcern": {"level": "local"},
        "defaultWriteConcern": {"w": 1, "wtimeout": 0},
        "defaultReadConcernSource": "implicit",
        "defaultWriteConcernSource": "implicit",
    }
