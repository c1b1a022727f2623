"""The MongoDB listener: the shared TCP plumbing with this protocol's connection loop."""

from __future__ import annotations

import asyncio
import functools

from heliosdb.engine import Access
from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.mongodb import registry
from heliosdb.interfaces.mongodb.connection import ServerState, serve
from heliosdb.security.principals import Principal, PrincipalKind
from heliosdb.services.container import Services
from heliosdb.settings import Settings

TTL_PRINCIPAL = Principal(
    id="mongodb-ttl",
    name="MongoDB TTL monitor",
    kind=PrincipalKind.API_KEY,
    access=Access.READ_WRITE,
)


class MongoListener(TcpListener):
    def __init__(self, services: Services, settings: Settings) -> None:
        self.state_shared = ServerState(services)
        self.state_shared.max_connections = settings.mongodb.max_connections
        registry.load()
        super().__init__(
            "mongodb",
            "mongodb",
            settings.host,
            settings.mongodb.port,
            functools.partial(self._serve_client),
        )

    async def start(self) -> None:
        await super().start()
        # TTL indexes: one sweep a minute, as MongoDB's TTL monitor does.
        self.state_shared.services.documents.start_ttl(TTL_PRINCIPAL)

    async def stop(self) -> None:
        await self.state_shared.services.documents.stop_ttl()
        await super().stop()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.state_shared.current >= self.state_shared.max_connections:
            return
        await serve(self.state_shared, reader, writer)
