"""Shared TCP plumbing for the wire-protocol listeners: bind, accept, track, drain.

    listener = TcpListener("redis", "redis", host, port, handle)
    await listener.start()   # binds (port 0 = any free port); state "serving"
    await listener.stop()    # stops accepting, gives handlers ``grace`` seconds, cancels

``handle(reader, writer)`` runs once per client connection in its own task; the
listener closes the socket when it returns or fails, and logs unexpected failures once.
Protocol-specific limits and error replies stay in the interface.

Also here, for listeners with protocols of their own (REST, gRPC, WebSocket): the limit on
open connections (:class:`ConnectionLimit`: count, refuse with the protocol's own reply,
linger, metrics) and the process's open-files limit (:func:`raise_file_limit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.observability.metrics import REFUSED_CONNECTIONS, open_gauge
from heliosdb.settings import Settings

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


# How long a refused connection stays after its reply at most: the client reads the reply
# and closes; what it sent meanwhile is read and dropped, since closing a socket with
# unread bytes resets the connection, and a reset can discard the reply before the
# client reads it.
LINGER_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1


class ConnectionLimit:
    """One listener's open client connections and the most it holds at once.

    A listener's protocol calls :meth:`admit` from ``connection_made`` and, if admitted,
    :meth:`leave` from ``connection_lost``. Past the limit, ``admit`` hands the transport
    to the protocol ``refusal()`` makes (which answers in the client's protocol, see
    :class:`Refusal`), counts it in ``heliosdb_refused_connections_total`` and returns
    False: the listener's protocol never starts. Admitted connections are
    ``heliosdb_open_connections``.
    """

    __slots__ = ("_gauge", "_refused", "limit", "open")

    def __init__(self, interface: str, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._gauge = open_gauge(interface)
        self._refused = REFUSED_CONNECTIONS.labels(interface)

    def admit(
        self, transport: asyncio.BaseTransport, refusal: Callable[[], asyncio.BaseProtocol]
    ) -> bool:
        if self.open < self.limit:
            self.open += 1
            self._gauge.inc()
            return True
        self._refused.inc()
        protocol = refusal()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return False

    def leave(self) -> None:
        self.open -= 1
        self._gauge.dec()


def close_later(transport: asyncio.BaseTransport) -> asyncio.TimerHandle:
    """Close a refused connection ``LINGER_SECONDS`` from now, whatever the client does."""
    return asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


def half_close(transport: asyncio.WriteTransport) -> None:
    """No more bytes from us (FIN once the reply is out): the client reads to the end and
    closes; a TLS transport cannot half-close and closes when the client does, or at the
    linger timer."""
    if transport.can_write_eof():
        transport.write_eof()


class Refusal(asyncio.Protocol):
    """A connection past its listener's limit: ``reply`` at once, then it ends when the
    client closes its side or after ``LINGER_SECONDS``, reading and dropping what the
    client sends meanwhile. Nothing is parsed and nothing is kept."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's transports subclass nothing
        self.timer = close_later(stream)
        stream.write(self.reply)
        half_close(stream)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def too_many_connections(listener: str, limit: int) -> HeliosError:
    """What a connection past ``listener``'s limit is told, in its protocol's error form."""
    return HeliosError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"the node holds its maximum of {limit} open {listener} connections; retry later",
        limit=limit,
        retry_after=RETRY_AFTER_SECONDS,
    )


def http_refusal(body: bytes) -> bytes:
    """An HTTP/1.1 ``503`` with the JSON error ``body``, ``Retry-After`` and
    ``Connection: close``: the refusal of a listener whose clients speak HTTP/1.1 first
    (REST, and WebSocket before its upgrade). A client may send its request before or
    after reading it."""
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: %d\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
        % (RETRY_AFTER_SECONDS, len(body))
    )
    return head + body


FILES_RESERVED = 1000  # engine pools, pipelines, log and metrics files, the listeners


def raise_file_limit(settings: Settings) -> int:
    """Raise this process's soft limit on open files to its hard limit (the worker
    processes inherit it), and warn when the listeners' connection limits together could
    pass it: then file descriptors would run out (every interface failing, the engine's
    connections too) before the limits refuse anyone. Returns the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit: Linux's default fs.nr_open (an unlimited soft one is refused).
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY:
        soft = target
    elif soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        else:
            log.info("open-files limit raised from %d to %d", soft, target)
            soft = target
    connections = {
        "http.max_connections": settings.http.max_connections,
        "grpc.max_connections": settings.grpc.max_connections,
        "websocket.max_connections": settings.websocket.max_connections,
        "postgres.max_connections": settings.postgres.max_connections,
        "redis.max_clients": settings.redis.max_clients,
        "mongodb.max_connections": settings.mongodb.max_connections,
    }
    wanted = sum(connections.values()) + FILES_RESERVED
    if wanted > soft:
        log.warning(
            "the open-files limit (%d) is below what the connection limits allow (%s, plus "
            "%d for the engine and the node's own files): raise it (ulimit -n, systemd "
            "LimitNOFILE) or lower those settings",
            soft,
            ", ".join(f"{name} {value}" for name, value in connections.items()),
            FILES_RESERVED,
        )
    return soft
