"""Logical sessions and transactions. Sessions need no server state here; this
server presents itself as a standalone, on which drivers do not start transactions."""

from __future__ import annotations

import uuid
from typing import Any

from bson.binary import Binary

from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command


@command("endSessions", auth=False)
async def end_sessions(session: Session, request: Request) -> dict[str, Any]:
    """Sessions hold nothing on this server: nothing to end."""
    return {}


@command("killSessions", "killAllSessions", "refreshSessions")
async def kill_sessions(session: Session, request: Request) -> dict[str, Any]:
    """Sessions hold nothing on this server: nothing to kill or refresh."""
    return {}


@command("startSession")
async def start_session(session: Session, request: Request) -> dict[str, Any]:
    """A new logical session id."""
    return {"id": {"id": Binary(uuid.uuid4().bytes, 4)}, "timeoutMinutes": 30}


@command("commitTransaction", "abortTransaction")
async def transactions(session: Session, request: Request) -> dict[str, Any]:
    """Transactions need a replica set; this server is a standalone."""
    raise CommandError(20, "Transaction numbers are only allowed on a replica set member or mongos")
