"""The MongoDB listener: the shared TCP plumbing with this protocol's connection loop."""

from __future__ import annotations

import asyncio
import functools

from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.mongodb import registry
from heliosdb.interfaces.mongodb.connection import ServerState, serve
from heliosdb.services.container import Services
from heliosdb.settings import Settings


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

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.state_shared.current >= self.state_shared.max_connections:
            return
        await serve(self.state_shared, reader, writer)
