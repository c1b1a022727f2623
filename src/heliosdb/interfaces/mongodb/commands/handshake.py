"""hello/isMaster and the server-information commands drivers and mongosh send.

``hello`` answers with a standalone mongod 7.0's fields and BSON types (tests:
test_handshake_fields.py), less ``topologyVersion``: with it, pymongo and the Node driver
switch their monitors to awaitable hello (a request held for ``maxAwaitTimeMS``, plus a
second monitor connection and thread measuring round trips), which a standalone that
never changes state gains nothing from; without it they poll every
``heartbeatFrequencyMS`` (10 s). Either way a driver's operations cost it the same: the
monitors are off their path (docs/benchmarks.md, MongoDB, "Eighth session: pymongo").
``logicalSessionTimeoutMinutes`` is what turns on the drivers' sessions (implicit ones
on every command, explicit ones and transactions), as on a mongod.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import time
from typing import Any

from bson.int64 import Int64

from heliosdb.interfaces.mongodb import codec
from heliosdb.interfaces.mongodb.commands import auth
from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import COMMANDS, command

VERSION = "7.0.12"
MIN_WIRE_VERSION = 0
MAX_WIRE_VERSION = 21  # MongoDB 7.0: accepted by pymongo 4.x and Node driver 6.x/7.x
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = codec.MAX_MESSAGE_BYTES
MAX_WRITE_BATCH_SIZE = 100_000


def _now() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@command("hello", "isMaster", "ismaster", auth=False)
async def hello(session: Session, request: Request) -> dict[str, Any]:
    """Describe this server: a standalone mongod with MongoDB 7.0's wire range."""
    reply: dict[str, Any] = {}
    if request.name == "hello":
        reply["isWritablePrimary"] = True
    else:
        reply["ismaster"] = True
    if request.body.get("helloOk"):
        reply["helloOk"] = True
    metadata = request.body.get("client")
    if isinstance(metadata, dict):  # the connection's first hello: currentOp shows it
        session.client_metadata = metadata
    offered = request.body.get("compression")
    if isinstance(offered, list):
        session.compressors = [c for c in offered if c in codec.COMPRESSORS]
        if session.compressors:
            reply["compression"] = session.compressors
    reply.update(
        {
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
            "localTime": _now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": session.connection_id,
            "minWireVersion": MIN_WIRE_VERSION,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }
    )
    mechs_for = request.body.get("saslSupportedMechs")
    if isinstance(mechs_for, str):
        reply["saslSupportedMechs"] = list(auth.MECHANISMS)
    speculative = request.body.get("speculativeAuthenticate")
    if isinstance(speculative, dict):
        started = await auth.speculative_start(session, speculative)
        if started is not None:
            reply["speculativeAuthenticate"] = started
    return reply


@command("buildInfo", "buildinfo", auth=False)
async def build_info(session: Session, request: Request) -> dict[str, Any]:
    """Version and build facts (mongosh prints the version)."""
    return {
        "version": VERSION,
        "gitVersion": "heliosdb",
        "versionArray": [int(p) for p in VERSION.split(".")] + [0],
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "modules": [],
        "storageEngines": ["heliosdb"],
        "openssl": {"running": "disabled", "compiled": "disabled"},
        "javascriptEngine": "none",
        "allocator": "system",
        "sysInfo": "deprecated",
    }


@command("ping", auth=False)
async def ping(session: Session, request: Request) -> dict[str, Any]:
    """Answer at once."""
    return {}


@command("getnonce", auth=False)
async def getnonce(session: Session, request: Request) -> dict[str, Any]:
    """Legacy MONGODB-CR nonce (not used by current drivers)."""
    return {"nonce": os.urandom(8).hex()}


@command("getParameter")
async def get_parameter(session: Session, request: Request) -> dict[str, Any]:
    """Server parameters; featureCompatibilityVersion is what clients ask for."""
    sessions = session.state.sessions
    params: dict[str, Any] = {
        "featureCompatibilityVersion": {"version": "7.0"},
        "authenticationMechanisms": list(auth.MECHANISMS),
        "maxBSONDepth": 100,
        "transactionLifetimeLimitSeconds": int(sessions.lifetime_seconds),
        "maxTransactionLockRequestTimeoutMillis": sessions.lock_timeout_ms,
        # how long an idle cursor lives (mongodb.cursor_timeout_seconds)
        "cursorTimeoutMillis": Int64(round(session.state.cursors.idle_seconds * 1000)),
    }
    which = request.body.get("getParameter")
    if which == "*" or (isinstance(which, dict) and which.get("allParameters")):
        return params
    wanted = {k: v for k, v in params.items() if k in request.body}
    if not wanted:
        raise CommandError(72, "no option found to get")
    return wanted


@command("setParameter")
async def set_parameter(session: Session, request: Request) -> dict[str, Any]:
    """Change a run-time parameter of this node (admin keys only): the transaction
    lifetime limit and lock wait."""
    assert session.principal is not None
    if not session.principal.is_admin:
        raise CommandError(13, "setParameter needs an admin key")
    sessions = session.state.sessions
    settable = {
        "transactionLifetimeLimitSeconds": "lifetime_seconds",
        "maxTransactionLockRequestTimeoutMillis": "lock_timeout_ms",
    }
    given = {k: v for k, v in request.body.items() if k in settable}
    if not given:
        raise CommandError(72, "no option found to set, use help:true to see options")
    reply: dict[str, Any] = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise CommandError(2, f"{name} must be a number >= 0")
        if name == "transactionLifetimeLimitSeconds" and value < 1:
            raise CommandError(2, f"{name} must be at least 1")
        reply["was"] = getattr(sessions, settable[name])
        setattr(sessions, settable[name], int(value))
    return reply


@command("getCmdLineOpts")
async def get_cmd_line_opts(session: Session, request: Request) -> dict[str, Any]:
    """The node's command line."""
    import sys

    return {"argv": list(sys.argv), "parsed": {}}


@command("getLog")
async def get_log(session: Session, request: Request) -> dict[str, Any]:
    """No in-memory log is kept: an empty one (mongosh asks for startupWarnings)."""
    if request.body.get("getLog") == "*":
        return {"names": ["global", "startupWarnings"]}
    return {"totalLinesWritten": 0, "log": []}


@command("whatsmyuri")
async def whatsmyuri(session: Session, request: Request) -> dict[str, Any]:
    """The client's own address."""
    return {"you": session.peer}


@command("hostInfo")
async def host_info(session: Session, request: Request) -> dict[str, Any]:
    """Facts about the machine the node runs on."""
    return {
        "system": {
            "currentTime": _now(),
            "hostname": socket.gethostname(),
            "cpuAddrSize": 64,
            "numCores": os.cpu_count() or 1,
            "cpuArch": platform.machine(),
        },
        "os": {
            "type": platform.system(),
            "name": platform.platform(),
            "version": platform.release(),
        },
        "extra": {},
    }


@command("serverStatus")
async def server_status(session: Session, request: Request) -> dict[str, Any]:
    """Uptime, connections, operation counters of this node's MongoDB listener."""
    state = session.state
    uptime = time.monotonic() - state.started_monotonic
    batches = session.services.documents.lookup_batches()
    pipelined, by_id, by_equality = session.services.documents.pipelined_finds()
    return {
        "host": socket.gethostname(),
        "version": VERSION,
        "process": "mongod",
        "pid": Int64(os.getpid()),
        "uptime": float(int(uptime)),
        "uptimeMillis": Int64(int(uptime * 1000)),
        "uptimeEstimate": Int64(int(uptime)),
        "localTime": _now(),
        "connections": {
            "current": state.current,
            "available": max(state.max_connections - state.current, 0),
            "totalCreated": state.total_created,
        },
        "opcounters": {k: Int64(v) for k, v in state.opcounters.items()},
        "network": {
            "compression": {
                name: {
                    "compressor": {"bytesOut": Int64(state.compressed_out.get(number, 0))},
                    "decompressor": {"bytesIn": Int64(state.compressed_in.get(number, 0))},
                }
                for name, number in codec.COMPRESSORS.items()
            }
        },
        "metrics": {"cursor": {"open": {"total": Int64(len(state.cursors))}}},
        "storageEngine": {"name": "heliosdb"},
        # Finds by _id that concurrent clients shared a statement for (lookups.py), and
        # finds answered on a pipelined engine connection (hotpath.take_lone), with the
        # statements several of them shared there by _id and by one indexed equality.
        "heliosdb": {
            "idLookups": _batch_counts(batches),
            "pipelinedFinds": Int64(pipelined),
            "pipelinedIdBatches": _batch_counts(by_id),
            "pipelinedEqualityBatches": _batch_counts(by_equality),
            # update_one answered on a pipelined engine connection (loneupdate.py)
            "pipelinedUpdates": Int64(session.services.documents.pipelined_updates()),
        },
    }


def _batch_counts(counts: tuple[int, int]) -> dict[str, Int64]:
    """serverStatus' form of (statements that answered several finds, the finds they answered)."""
    batches, batched = counts
    return {"batches": Int64(batches), "batched": Int64(batched)}


@command("connectionStatus", auth=False)
async def connection_status(session: Session, request: Request) -> dict[str, Any]:
    """Who this connection is authenticated as."""
    users = []
    roles = []
    if session.principal is not None:
        users = [{"user": session.user, "db": session.auth_db}]
        role = "read" if session.principal.read_only else "readWrite"
        roles = [{"role": f"{role}AnyDatabase", "db": "admin"}]
    return {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": roles}}


@command("listCommands")
async def list_commands(session: Session, request: Request) -> dict[str, Any]:
    """Every command this server knows."""
    commands = {
        name: {
            "help": entry.help,
            "requiresAuth": entry.auth,
            "slaveOk": True,
            "adminOnly": False,
        }
        for name, entry in sorted(COMMANDS.items())
    }
    return {"commands": commands}
