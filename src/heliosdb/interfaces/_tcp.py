"""Shared TCP plumbing for the wire-protocol listeners: bind, accept, track, drain.

    listener = TcpListener("redis", "redis", host, port, handle)
    await listener.start()   # binds (port 0 = any free port); state "serving"
    await listener.stop()    # stops accepting, gives handlers ``grace`` seconds, cancels

``handle(reader, writer)`` runs once per client connection in its own task; the
listener closes the socket when it returns or fails, and logs unexpected failures once.
Protocol-specific limits and error replies stay in the interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

log = logging.getLogger("heliosdb.interfaces.tcp")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
STREAM_LIMIT = 1 << 20


class TcpListener:
    def __init__(
        self,
        name: str,
        scheme: str,
        host: str,
        port: int,
        handle: Handler,
        *,
        grace_seconds: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        protocol_class: type[asyncio.StreamReaderProtocol] = asyncio.StreamReaderProtocol,
        reuse_port: bool = False,
    ) -> None:
        self.name = name
        self._scheme = scheme
        self.host = host
        self.port = port
        self.handle = handle
        self.grace_seconds = grace_seconds
        # TLS from the first byte (protocols without an in-band upgrade, such as MongoDB).
        self.ssl_context = ssl_context
        # A StreamReaderProtocol subclass may take bytes in the read callback itself (Redis).
        self.protocol_class = protocol_class
        # Other processes of the node bind the same port (workers.py).
        self.reuse_port = reuse_port
        self.state = "stopped"
        self.socket: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def address(self) -> tuple[str, int]:
        assert self.socket is not None
        host, port = self.socket.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        return len(self.tasks)

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        sock.setblocking(False)
        self.socket = sock
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
            return self.protocol_class(reader, self._serve, loop=loop)

        self.server = await loop.create_server(protocol, sock=sock, ssl=self.ssl_context)
        self.state = "serving"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s connection failed", self.name)
        finally:
            self.tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        self.state = "draining"
        if self.server is not None:
            self.server.close()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.grace_seconds)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
        self.state = "stopped"
