"""authenticate and ping."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heliosdb.interfaces.websocket.codec import Request
    from heliosdb.interfaces.websocket.connection import Connection


async def authenticate(conn: Connection, request: Request) -> dict[str, Any]:
    principal = await conn.authenticate(request.data.get("token"))
    return {
        "authenticated": True,
        "principal": {"name": principal.name, "kind": principal.kind.value},
        "read_only": principal.read_only,
        "expires_at": principal.expires_at.isoformat() if principal.expires_at else None,
        "subscriptions": sorted(conn.subscriptions),
    }


async def ping(conn: Connection, request: Request) -> dict[str, Any]:
    return {"pong": True, "time": dt.datetime.now(dt.UTC).isoformat()}
