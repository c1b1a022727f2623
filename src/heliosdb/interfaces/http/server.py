"""The HTTP listener: uvicorn on a socket we bind, so port 0 works and we own shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from heliosdb.settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The node owns SIGINT/SIGTERM and stops every listener together.
        yield


class HttpListener:
    name = "http"

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.settings = settings
        tls = settings.tls
        options: dict[str, object] = {}
        if tls.enabled:
            options = {
                "ssl_certfile": str(tls.cert_file),
                "ssl_keyfile": str(tls.key_file),
                "ssl_ca_certs": str(tls.client_ca_file) if tls.client_ca_file else None,
                "ssl_cert_reqs": {
                    "none": ssl.CERT_NONE,
                    "optional": ssl.CERT_OPTIONAL,
                    "require": ssl.CERT_REQUIRED,
                }[tls.client_auth],
            }
        self.config = uvicorn.Config(
            app,
            lifespan="off",
            http="httptools",  # the C parser: several times faster than h11
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(settings.http.shutdown_grace_seconds),
            **options,  # type: ignore[arg-type]
        )
        self.server = _Server(self.config)
        self.socket: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.state = "stopped"

    @property
    def scheme(self) -> str:
        return "https" if self.settings.tls.enabled else "http"

    @property
    def address(self) -> tuple[str, int]:
        assert self.socket is not None
        host, port = self.socket.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.http.port))
        sock.listen(2048)
        sock.setblocking(False)
        self.socket = sock
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.state = "serving"

    async def stop(self) -> None:
        self.state = "draining"
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.state = "stopped"
