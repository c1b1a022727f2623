"""The Redis listener: the shared TCP plumbing, one Session per connection."""

from __future__ import annotations

import asyncio

from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.redis import commands as _commands  # noqa: F401 - registers commands
from heliosdb.interfaces.redis.connection import Server, serve
from heliosdb.interfaces.redis.hotpath import RedisProtocol
from heliosdb.security.tls import server_context
from heliosdb.services.container import Services


class RedisListener(TcpListener):
    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.redis = Server(services=services, settings=settings, kv=services.keyvalue)
        context = server_context(settings.tls)
        super().__init__(
            "redis",
            "rediss" if context is not None else "redis",
            settings.host,
            settings.redis.port,
            self._handle,
            grace_seconds=2.0,
            ssl_context=context,
            protocol_class=RedisProtocol,
            reuse_port=settings.workers > 1,
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(self.redis, reader, writer)

    async def start(self) -> None:
        await self.redis.kv.start()
        await super().start()
        self.redis.port = self.address[1]

    async def stop(self) -> None:
        for client in list(self.redis.clients.values()):
            client.closing = True
        await super().stop()
        await self.redis.kv.stop()
