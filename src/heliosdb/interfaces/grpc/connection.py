"""One HTTP/2 connection as an asyncio protocol: frames, settings, both flow-control windows.

:class:`Http2Connection` is the state machine both ends share (the front's server side
and its client side towards grpc.aio, see front.py); subclasses get streams through four
hooks: ``on_headers``, ``on_data``, ``on_reset`` and ``on_sent`` (DATA bytes of a
stream just written, which a proxy turns into window credit for the other side).

Flow control: what this side receives is credited back by ``consume()`` once used, so a
peer can never have more than a window's worth outstanding; what it sends waits in a
per-stream queue for the peer's windows. Everything written in one turn of the event
loop leaves in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from heliosdb.interfaces._tcp import close_later, half_close
from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.interfaces.grpc.http2 import Headers, ProtocolError

log = logging.getLogger("heliosdb.grpc")

RECEIVE_WINDOW = 1 << 20  # per stream and per connection
MAX_HEADER_LIST = 64 * 1024
# Streams a client may have open on one connection (each holds state here; HPACK makes a
# new one cost the client a few bytes): past it a new stream is refused, as RFC 9113
# 5.1.2 has it, and gRPC clients queue their calls.
MAX_STREAMS = 1000
_PADDED_OR_PRIORITY = h2.PADDED | h2.PRIORITY_FLAG


class Stream:
    __slots__ = (
        "call",
        "credited",
        "drained",
        "ended_by_peer",
        "ended_by_us",
        "held",
        "id",
        "peer",
        "peer_conn",
        "queue",
        "unacked",
        "window",
    )

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.window = window  # what the peer still accepts from us
        self.unacked = 0  # received and used, not yet credited back
        self.held = 0  # received, not yet used
        self.queue: deque[tuple[bool, bytes, bool]] = deque()  # (is_headers, bytes, end)
        self.ended_by_peer = False
        self.ended_by_us = False
        self.peer: Stream | None = None  # the proxied stream on the other connection
        self.peer_conn: Http2Connection | None = None  # ... and that connection
        self.credited = False  # what it receives was credited already (not on relay)
        self.drained: asyncio.Future[None] | None = None  # woken when the queue empties
        self.call: Any = None  # a native call (front.py)


class Http2Connection(asyncio.Protocol):
    client_side = False
    # Server side: a connection with no stream open at a check, and none begun since the
    # previous one, is sent GOAWAY and closed; checks are this many seconds apart (so it
    # goes between one and two of them after its last call). 0: never.
    idle_timeout = 0.0
    called = False  # a stream began since the last idle check
    _idle_timer: asyncio.TimerHandle | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = h2.FrameReader()
        self.decoder = h2.HeaderDecoder(MAX_HEADER_LIST)
        self.streams: dict[int, Stream] = {}
        self.last_peer_stream = 0
        self.send_window = h2.DEFAULT_WINDOW
        self.peer_initial_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = h2.DEFAULT_MAX_FRAME
        self.unacked = 0
        self.blocked: dict[int, Stream] = {}
        self.closed = False
        # The client preface seen so far (a client sends it, so has nothing to wait for).
        self._preface = h2.PREFACE if self.client_side else b""
        self._continuing: tuple[int, int, list[bytes]] | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        hello = h2.settings_frame(
            {
                h2.ENABLE_PUSH: 0,
                h2.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                h2.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                **({} if self.client_side else {h2.MAX_CONCURRENT_STREAMS: MAX_STREAMS}),
            }
        ) + h2.window_update(0, RECEIVE_WINDOW - h2.DEFAULT_WINDOW)
        self.write((h2.PREFACE if self.client_side else b"") + hello)

    # -- output ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is None or not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        if not self.closed:
            self.transport.write(data)

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        if stream.queue:
            stream.queue.append((True, block, end_stream))
            return
        self.write(h2.headers_frames(stream.id, block, end_stream, self.peer_max_frame))
        if end_stream:
            self._ended_by_us(stream)

    def send_data(self, stream: Stream, data: bytes, end_stream: bool = False) -> None:
        stream.queue.append((False, data, end_stream))
        self._drain(stream)

    def reset(self, stream: Stream, code: int) -> None:
        if self.streams.pop(stream.id, None) is not None and not self.closed:
            self.write(h2.rst_stream(stream.id, code))
        self.blocked.pop(stream.id, None)
        stream.queue.clear()
        self._wake(stream)

    @staticmethod
    def _wake(stream: Stream) -> None:
        if stream.drained is not None:
            waiter, stream.drained = stream.drained, None
            if not waiter.done():
                waiter.set_result(None)

    def consume(self, stream: Stream, n: int) -> None:
        """Credit ``n`` received bytes back to the peer, in batches of half a window."""
        self.unacked += n
        if self.unacked >= RECEIVE_WINDOW // 2:
            self.write(h2.window_update(0, self.unacked))
            self.unacked = 0
        stream.held -= n
        stream.unacked += n
        if stream.unacked >= RECEIVE_WINDOW // 2 and not stream.ended_by_peer:
            self.write(h2.window_update(stream.id, stream.unacked))
            stream.unacked = 0

    def _drain(self, stream: Stream) -> None:
        queue = stream.queue
        while queue:
            is_headers, data, end = queue[0]
            if is_headers:
                queue.popleft()
                self.write(h2.headers_frames(stream.id, data, end, self.peer_max_frame))
                if end:
                    self._ended_by_us(stream)
                continue
            n = min(len(data), stream.window, self.send_window, self.peer_max_frame)
            if n <= 0 and data:
                if self.send_window <= 0:
                    self.blocked[stream.id] = stream
                return
            last = n == len(data)
            if last:
                queue.popleft()
            else:
                queue[0] = (False, data[n:], end)
            self.write(h2.frame(h2.DATA, h2.END_STREAM if last and end else 0, stream.id, data[:n]))
            stream.window -= n
            self.send_window -= n
            if n:
                self.on_sent(stream, n)
            if last and end:
                self._ended_by_us(stream)
        self._wake(stream)

    def _ended_by_us(self, stream: Stream) -> None:
        stream.ended_by_us = True
        if stream.ended_by_peer:
            self.streams.pop(stream.id, None)
        elif not self.client_side:
            # The response is complete: the rest of the request is of no use (RFC 9113 8.1).
            self.reset(stream, h2.NO_ERROR)

    # -- input ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        if self._out:
            self._flush()
        if self.idle_timeout:
            self._idle_timer = self._loop.call_later(self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self.closed:
            return
        if self.streams or self.called:
            self.called = False
            self._idle_timer = self._loop.call_later(self.idle_timeout, self._check_idle)
            return
        self._idle_timer = None
        self.write(h2.goaway(self.last_peer_stream, h2.NO_ERROR))
        self.close()

    def data_received(self, data: bytes) -> None:
        try:
            if len(self._preface) < len(h2.PREFACE):
                data = self._take_preface(data)
            for kind, flags, stream_id, payload in self.reader.feed(data):
                self._frame(kind, flags, stream_id, payload)
        except ProtocolError as exc:
            log.debug("HTTP/2 protocol error: %s", exc)
            self.write(h2.goaway(self.last_peer_stream, exc.code, str(exc).encode()[:200]))
            self._flush()
            self.close()

    def _take_preface(self, data: bytes) -> bytes:
        seen = self._preface + data
        need = len(h2.PREFACE)
        if not h2.PREFACE.startswith(seen[:need]):
            raise ProtocolError("not an HTTP/2 connection preface")
        self._preface = seen[:need]
        return seen[need:]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None:
            if kind != h2.CONTINUATION or stream_id != self._continuing[0]:
                raise ProtocolError("expected CONTINUATION")
            self._continuing[2].append(payload)
            if sum(map(len, self._continuing[2])) > 2 * MAX_HEADER_LIST:
                # A header block that never ends would hold memory forever.
                raise ProtocolError("header block too large", h2.ENHANCE_YOUR_CALM)
            if flags & h2.END_HEADERS:
                sid, first_flags, parts = self._continuing
                self._continuing = None
                self._headers(sid, first_flags, b"".join(parts))
            return
        if kind == h2.DATA:
            self._data(flags, stream_id, payload)
        elif kind == h2.HEADERS:
            if not stream_id:
                raise ProtocolError("HEADERS on stream 0")
            # Padding and priority fields are rare: most blocks are the payload itself.
            block = (
                h2.strip_padding(flags, payload, priority=True)
                if flags & _PADDED_OR_PRIORITY
                else payload
            )
            if flags & h2.END_HEADERS:
                self._headers(stream_id, flags, block)
            else:
                self._continuing = (stream_id, flags, [block])
        elif kind == h2.SETTINGS:
            if not flags & h2.ACK:
                self._settings(h2.parse_settings(payload))
        elif kind == h2.WINDOW_UPDATE:
            self._window_update(stream_id, h2.parse_u32(payload))
        elif kind == h2.PING:
            if not flags & h2.ACK:
                self.write(h2.frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self.blocked.pop(stream_id, None)
                stream.queue.clear()
                self.on_reset(stream, h2.parse_u32(payload))
        elif kind == h2.GOAWAY:
            self.on_goaway()
        elif kind == h2.PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE is disabled")
        elif kind == h2.CONTINUATION:
            raise ProtocolError("CONTINUATION without HEADERS")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5).

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)
        end = bool(flags & h2.END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is None:
            if self.client_side or stream_id <= self.last_peer_stream or not stream_id & 1:
                return  # a stream already closed (a late trailer after our reset)
            self.last_peer_stream = stream_id
            self.called = True
            if len(self.streams) >= MAX_STREAMS:
                self.write(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
                return
            stream = Stream(stream_id, self.peer_initial_window)
            self.streams[stream_id] = stream
        if end:
            self._ended_by_peer(stream)
        self.on_headers(stream, headers, end)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        data = h2.strip_padding(flags, payload) if flags & h2.PADDED else payload
        padding = len(payload) - len(data)
        end = bool(flags & h2.END_STREAM)
        if stream is None or stream.ended_by_peer:
            # A stream already closed: its bytes still count against the connection window.
            self.unacked += len(payload)
            if self.unacked >= RECEIVE_WINDOW // 2:
                self.write(h2.window_update(0, self.unacked))
                self.unacked = 0
            return
        stream.held += len(payload)
        if stream.held + stream.unacked > RECEIVE_WINDOW:
            # More than the window this side gave: a peer ignoring flow control would
            # otherwise make a relay buffer without bound.
            raise ProtocolError("stream window exceeded", h2.FLOW_CONTROL_ERROR)
        if padding:
            self.consume(stream, padding)
        if end:
            self._ended_by_peer(stream)
        self.on_data(stream, data, end)

    def _ended_by_peer(self, stream: Stream) -> None:
        stream.ended_by_peer = True
        if stream.ended_by_us:
            self.streams.pop(stream.id, None)

    def _settings(self, values: dict[int, int]) -> None:
        window = values.get(h2.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > h2.MAX_WINDOW:
                raise ProtocolError("INITIAL_WINDOW_SIZE too large", h2.FLOW_CONTROL_ERROR)
            delta, self.peer_initial_window = window - self.peer_initial_window, window
            for stream in self.streams.values():
                stream.window += delta
        frame_size = values.get(h2.MAX_FRAME_SIZE)
        if frame_size is not None:
            if not h2.DEFAULT_MAX_FRAME <= frame_size <= 2**24 - 1:
                raise ProtocolError("bad MAX_FRAME_SIZE")
            self.peer_max_frame = frame_size
        self.write(h2.frame(h2.SETTINGS, h2.ACK, 0))
        if window is not None:
            for stream in list(self.streams.values()):
                if stream.queue:
                    self._drain(stream)

    def _window_update(self, stream_id: int, increment: int) -> None:
        if not stream_id:
            self.send_window += increment
            if self.send_window > h2.MAX_WINDOW:
                raise ProtocolError("connection window overflow", h2.FLOW_CONTROL_ERROR)
            blocked, self.blocked = self.blocked, {}
            for stream in blocked.values():
                self._drain(stream)
            return
        target = self.streams.get(stream_id)
        if target is not None:
            target.window += increment
            if target.queue:
                self._drain(target)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.queue.clear()
            self.on_reset(stream, h2.CANCEL)
        self.on_closed()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()
        self.closed = True

    # -- hooks ----------------------------------------------------------------------------

    def on_headers(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, stream: Stream, code: int) -> None:
        """The peer reset ``stream``, or the connection ended under it."""

    def on_sent(self, stream: Stream, n: int) -> None:
        """``n`` DATA bytes of ``stream`` were written."""

    def on_goaway(self) -> None:
        """The peer starts no new streams here."""

    def on_closed(self) -> None:
        """The connection is gone."""


class RefusedConnection(Http2Connection):
    """A connection past the gRPC listener's limit (_tcp.ConnectionLimit).

    Its first stream is answered at once with ``trailers`` (a trailers-only response
    whose status says why), then GOAWAY names that stream the last and the node sends
    nothing more; the connection ends when the client closes it or after
    _tcp.LINGER_SECONDS. A GOAWAY before any stream would be clearer to no one: grpcio
    reconnects at once, again and again, and the call ends in DEADLINE_EXCEEDED.
    """

    def __init__(self, trailers: bytes) -> None:
        super().__init__()
        self.trailers = trailers
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.timer = close_later(transport)

    def on_headers(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        if self.answered or self.transport is None:
            return  # after GOAWAY: the client starts the call again elsewhere
        self.answered = True
        self.send_headers(stream, self.trailers, end_stream=True)
        self.write(h2.goaway(stream.id, h2.NO_ERROR))
        self._flush()
        half_close(self.transport)

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        self.consume(stream, len(data))

    def on_closed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
