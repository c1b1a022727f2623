"""The MongoDB listener: the shared TCP plumbing with this protocol's connection loop."""

from __future__ import annotations

import asyncio
import functools
import ssl

from heliosdb.engine import Access
from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.mongodb import registry
from heliosdb.interfaces.mongodb.connection import MongoProtocol, ServerState, serve
from heliosdb.interfaces.mongodb.cursors import CursorStore
from heliosdb.interfaces.mongodb.transactions import SessionTable
from heliosdb.security.principals import Principal, PrincipalKind
from heliosdb.services.container import Services
from heliosdb.settings import Settings

TTL_PRINCIPAL = Principal(
    id="mongodb-ttl",
    name="MongoDB TTL monitor",
    kind=PrincipalKind.API_KEY,
    access=Access.READ_WRITE,
)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS on the whole connection when the node serves TLS (mongodb://...?tls=true)."""
    tls = settings.tls
    if not tls.enabled or tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        context.load_verify_locations(str(tls.client_ca_file))
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "require": ssl.CERT_REQUIRED,
    }[tls.client_auth]
    return context


class MongoListener(TcpListener):
    def __init__(self, services: Services, settings: Settings) -> None:
        self.state_shared = ServerState(services)
        self.state_shared.max_connections = settings.mongodb.max_connections
        self.state_shared.cursors = CursorStore(settings.mongodb.cursor_timeout_seconds)
        services.documents.stream_slots.limit = settings.mongodb.max_streaming_cursors
        services.documents.max_stage_bytes = settings.mongodb.max_stage_bytes
        self.state_shared.sessions = SessionTable(
            settings.mongodb.transaction_lifetime_limit_seconds,
            settings.mongodb.transaction_lock_timeout_ms,
            settings.mongodb.max_transactions_per_principal,
        )
        registry.load()
        super().__init__(
            "mongodb",
            "mongodb",
            settings.host,
            settings.mongodb.port,
            functools.partial(self._serve_client),
            ssl_context=tls_context(settings),
            protocol_class=MongoProtocol,
        )

    async def start(self) -> None:
        await super().start()
        # TTL indexes: one sweep a minute, as MongoDB's TTL monitor does.
        self.state_shared.services.documents.start_ttl(TTL_PRINCIPAL)

    async def stop(self) -> None:
        await super().stop()
        # Open transactions roll back and give their engine connections back.
        await self.state_shared.sessions.end_all()
        await self.state_shared.cursors.close_all()
        await self.state_shared.services.documents.close()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.state_shared.current >= self.state_shared.max_connections:
            return
        await serve(self.state_shared, reader, writer)
