"""The gRPC listener: a grpc.aio server with HeliosDB, grpc.health.v1 and reflection.

By default (``grpc.front``, without TLS) the public port is the HTTP/2 front of
front.py, which serves HeliosDB's calls itself and relays every other stream (health,
reflection) to the grpc.aio server on a private Unix socket. With TLS (the node's ``tls:`` settings,
client certificates when ``tls.client_auth`` asks for them) grpc.aio serves the port.
Either way at most ``grpc.max_connections`` client connections are open at once, and one
without a call for ``grpc.idle_timeout`` gets GOAWAY and closes.
``grpc.so_reuseport`` is off, so a second node on the same port fails to start instead
of sharing it silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from heliosdb.interfaces.grpc.front import Front, private_address
from heliosdb.interfaces.grpc.servicer import HeliosDBServicer
from heliosdb.services.container import Services
from heliosdb.settings import Settings
from heliosdb.v1 import heliosdb_pb2, heliosdb_pb2_grpc

log = logging.getLogger("heliosdb.grpc")

SERVICE_NAME = heliosdb_pb2.DESCRIPTOR.services_by_name["HeliosDB"].full_name


class GrpcListener:
    name = "grpc"

    def __init__(self, services: Services, settings: Settings, process: int = 0) -> None:
        """``process``: which of the node's processes this is (0: the node itself, 1..:
        its workers) when the node serves gRPC from several (``workers``, see front.py)."""
        self.services = services
        self.settings = settings
        self.process = process
        self.server: grpc.aio.Server | None = None
        self.front: Front | None = None
        self.private_path: str | None = None
        self.health = HealthServicer()
        self.port = 0
        self.state = "stopped"

    @property
    def scheme(self) -> str:
        return "grpcs" if self.settings.tls.enabled else "grpc"

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.host, self.port

    async def start(self) -> None:
        limit = self.settings.grpc.max_message_bytes
        front = self.settings.grpc.front and not self.settings.tls.enabled
        options: list[tuple[str, int]] = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
        if not front:
            # grpc.aio serves the port: its core closes connections past the limit (with no
            # reply a client could show; the front answers them with a status).
            options.append(
                ("grpc.max_allowed_incoming_connections", self.settings.grpc.max_connections)
            )
            if self.settings.grpc.idle_timeout:
                idle_ms = int(self.settings.grpc.idle_timeout * 1000)
                options.append(("grpc.max_connection_idle_ms", idle_ms))
        server = grpc.aio.server(options=options)
        shared = front and self.settings.workers > 1
        servicer = HeliosDBServicer(self.services, self.process if shared else None)
        heliosdb_pb2_grpc.add_HeliosDBServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )  # fmt: skip
        host = self.settings.host
        target = f"[{host}]:{self.settings.grpc.port}" if ":" in host else (
            f"{host}:{self.settings.grpc.port}"
        )  # fmt: skip
        if front:
            private, private_path = private_address(self.settings.data_dir, self.process)
            Path(private_path).parent.mkdir(parents=True, exist_ok=True)
            Path(private_path).unlink(missing_ok=True)
            if not server.add_insecure_port(private):
                raise OSError(f"gRPC cannot listen on {private}")
            await server.start()
            self.server = server
            self.private_path = private_path
            self.front = Front(
                servicer,
                limit,
                self.settings.data_dir,
                process=self.process if shared else None,
                processes=self.settings.workers,
                max_connections=self.settings.grpc.max_connections,
                idle_timeout=self.settings.grpc.idle_timeout,
            )
            try:
                self.port = await self.front.start(host, self.settings.grpc.port)
            except OSError as exc:
                await server.stop(None)
                self.server = self.front = None
                raise OSError(f"gRPC cannot listen on {target}: {exc}") from None
            await self._serving()
            return
        try:
            if self.settings.tls.enabled:
                self.port = server.add_secure_port(target, _credentials(self.settings))
            else:
                self.port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {target}: {exc}") from None
        if not self.port:
            raise OSError(f"gRPC cannot listen on {target}")
        await server.start()
        self.server = server
        await self._serving()

    async def _serving(self) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.state = "serving"

    async def stop(self) -> None:
        if self.server is None:
            return
        self.state = "draining"
        await self.health.enter_graceful_shutdown()
        grace = self.settings.grpc.shutdown_grace_seconds
        if self.front is not None:
            await self.front.stop(grace)
            self.front = None
        await self.server.stop(grace)
        if self.private_path is not None:
            Path(self.private_path).unlink(missing_ok=True)
        await self.services.transactions.close_all()
        self.server = None
        self.state = "stopped"


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        raise OSError("tls.enabled needs tls.cert_file and tls.key_file")
    key = tls.key_file.read_bytes()
    cert = tls.cert_file.read_bytes()
    roots = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=roots,
        require_client_auth=tls.client_auth == "require",
    )
