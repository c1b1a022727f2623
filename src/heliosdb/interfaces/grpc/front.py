"""The gRPC port's front: HeliosDB's calls served here, every other stream relayed.

grpc.aio costs about 500 µs of CPU per unary call on a small machine before any work is
done (its completion queue, poller thread and per-call tasks), several times what the
call itself needs, and about 100 µs per streamed row. So the public port is this small
HTTP/2 server (connection.py):

- a ``heliosdb.v1.HeliosDB`` call in plain ``application/grpc`` is read here and handed
  to the very servicer method grpc.aio would call (servicer.py: same authentication,
  metrics, error funnel) with a small :class:`CallContext`; a unary answer leaves in one
  write, a stream's messages in one DATA frame per loop turn, waiting on the client's
  window (so the engine cursor behind it waits too);
- every other stream (``grpc.health.v1``, server reflection, compressed messages,
  unknown methods) is relayed frame by frame to the grpc.aio server, which listens on a
  private Unix socket; flow control is end to end;
- with the node in several processes (``workers``), a call naming a transaction that
  another process holds is relayed whole to that process's grpc.aio (transaction ids
  start with their process's number).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import socket
import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory

from heliosdb.interfaces._tcp import ConnectionLimit, too_many_connections
from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.interfaces.grpc.auth import credential_in
from heliosdb.interfaces.grpc.connection import Http2Connection, RefusedConnection, Stream
from heliosdb.interfaces.grpc.errors import status_of
from heliosdb.interfaces.grpc.http2 import Headers
from heliosdb.v1 import heliosdb_pb2

log = logging.getLogger("heliosdb.grpc")

# Headers that describe one hop, never forwarded (RFC 9113 8.2.2).
_HOP_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"upgrade"))
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_OK_TRAILERS = h2.encode_headers([(b"grpc-status", b"0")])
_IDENTITY = (None, b"identity")
_ONE_MESSAGE = "a unary request carries exactly one uncompressed message"
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class NativeMethod:
    handler: Callable[[Any, Any], Any]  # the servicer's method
    request_type: Any
    transaction: Callable[[Any], str] | None = None  # the transaction id a request names
    streaming: bool = False  # answers with a stream of messages (an async iterator)


def _query_transaction(request: Any) -> str:
    return str(request.transaction_id.id) if request.HasField("transaction_id") else ""


_TRANSACTION_OF: dict[str, Callable[[Any], str]] = {
    "ExecuteQuery": _query_transaction,
    "ExecuteQueryStream": _query_transaction,
    "CommitTransaction": lambda request: str(request.id),
    "RollbackTransaction": lambda request: str(request.id),
}


def native_methods(servicer: Any, *, routed: bool = False) -> dict[bytes, NativeMethod]:
    """Every RPC of ``heliosdb.v1.HeliosDB`` (unary, or a stream of answers), by its
    HTTP/2 ``:path``; ``routed``: gRPC runs in several processes, so the transaction a
    request names decides which one serves it."""
    service = heliosdb_pb2.DESCRIPTOR.services_by_name["HeliosDB"]
    return {
        f"/{service.full_name}/{method.name}".encode(): NativeMethod(
            getattr(servicer, method.name),
            message_factory.GetMessageClass(method.input_type),
            _TRANSACTION_OF.get(method.name) if routed else None,
            method.server_streaming,
        )
        for method in service.methods
        if not method.client_streaming
    }


def private_address(data_dir: Path, process: int = 0) -> tuple[str, str]:
    """Where process ``process`` of a node runs the grpc.aio server relayed streams go to:
    a Unix socket in the node's run directory (or, when that path is too long for a
    socket, one in the temporary directory named after it), as grpc spells it and as
    asyncio does. Every process of the node works out the others' the same way."""
    run = data_dir.resolve() / "run"
    path = run / f"grpc-{process}.sock"
    if len(str(path)) > 100:
        digest = hashlib.sha256(str(run).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"heliosdb-grpc-{digest}-{process}.sock"
    return f"unix:{path}", str(path)


class CallContext:
    """What servicer.py asks of a call's context: its metadata, and aborting it; and the
    credential the metadata presents (auth.py reads it instead of parsing the metadata)."""

    __slots__ = ("_metadata", "credential", "initial", "status")

    def __init__(self, metadata: Metadata, credential: str | None) -> None:
        self._metadata = metadata
        self.credential = credential
        self.status: grpc.Status | None = None
        # Set by the front for a streamed answer: sends the response headers at once.
        self.initial: Callable[[Sequence[tuple[str, str | bytes]]], None] | None = None

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        if self.initial is not None:
            self.initial(metadata)

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise grpc.aio.AbortError()

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        self.status = _PlainStatus(code, details, tuple(trailing_metadata))
        raise grpc.aio.AbortError()


class _PlainStatus(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def metadata_of(headers: Headers) -> Metadata:
    """A call's metadata as grpc.aio gives it: custom headers, ``-bin`` values decoded."""
    return tuple(
        (name.decode("latin-1"), _metadata_value(name, value))
        for name, value in headers
        if not name.startswith(b":") and name not in (b"te", b"content-type")
    )


def _metadata_value(name: bytes, value: bytes) -> str | bytes:
    if name.endswith(b"-bin"):
        return base64.b64decode(value + b"=" * (-len(value) % 4))
    return value.decode("latin-1")


class FrontConnection(Http2Connection):
    """One client connection to the gRPC port."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.front = front
        self.idle_timeout = front.idle_timeout
        self.upstreams: dict[str, Upstream] = {}  # by Unix socket path
        # What the last header block meant: a client repeating the same block (the
        # decoder answers it with the same list) is not parsed again.
        self._seen: tuple[Headers, NativeMethod | None, _CallHeaders | None] | None = None
        self.calls: set[asyncio.Task[None]] = set()
        self.received = 0  # request bytes read since _held() last summed them

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.front.limit.admit(transport, self._refusal):
            return
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Each answer is one small write: Nagle's wait for the previous one's ACK
            # would hold it back for the peer's delayed-ACK timer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.front.connections.add(self)

    def _refusal(self) -> RefusedConnection:
        return RefusedConnection(self.front.refusal)

    def on_closed(self) -> None:
        self.front.limit.leave()
        self.front.connections.discard(self)
        for task in self.calls:
            task.cancel()
        for upstream in self.upstreams.values():
            upstream.close()

    def on_goaway(self) -> None:
        pass

    # -- streams from the client --------------------------------------------------------

    def on_headers(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        if stream.peer is not None and stream.peer_conn is not None:  # a relayed request's trailers
            stream.peer_conn.send_headers(stream.peer, h2.encode_headers(headers), end_stream)
            return
        if stream.call is not None:
            return  # trailers after a unary request carry nothing a call reads
        method = self._native(headers)
        if method is None:
            self._relay(stream, headers, end_stream, self.front.private_path)
            return
        stream.call = _NativeCall(method, headers)
        if end_stream:
            self._start(stream)

    def _native(self, headers: Headers) -> NativeMethod | None:
        seen = self._seen
        if seen is not None and seen[0] is headers:
            return seen[1]
        method = self._parse_native(headers)
        self._seen = (headers, method, None)
        return method

    def _call_headers(self, headers: Headers) -> _CallHeaders:
        seen = self._seen
        if seen is not None and seen[0] is headers and seen[2] is not None:
            return seen[2]
        metadata = metadata_of(headers)
        credential = credential_in(metadata)
        parsed = _CallHeaders(
            metadata, credential, _timeout(headers), CallContext(metadata, credential)
        )
        if seen is not None and seen[0] is headers:
            self._seen = (headers, seen[1], parsed)
        return parsed

    def _parse_native(self, headers: Headers) -> NativeMethod | None:
        path = content_type = encoding = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
        method = self.front.methods.get(path) if path is not None else None
        if method is None or encoding not in _IDENTITY:
            return None
        if content_type not in (b"application/grpc", b"application/grpc+proto"):
            return None
        return method

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        if stream.peer is not None and stream.peer_conn is not None:
            stream.peer_conn.send_data(stream.peer, data, end_stream)
            return
        call: _NativeCall | None = stream.call
        if call is None:
            return
        if data:
            call.body.append(data)
            call.size += len(data)
            self.consume(stream, len(data))
            self.received += len(data)
            limit = self.front.max_message_bytes + 5
            if call.size > limit:
                stream.call = None
                self._finish(stream, _status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             "request message larger than max"))  # fmt: skip
                return
            if self.received > limit and self._held() > limit:
                stream.call = None
                self._finish(stream, _status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             "the connection's unfinished request messages "
                                             "are larger than max together"))  # fmt: skip
                return
        if end_stream:
            self._start(stream)

    def _held(self) -> int:
        """The request bytes this connection's calls hold now (read, not yet answered).

        The window is credited as bytes arrive, so without this bound a client opening
        many streams, each with a message just under the limit, would have the node hold
        all of them. Summed only when the running count since the last sum passes the
        limit (the bytes of calls answered meanwhile swell that count)."""
        held: int = sum(s.call.size for s in self.streams.values() if s.call is not None)
        self.received = held
        return held

    def on_reset(self, stream: Stream, code: int) -> None:
        if stream.peer is not None and stream.peer_conn is not None:
            stream.peer_conn.reset(stream.peer, h2.CANCEL)
        call: _NativeCall | None = stream.call
        if call is not None and call.task is not None:
            call.task.cancel()
            self.calls.discard(call.task)  # a task cancelled before it ran never ends _run

    def on_sent(self, stream: Stream, n: int) -> None:
        if stream.peer is not None and stream.peer_conn is not None:
            stream.peer_conn.consume(stream.peer, n)

    # -- native unary calls -------------------------------------------------------------

    def _start(self, stream: Stream) -> None:
        call: _NativeCall = stream.call
        task = self._loop.create_task(self._run(stream, call))
        call.task = task
        self.calls.add(task)  # taken out by _run itself: no done callback per call

    async def _run(self, stream: Stream, call: _NativeCall) -> None:
        try:
            body = b"".join(call.body) if len(call.body) != 1 else call.body[0]
            if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5]) != len(body) - 5:
                self._finish(stream, _status(grpc.StatusCode.INTERNAL, _ONE_MESSAGE))
                return
            parsed = self._call_headers(call.headers)
            timeout = parsed.timeout
            method = call.method
            # A unary call shares its header block's context (see _CallHeaders); a stream
            # gets its own, whose ``initial`` sends its headers.
            context = parsed.context
            try:
                request = method.request_type.FromString(body[5:])
                if method.transaction is not None:
                    owner = self.front.owner_of(method, request)
                    if owner is not None:
                        # Another process holds the transaction: the call goes there whole.
                        self._relay(stream, call.headers, False, owner, body)
                        return
                handler = method.handler
                if method.streaming:
                    context = CallContext(parsed.metadata, parsed.credential)
                    await self._run_stream(stream, handler(request, context), context, timeout)
                    return
                if timeout is None:
                    response = await handler(request, context)
                else:
                    async with asyncio.timeout(timeout):
                        response = await handler(request, context)
            except grpc.aio.AbortError:
                assert context.status is not None
                self._finish(stream, context.status)
                return
            except TimeoutError:
                self._finish(
                    stream, _status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
                )
                return
            except Exception as exc:  # noqa: BLE001 - a bad request body; the servicer funnels the rest
                log.debug("gRPC request not decoded: %s", exc)
                self._finish(stream, _status(grpc.StatusCode.INTERNAL, "cannot decode the request"))
                return
            if stream.id not in self.streams or self.closed:
                return  # reset by the client meanwhile
            payload = response.SerializeToString()
            if len(payload) > self.front.max_message_bytes:
                self._finish(stream, _status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             "response message larger than max"))  # fmt: skip
                return
            message = b"\x00" + len(payload).to_bytes(4) + payload
            max_frame = self.peer_max_frame
            if len(message) <= min(stream.window, self.send_window, max_frame) and not stream.queue:
                # The common case, in one write: headers, the message, the trailers.
                stream.window -= len(message)
                self.send_window -= len(message)
                self.write(
                    h2.unary_frames(stream.id, self.front.response_block, message, _OK_TRAILERS)
                )
                self._ended_by_us(stream)
                return
            self.send_headers(stream, self.front.response_block)
            self.send_data(stream, message)
            self.send_headers(stream, _OK_TRAILERS, end_stream=True)
        finally:
            self.calls.discard(call.task)  # type: ignore[arg-type]

    async def _run_stream(
        self,
        stream: Stream,
        messages: AsyncGenerator[Any, None],
        context: CallContext,
        timeout: float | None,
    ) -> None:
        """A streamed answer: the messages made in one turn of the event loop leave in one
        DATA frame; while the client's window is shut the handler waits (and with it the
        engine cursor), so memory stays flat whatever the result's size."""
        out = _Outbox(self, stream, context)
        context.initial = out.headers
        try:
            await self._send_stream(stream, messages, out, timeout)
        finally:
            await messages.aclose()  # a cancel may have come while it was not running

    async def _send_stream(
        self,
        stream: Stream,
        messages: AsyncGenerator[Any, None],
        out: _Outbox,
        timeout: float | None,
    ) -> None:
        context = out.context
        try:
            async with asyncio.timeout(timeout):
                async for message in messages:
                    payload = message.SerializeToString()
                    if len(payload) > self.front.max_message_bytes:
                        raise grpc.aio.AbortError()
                    out.add(b"\x00" + len(payload).to_bytes(4) + payload)
                    if stream.queue or out.size >= 65_536:
                        await out.drain()
        except grpc.aio.AbortError:
            status = context.status or _status(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "response message larger than max"
            )
            out.flush()
            self._finish(stream, status, headers_sent=out.headers_sent)
            return
        except TimeoutError:
            out.flush()
            deadline = _status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self._finish(stream, deadline, headers_sent=out.headers_sent)
            return
        out.flush()
        if stream.id in self.streams and not self.closed:
            out.headers(())
            self.send_headers(stream, _OK_TRAILERS, end_stream=True)

    def _finish(self, stream: Stream, status: grpc.Status, *, headers_sent: bool = False) -> None:
        """The trailers carrying ``status`` (trailers-only unless headers went out)."""
        if stream.id not in self.streams or self.closed:
            return
        self.send_headers(stream, status_block(status, headers_sent=headers_sent), end_stream=True)

    # -- relayed streams ----------------------------------------------------------------

    def _upstream(self, path: str) -> Upstream:
        upstream = self.upstreams.get(path)
        if upstream is None or upstream.closed or upstream.draining:
            upstream = self.upstreams[path] = Upstream(self)
            self._loop.create_task(upstream.connect(path))
        return upstream

    def _relay(
        self, stream: Stream, headers: Headers, end_stream: bool, path: str, body: bytes = b""
    ) -> None:
        """Relay ``stream`` to the grpc.aio server at ``path``; ``body``: the request
        bytes already read here (and credited to the client)."""
        if stream.id not in self.streams or self.closed:
            return
        upstream = self._upstream(path)
        forwarded = [(n, v) for n, v in headers if n not in _HOP_HEADERS]
        block = h2.encode_headers(forwarded)
        stream.call = None
        stream.peer_conn = upstream
        stream.peer = upstream.open_stream(stream, block, end_stream and not body)
        if body:
            stream.peer.credited = True
            upstream.send_data(stream.peer, body, True)


class _Outbox:
    """A streamed answer's messages, gathered until the event loop's turn ends."""

    __slots__ = ("conn", "context", "headers_sent", "pending", "scheduled", "size", "stream")

    def __init__(self, conn: FrontConnection, stream: Stream, context: CallContext) -> None:
        self.conn = conn
        self.stream = stream
        self.context = context
        self.pending: list[bytes] = []
        self.size = 0
        self.scheduled = False
        self.headers_sent = False

    def headers(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        if self.headers_sent or self.stream.id not in self.conn.streams:
            return
        self.headers_sent = True
        extra = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in metadata]
        self.conn.send_headers(self.stream, h2.response_headers(extra))

    def add(self, message: bytes) -> None:
        self.pending.append(message)
        self.size += len(message)
        if not self.scheduled:
            self.scheduled = True
            self.conn._loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        self.size = 0
        if self.stream.id in self.conn.streams and not self.conn.closed:
            self.headers(())
            self.conn.send_data(self.stream, data)

    async def drain(self) -> None:
        """Send what is gathered; wait while the peer's window keeps it queued."""
        self.flush()
        stream = self.stream
        while stream.queue and stream.id in self.conn.streams and not self.conn.closed:
            waiter = self.conn._loop.create_future()
            stream.drained = waiter
            await waiter


@dataclass(frozen=True, slots=True)
class _CallHeaders:
    """What a request's header block says to a native call; ``context``: the one
    CallContext of the unary calls sent with that block. Sharing it is safe: what a call
    changes on it is ``status``, set by ``abort_with_status`` and read by ``_run`` as the
    AbortError it raises arrives, with no await between for another call to run in."""

    metadata: Metadata
    credential: str | None
    timeout: float | None
    context: CallContext


class _NativeCall:
    __slots__ = ("body", "headers", "method", "size", "task")

    def __init__(self, method: NativeMethod, headers: Headers) -> None:
        self.method = method
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.task: asyncio.Task[None] | None = None


class Upstream(Http2Connection):
    """The client side of the relay: one connection to grpc.aio per front connection."""

    client_side = True

    def __init__(self, front: FrontConnection) -> None:
        super().__init__()
        self.front = front
        self.next_stream = 1
        self.draining = False

    async def connect(self, path: str) -> None:
        try:
            await self._loop.create_unix_connection(lambda: self, path)
        except OSError as exc:
            log.warning("gRPC relay cannot reach the grpc.aio server: %s", exc)
            self.connection_lost(exc)

    def open_stream(self, front_stream: Stream, block: bytes, end_stream: bool) -> Stream:
        stream = Stream(self.next_stream, self.peer_initial_window)
        self.next_stream += 2
        stream.peer = front_stream
        stream.peer_conn = self.front
        self.streams[stream.id] = stream
        if end_stream:
            stream.ended_by_us = True
        self.write(h2.headers_frames(stream.id, block, end_stream, self.peer_max_frame))
        return stream

    def _ended_by_us(self, stream: Stream) -> None:
        stream.ended_by_us = True
        if stream.ended_by_peer:
            self.streams.pop(stream.id, None)

    def on_headers(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        if stream.peer is not None:
            self.front.send_headers(stream.peer, h2.encode_headers(headers), end_stream)

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        if stream.peer is not None:
            self.front.send_data(stream.peer, data, end_stream)
            if not data:
                return
            # Credit comes back as the client takes the bytes (FrontConnection.on_sent).

    def on_sent(self, stream: Stream, n: int) -> None:
        if stream.peer is not None and not stream.credited:
            self.front.consume(stream.peer, n)

    def on_reset(self, stream: Stream, code: int) -> None:
        if stream.peer is not None:
            if self.transport is None:
                code = h2.REFUSED_STREAM  # grpc.aio never answered: the client may retry
            elif code == h2.NO_ERROR:
                code = h2.INTERNAL_ERROR
            self.front.reset(stream.peer, code)

    def on_goaway(self) -> None:
        # No new streams here; the ones open finish, later ones get a new connection.
        self.draining = True


class Front:
    """The listening side: accepted connections, the native method table, where relayed
    streams go. ``process`` / ``processes``: this process's number and how many serve the
    port (``workers``), or None for a node serving gRPC from one process."""

    def __init__(
        self,
        servicer: Any,
        max_message_bytes: int,
        data_dir: Path,
        *,
        process: int | None = None,
        processes: int = 1,
        max_connections: int,
        idle_timeout: float = 0.0,
    ) -> None:
        self.process = process
        self.processes = processes
        self.data_dir = data_dir
        self.methods = native_methods(servicer, routed=process is not None)
        self.max_message_bytes = max_message_bytes
        self.private_path = private_address(data_dir, process or 0)[1]
        self.response_block = h2.response_headers()
        self.connections: set[FrontConnection] = set()
        self.limit = ConnectionLimit("grpc", max_connections)  # what connections may open
        self.idle_timeout = idle_timeout  # Http2Connection.idle_timeout of its connections
        self.refusal = status_block(status_of(too_many_connections("gRPC", max_connections)))
        self.server: asyncio.Server | None = None

    def owner_of(self, method: NativeMethod, request: Any) -> str | None:
        """Where a call must be relayed: the private socket of the process holding the
        transaction it names; None: serve it here."""
        if method.transaction is not None:
            number, dot, _ = method.transaction(request).partition(".")
            owner = int(number) if dot and number.isdigit() else self.process
            if owner != self.process and owner is not None and owner < self.processes:
                return private_address(self.data_dir, owner)[1]
        return None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        shared = self.process is not None  # every process of the node binds the port
        server = await loop.create_server(
            lambda: FrontConnection(self), host, port, reuse_port=shared or None
        )
        ports = {s.getsockname()[1] for s in server.sockets}
        if len(ports) > 1:  # port 0 on a name with several addresses: one port for all
            first = server.sockets[0].getsockname()[1]
            server.close()
            server = await loop.create_server(
                lambda: FrontConnection(self), host, first, reuse_port=shared or None
            )
        self.server = server
        port_: int = server.sockets[0].getsockname()[1]
        return port_

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.write(h2.goaway(conn.last_peer_stream, h2.NO_ERROR))
        calls = [t for conn in self.connections for t in conn.calls]
        if calls:
            await asyncio.wait(calls, timeout=grace)
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


def status_block(status: grpc.Status, *, headers_sent: bool = False) -> bytes:
    """The header block of trailers carrying ``status``: trailers-only (with the
    response's leading fields) unless headers went out already."""
    fields = [
        (b"grpc-status", str(status.code.value[0]).encode()),
        (b"grpc-message", _percent(status.details or "")),
    ]
    for key, value in status.trailing_metadata or ():
        if key.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            fields.append((key.encode(), base64.b64encode(raw).rstrip(b"=")))
        else:
            text = value if isinstance(value, str) else value.decode()
            fields.append((key.encode(), text.encode()))
    return h2.encode_headers(fields) if headers_sent else h2.response_headers(fields)


def _status(code: grpc.StatusCode, details: str) -> grpc.Status:
    return _PlainStatus(code, details, ())


def _timeout(headers: Headers) -> float | None:
    for name, value in headers:
        if name == b"grpc-timeout":
            unit = _TIMEOUT_UNITS.get(value[-1:])
            if unit is None or not value[:-1].isdigit():
                return None
            return int(value[:-1]) * unit
    return None


def _percent(text: str) -> bytes:
    """grpc-message: UTF-8, with bytes outside printable ASCII and '%' percent-encoded."""
    raw = text.encode()
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)
