"""Session pooling: one client socket spliced to one engine connection, bytes untouched.

After startup both sockets change protocol objects: whatever one side receives is
written to the other in the same callback, in the chunks the kernel delivered (up to
256 KiB a read), with no message decoding and no task switch. Backpressure is the
transports' own: when a side's write buffer passes its high-water mark, the other
side stops reading until it drains, so a large result or a COPY stream holds at most
one write buffer per direction in memory.

The session ends when either side closes. A client that vanishes without Terminate
gets its running statement cancelled on the engine before the engine socket closes.
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
from heliosdb.security.principals import Principal

log = logging.getLogger("heliosdb.interfaces.postgres")
_ids = itertools.count(1)


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

    def start(self, client_buffered: bytes) -> None:
        """Switch both sockets to relaying; forward what each side already sent."""
        server_buffered = self.engine.take_buffered()
        self.client.set_protocol(_ClientSide(self))
        self.server.set_protocol(_EngineSide(self))
        if client_buffered:
            _ClientSide(self).data_received(client_buffered)
        if server_buffered:
            self.client.write(server_buffered)
        for transport in (self.client, self.server):
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.resume_reading()

    def end(self, client_left: bool) -> None:
        if self.done.done():
            return
        self.done.set_result(None)
        abrupt = client_left and not self.said_goodbye
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


class _ClientSide(asyncio.Protocol):
    __slots__ = ("server", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.server = session.server

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.bytes_in += len(data)
        session.round_trips += 1
        session.awaiting = True
        # Not data.endswith(TERMINATE): bytes methods taking optional bounds build a format
        # string and parse a tuple on every call; most chunks end in another byte than 4.
        session.said_goodbye = data[-1] == 4 and data[-5:] == TERMINATE
        self.server.write(data)

    def pause_writing(self) -> None:
        self.server.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.server.resume_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.end(client_left=True)


class _EngineSide(asyncio.Protocol):
    __slots__ = ("client", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.client = session.client

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.bytes_out += len(data)
        session.awaiting = False
        self.client.write(data)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.client.resume_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.end(client_left=False)
