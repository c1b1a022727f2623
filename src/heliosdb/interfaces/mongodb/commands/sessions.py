"""Logical sessions and transactions. The transaction statements themselves (anything
carrying ``lsid`` + ``txnNumber``, commit and abort included) are routed through
transactions.py by the dispatcher; these handlers are what is left."""

from __future__ import annotations

import uuid
from typing import Any

from bson.binary import Binary

from heliosdb.interfaces.mongodb.connection import Request, Session
from heliosdb.interfaces.mongodb.errors import CommandError
from heliosdb.interfaces.mongodb.registry import command


def _lsids(request: Request) -> list[Any]:
    ids = request.body.get(request.name)
    if isinstance(ids, dict):
        ids = [ids]
    if not isinstance(ids, list):
        raise CommandError(14, f"BSON field '{request.name}' is the wrong type, expected 'array'")
    # killSessions takes {id, uid} documents too; endSessions plain {id} documents.
    return ids


def _ids(lsids: list[Any]) -> set[bytes]:
    """The ids of well-formed lsid documents (their cursors end with them)."""
    return {
        bytes(lsid["id"])
        for lsid in lsids
        if isinstance(lsid, dict) and isinstance(lsid.get("id"), bytes)
    }


@command("endSessions", auth=False)
async def end_sessions(session: Session, request: Request) -> dict[str, Any]:
    """End sessions: their open transactions abort, their cursors close."""
    if session.principal is not None:
        lsids = _lsids(request)
        session.state.cursors.end_sessions(session.owner, _ids(lsids))
        await session.state.sessions.end(session.owner, lsids)
    return {}


@command("killSessions")
async def kill_sessions(session: Session, request: Request) -> dict[str, Any]:
    """Kill sessions of this principal: their open transactions abort, their cursors close."""
    lsids = _lsids(request)
    session.state.cursors.end_sessions(session.owner, _ids(lsids))
    await session.state.sessions.end(session.owner, lsids)
    return {}


@command("killAllSessions")
async def kill_all_sessions(session: Session, request: Request) -> dict[str, Any]:
    """Kill every session of this principal on this node."""
    session.state.cursors.end_sessions(session.owner)
    await session.state.sessions.end_all(session.owner)
    return {}


@command("refreshSessions")
async def refresh_sessions(session: Session, request: Request) -> dict[str, Any]:
    """Sessions are kept alive by use: nothing to refresh."""
    return {}


@command("startSession")
async def start_session(session: Session, request: Request) -> dict[str, Any]:
    """A new logical session id."""
    return {"id": {"id": Binary(uuid.uuid4().bytes, 4)}, "timeoutMinutes": 30}


@command("commitTransaction", "abortTransaction")
async def transactions(session: Session, request: Request) -> dict[str, Any]:
    """Reached only without lsid/txnNumber: there is no transaction to finish."""
    raise CommandError(
        251, f"{request.name} needs the lsid and txnNumber of a transaction on this session"
    )
