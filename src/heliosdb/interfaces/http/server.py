"""The HTTP listener: uvicorn on a socket we bind, so port 0 works and we own shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from heliosdb.settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The node owns SIGINT/SIGTERM and stops every listener together.
        yield


class _CoalescingTransport(asyncio.Transport):
    """A transport whose writes within one event-loop step leave in one send.

    uvicorn writes a response's status line and headers, then its body, as two writes:
    two send() calls, two TCP segments. On the query hot path that second system call
    cost more than the JSON rendering; joined, the response leaves in one.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class _HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))


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
            http=_HttpProtocol,  # httptools, the C parser: several times faster than h11
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(settings.http.shutdown_grace_seconds),
            # X-Forwarded-For from a local client must not rewrite the client address.
            proxy_headers=False,
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
        if self.settings.workers > 1:
            # The node's worker processes bind the same port; the kernel spreads new
            # connections across them (workers.py).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
