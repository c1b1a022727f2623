"""Session pooling: one client socket spliced to one engine connection, bytes untouched.

After startup both sockets change protocol objects: whatever one side receives is
written to the other in the same callback, in the chunks the kernel delivered (up to
256 KiB a read), with no message decoding and no task switch. Backpressure is the
transports' own: when a side's write buffer passes its high-water mark, the other
side stops reading until it drains, so a large result or a COPY stream holds at most
one write buffer per direction in memory.

Two ways to relay, the same bytes either way:

- spliced (a plain TCP client, no idle timeout): each side's ``data_received`` is the
  other transport's ``write`` itself, so uvloop hands a chunk from one socket to the
  other without running any Python code. The kernel counts the traffic (traffic.py).
- counted (TLS, or ``postgres.idle_timeout`` set, or no TCP counters): a Python callback
  per chunk counts bytes and writes, and notes whether the client spoke last (the idle
  sweep's "no statement running") and whether its last bytes were a Terminate.

The session ends when either side closes. A client that vanishes without Terminate
gets its running statement cancelled on the engine before the engine socket closes.
Spliced, the gateway does not see the Terminate: when the client is gone it shuts the
engine socket for writing instead. A backend that got a Terminate, or is idle, then
ends and closes at once; one still running a statement after ``GRACE_SECONDS`` gets it
cancelled, as a counted session's would at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import cast

from heliosdb.engine import Engine
from heliosdb.engine.relay import EngineSession, cancel
from heliosdb.interfaces.postgres.codec import TERMINATE, CancelKey
from heliosdb.interfaces.postgres.traffic import SocketTraffic, Traffic, traffic_of
from heliosdb.security.principals import Principal

log = logging.getLogger("heliosdb.interfaces.postgres")
_ids = itertools.count(1)
# Spliced: how long a backend may take to end after its client is gone before what it
# runs is cancelled (an idle backend, or one that got a Terminate, ends at once).
GRACE_SECONDS = 0.5


class Session:
    """One relayed client session and its counters (read by the metrics collector)."""

    def __init__(
        self,
        gateway_engine: Engine,
        principal: Principal,
        key: CancelKey,
        engine: EngineSession,
        client: asyncio.Transport,
        on_end: Callable[[Session, bool], None],
    ) -> None:
        self.id = next(_ids)
        self.gateway_engine = gateway_engine
        self.principal = principal
        self.key = key
        self.engine = engine
        self.client = client
        self.server = cast(asyncio.Transport, engine.writer.transport)
        self.bytes_in = 0
        self.bytes_out = 0
        self.round_trips = 0
        self.awaiting = False  # the client spoke last: a statement may be running
        self.said_goodbye = False  # the client's last bytes were a Terminate
        self._on_end = on_end
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Spliced: the kernel's counters of the client socket; None when counted here.
        self.kernel_traffic: SocketTraffic | None = None
        self._grace: asyncio.TimerHandle | None = None

    def start(self, client_buffered: bytes, splice: bool = False) -> None:
        """Switch both sockets to relaying; forward what each side already sent.
        ``splice``: relay without Python per chunk if the client socket allows it."""
        server_buffered = self.engine.take_buffered()
        if splice:
            self.kernel_traffic = SocketTraffic.of_plain(self.client)
        if self.kernel_traffic is not None:
            self.client.set_protocol(_Spliced(self.server, self._client_gone))
            self.server.set_protocol(_Spliced(self.client, self._engine_gone))
            if client_buffered:
                self.server.write(client_buffered)
        else:
            self.client.set_protocol(_ClientSide(self))
            self.server.set_protocol(_EngineSide(self))
            if client_buffered:
                _ClientSide(self).data_received(client_buffered)
        if server_buffered:
            self.client.write(server_buffered)
        for transport in (self.client, self.server):
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.resume_reading()

    def traffic(self) -> Traffic:
        """Bytes from and to the client and client writes relayed, so far."""
        return traffic_of(self.kernel_traffic, self.bytes_in, self.bytes_out, self.round_trips)

    def _engine_gone(self) -> None:
        self.end(client_left=False)

    def _client_gone(self) -> None:
        """Spliced: the client closed, with or without a Terminate (not looked at): shut
        the engine socket for writing and see whether the backend ends by itself."""
        if self.done.done():
            return
        if self.kernel_traffic is not None:
            self.kernel_traffic.close()  # the last counts; the client socket may go
        self.server.set_protocol(_Draining(self))
        try:
            self.server.write_eof()
        except (RuntimeError, OSError):
            self.end(client_left=True, abrupt=True)
            return
        self._grace = asyncio.get_running_loop().call_later(GRACE_SECONDS, self._overdue)

    def _overdue(self) -> None:
        """The backend still runs something for a client that is gone: cancel it."""
        self._grace = None
        self.end(client_left=True, abrupt=True)

    def end(self, client_left: bool, abrupt: bool = False) -> None:
        """``abrupt``: the client left without a Terminate; cancel what may be running."""
        if self.done.done():
            return
        self.done.set_result(None)
        if self._grace is not None:
            self._grace.cancel()
        if self.kernel_traffic is not None:
            self.kernel_traffic.close()
        if client_left:
            self.server.close()
        else:
            self.client.close()
        self._on_end(self, abrupt)

    async def cancel_running(self) -> None:
        """Cancel what the engine backend runs now (a CancelRequest of its own key)."""
        engine = self.engine
        await cancel(self.gateway_engine, self.principal.access, engine.pid, engine.secret)

    def expire(self, error: bytes) -> None:
        """Tell the (idle) client why, then close both sides."""
        self.client.write(error)
        self.server.close()
        self.end(client_left=False)

    def terminate(self) -> None:
        """Close both sides now (node shutdown)."""
        self.client.abort()
        self.server.abort()
        self.end(client_left=False)


class _Side(asyncio.Protocol):
    """One socket of a relayed session; ``peer`` is the other one's transport. A full
    write buffer on one side pauses reading on the other."""

    __slots__ = ("peer",)

    def __init__(self, peer: asyncio.Transport) -> None:
        self.peer = peer

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.peer.resume_reading()

    def eof_received(self) -> bool:
        return False


class _Spliced(_Side):
    """One side of a spliced session. ``data_received`` is an instance attribute holding
    the other transport's ``write`` (uvloop looks it up once, at ``set_protocol``), so a
    chunk goes from one socket to the other without a Python frame."""

    __slots__ = ("data_received", "gone")

    def __init__(self, peer: asyncio.Transport, gone: Callable[[], None]) -> None:
        super().__init__(peer)
        self.data_received = peer.write  # type: ignore[method-assign]
        self.gone = gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone()


class _Draining(asyncio.Protocol):
    """The engine side of a spliced session whose client is gone: replies are dropped
    until the backend closes (or the grace period ends)."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.end(client_left=True)


class _ClientSide(_Side):
    """Counted: the client's chunks, counted and written to the engine."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        super().__init__(session.server)
        self.session = session

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.bytes_in += len(data)
        session.round_trips += 1
        session.awaiting = True
        # Not data.endswith(TERMINATE): bytes methods taking optional bounds build a format
        # string and parse a tuple on every call; most chunks end in another byte than 4.
        session.said_goodbye = data[-1] == 4 and data[-5:] == TERMINATE
        self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        session.end(client_left=True, abrupt=not session.said_goodbye)


class _EngineSide(_Side):
    """Counted: the engine's chunks, counted and written to the client."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        super().__init__(session.client)
        self.session = session

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.bytes_out += len(data)
        session.awaiting = False
        self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.end(client_left=False)
