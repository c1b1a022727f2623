"""The WebSocket listener: the ``websockets`` asyncio server on ``/ws``.

Protocol-level limits live here: the largest message (``max_size``: a bigger one closes
the connection with 1009), heartbeats (a ping every ``heartbeat_seconds``; a peer
that does not answer within the same time is closed), the opening handshake (websockets'
``open_timeout``, 10 s) and open connections (at most ``websocket.max_connections``,
handshakes included: past it a new one is answered 503 before any upgrade and closed).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import ClassVar

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from heliosdb.interfaces._tcp import (
    ConnectionLimit,
    Refusal,
    http_refusal,
    too_many_connections,
)
from heliosdb.interfaces.websocket.connection import Connection, Flusher
from heliosdb.interfaces.websocket.errors import error_object
from heliosdb.services.container import Services
from heliosdb.settings import Settings

log = logging.getLogger("heliosdb.websocket")

PATH = "/ws"
SUBPROTOCOL = "heliosdb.v1"


QUEUED_BYTES = 16 * 1024 * 1024


class _LimitedConnection(ServerConnection):
    """websockets' connection, counted in the listener's limit from its first byte."""

    limit: ClassVar[ConnectionLimit]  # the listener's (a subclass per listener sets both)
    refusal: ClassVar[bytes]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.limit.admit(transport, self._refusal):
            super().connection_made(transport)

    def _refusal(self) -> Refusal:
        return Refusal(self.refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limit.leave()
        super().connection_lost(exc)


class WebSocketListener:
    name = "websocket"

    def __init__(self, services: Services, settings: Settings) -> None:
        self.services = services
        self.settings = settings
        self.server: Server | None = None
        self.state = "stopped"
        self.flusher = Flusher()  # one per event loop: this listener's connections

    @property
    def scheme(self) -> str:
        return "ws"

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = next(iter(self.server.sockets)).getsockname()[:2]
        return host, port

    async def start(self) -> None:
        ws = self.settings.websocket
        heartbeat = ws.heartbeat_seconds or None
        refused = too_many_connections("WebSocket", ws.max_connections)
        connection = type(
            "LimitedConnection",
            (_LimitedConnection,),
            {
                "limit": ConnectionLimit("websocket", ws.max_connections),
                "refusal": http_refusal(orjson.dumps({"error": error_object(refused)})),
            },
        )
        self.server = await serve(
            self._handle,
            self.settings.host,
            ws.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._check_path,
            max_size=ws.max_message_bytes,
            ping_interval=heartbeat,
            ping_timeout=heartbeat,
            # Messages received while the connection is busy (a slow query): at most
            # about QUEUED_BYTES of them, as each may be max_size (64 of the largest
            # held 60 MB per connection).
            max_queue=max(2, min(64, QUEUED_BYTES // ws.max_message_bytes)),
            # permessage-deflate would compress every event once per subscriber: the
            # fan-out's largest cost. Events are small JSON; bandwidth is not the limit.
            compression=None,
            server_header=None,
            # The node's worker processes bind the same port (workers.py).
            reuse_port=self.settings.workers > 1,
            create_connection=connection,
        )
        self.state = "serving"

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"the WebSocket API is at {PATH}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        await Connection(ws, self.services, self.settings.websocket, self.flusher).serve()

    async def stop(self) -> None:
        self.state = "draining"
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()
        self.state = "stopped"
