"""One client's WebSocket session: its principal, subscriptions and bounded outbox.

Requests are handled in the order they arrive; each gets exactly one response. Outgoing
messages leave through one writer task: responses and subscription errors first
(``control``, small: the reader waits while it is long), then events from a queue of
at most ``queue_messages``. The change hub offers events without waiting; when the
queue is full the offer is refused and that subscription ends with a slow-consumer
error (services/changes/hub.py). Nothing here grows without a limit.

Events take a shorter way when they can: once the hub has offered a batch, one
callback (:class:`Flusher`, one per listener) writes each connection's queued frames
straight to its transport, one write per connection, when that connection's writer is
idle, nothing else waits to be sent and the transport's buffer is small. Otherwise it
wakes the writer, which sends in order and waits for the drain (so a slow client keeps
its bounded queue and the slow-consumer rule). This saves waking one writer task per
subscriber per batch, the fan-out's largest cost after framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from heliosdb.errors import ErrorCode, HeliosError, unauthenticated
from heliosdb.interfaces.websocket import codec
from heliosdb.interfaces.websocket.errors import CLOSE_CODES, error_object
from heliosdb.interfaces.websocket.registry import ACTIONS
from heliosdb.observability.metrics import AUTH_FAILURES
from heliosdb.security.principals import Principal
from heliosdb.services.changes import ChangeEvent, Subscription, stagetimes
from heliosdb.services.container import Services
from heliosdb.settings import WebSocketSettings

log = logging.getLogger("heliosdb.websocket")

CONTROL_LIMIT = 256
_BATCH_MESSAGES = 512
_BATCH_BYTES = 256 * 1024
_WRITE_BUFFER_BYTES = 64 * 1024  # above this, wait for the transport to drain
_WATCH_SECONDS = 1.0


class Flusher:
    """Writes the connections' queued events once the current batch has been offered."""

    def __init__(self) -> None:
        self._pending: list[Connection] = []
        self._scheduled = False

    def add(self, connection: Connection) -> None:
        self._pending.append(connection)
        if not self._scheduled:
            self._scheduled = True
            # After the hub's current slice of offers: every frame queued by then
            # leaves in the same write.
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        started = time.time()
        for connection in pending:
            try:
                connection.flush()
            except Exception:  # one connection's failure must not hold up the others
                log.exception("writing events to a WebSocket connection failed")
        if stagetimes.enabled() and pending:
            delivered = pending[0].services.changes.hub.delivered
            stagetimes.record("flush", delivered, started, time.time(), len(pending))


class Connection:
    def __init__(
        self,
        ws: ServerConnection,
        services: Services,
        settings: WebSocketSettings,
        flusher: Flusher | None = None,
    ) -> None:
        self.ws = ws
        self.services = services
        self.settings = settings
        self.principal: Principal | None = None
        self.token: str | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self._control: deque[str] = deque()
        self._events: deque[bytes] = deque()  # whole WebSocket frames
        self._queue_limit = settings.queue_messages
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._flusher = flusher or Flusher()
        self._flush_pending = False  # registered with the flusher
        self._busy = False  # the writer holds messages it has not written yet
        self.opened = self.last_message = time.monotonic()
        self.last_credential_check = self.opened
        self.revocations_seen = services.keys.revocations

    # -- reading ------------------------------------------------------------------

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write())
        watchdog = asyncio.create_task(self._watch())
        try:
            async for message in self.ws:
                self.last_message = time.monotonic()
                await self.handle(message)
        except ConnectionClosed:
            pass
        finally:
            for sub in list(self.subscriptions.values()):
                self.services.changes.unsubscribe(sub)
            self.subscriptions.clear()
            for task in (writer, watchdog):
                task.cancel()
            for task in (writer, watchdog):
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def handle(self, message: str | bytes) -> None:
        request: codec.Request | None = None
        try:
            request = codec.parse_request(message)
            entry = ACTIONS.get(request.action)
            if entry is None:
                raise HeliosError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"unknown action {request.action!r}; use " + ", ".join(sorted(ACTIONS)),
                )
            if entry.needs_auth and self.principal is None:
                raise unauthenticated("authenticate first: send the authenticate action")
            data = await entry.handler(self, request)
            self.send_control(codec.encode_response(request.id, request.action, data))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one response
            request_id = request.id if request is not None else None
            if request is None and isinstance(exc, HeliosError):
                request_id = exc.details.pop("id", None)
            action = request.action if request is not None else None
            self.send_control(codec.encode_failure(request_id, action, error_object(exc)))
        if len(self._control) > CONTROL_LIMIT:
            self._drained.clear()
            await self._drained.wait()

    # -- credentials --------------------------------------------------------------

    async def authenticate(self, token: Any) -> Principal:
        if not isinstance(token, str) or not token.strip():
            AUTH_FAILURES.labels("websocket").inc()
            raise unauthenticated("data.token must be an API key")
        try:
            principal = await self.services.keys.authenticate(token.strip())
        except HeliosError:
            AUTH_FAILURES.labels("websocket").inc()
            raise
        self.principal, self.token = principal, token.strip()
        self.last_credential_check = time.monotonic()
        self.revocations_seen = self.services.keys.revocations
        for sub in list(self.subscriptions.values()):
            if not await self.services.changes.still_allowed(principal, sub):
                self.services.changes.unsubscribe(sub)
                self.end(
                    sub,
                    HeliosError(
                        ErrorCode.PERMISSION_DENIED,
                        f"the new credential may not read {sub.schema}.{sub.table}",
                    ),
                )
            else:
                sub.principal = principal
        return principal

    # -- writing ------------------------------------------------------------------

    def send_control(self, text: str) -> None:
        self._control.append(text)
        self._ready.set()

    def offer(
        self, subscription: Subscription, event: ChangeEvent, match: tuple[bool, bool] | None
    ) -> bool:
        if len(self._events) >= self._queue_limit:
            return False
        # The whole frame, built once per event for every subscriber with the same
        # subscription id and filter match (e.g. many clients subscribing as "sub-1").
        key = (subscription.id, match)
        frame = event.encoded.get(key)
        if frame is None:
            frame = codec.text_frame(codec.encode_event(subscription.id, event.payload, match))
            event.encoded[key] = frame
        self._events.append(frame)
        if not self._flush_pending:
            self._flush_pending = True
            self._flusher.add(self)
        return True

    def flush(self) -> None:
        """Write the queued events now if nothing is ahead of them; else wake the writer.

        Only while the writer holds nothing (``_busy``: it may be waiting for a drain
        with frames taken from the queue) and no control message waits: so each
        subscriber still gets everything in order.
        """
        self._flush_pending = False
        events = self._events
        if not events:
            return
        ws = self.ws
        if (
            self._busy
            or self._control
            or ws.protocol.state is not State.OPEN
            or ws.transport.get_write_buffer_size() >= _WRITE_BUFFER_BYTES
        ):
            self._ready.set()
            return
        if len(events) == 1:
            data = events.popleft()
        else:
            data = b"".join(events)
            events.clear()
        ws.transport.write(data)
        if not self._room.is_set():
            self._room.set()

    async def wait_room(self) -> None:
        while len(self._events) >= self.settings.queue_messages // 2:
            self._room.clear()
            await self._room.wait()

    def end(self, subscription: Subscription, error: HeliosError) -> None:
        self.subscriptions.pop(subscription.id, None)
        self.send_control(codec.encode_error(subscription.id, error_object(error)))

    async def _write(self) -> None:
        limit = self.settings.queue_messages
        while True:
            await self._ready.wait()
            self._ready.clear()
            self._busy = True
            while self._control or self._events:
                if self._control:
                    await self.ws.send(self._control.popleft())
                    if len(self._control) <= CONTROL_LIMIT // 2:
                        self._drained.set()
                    continue
                events = self._events
                batch = [events.popleft()]
                size = len(batch[0])
                while events and len(batch) < _BATCH_MESSAGES and size < _BATCH_BYTES:
                    frame = events.popleft()
                    batch.append(frame)
                    size += len(frame)
                await self._send_events(batch)
                if len(self._events) < limit // 2:
                    self._room.set()
            self._busy = False
            self._drained.set()
            self._room.set()

    async def _send_events(self, batch: list[bytes]) -> None:
        # Whole frames (codec.text_frame), one transport write for the batch: no Frame
        # objects, no per-frame write. While the connection is open and its transport
        # buffer small, that is all; otherwise websockets' send context does what its own
        # send() does: raise if the connection closed, wait for the drain (flow control).
        ws = self.ws
        data = b"".join(batch)
        if ws.protocol.state is State.OPEN and (
            ws.transport.get_write_buffer_size() < _WRITE_BUFFER_BYTES
        ):
            ws.transport.write(data)  # the socket keeps up: no wait
            return
        async with ws.send_context():  # closed: raises; else waits for the drain
            ws.transport.write(data)

    # -- limits -------------------------------------------------------------------

    async def _watch(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            now = time.monotonic()
            if self.subscriptions:
                # A subscriber may just listen; the heartbeat (protocol pings) tells
                # whether it is still there.
                self.last_message = now
            if self.principal is None and now - self.opened > settings.auth_timeout:
                await self.close_with(unauthenticated("no authenticate message in time"))
                return
            if settings.idle_timeout and now - self.last_message > settings.idle_timeout:
                await self.close_with(
                    HeliosError(ErrorCode.UNAVAILABLE, "idle timeout: no message from the client"),
                    code=1001,
                )
                return
            if self.principal is not None and await self._credential_ended(now):
                return

    async def _credential_ended(self, now: float) -> bool:
        """Past its expiry, or revoked: say so, close, and return True."""
        assert self.principal is not None
        expires_at = self.principal.expires_at
        if expires_at is not None and dt.datetime.now(dt.UTC) >= expires_at:
            await self.close_with(
                HeliosError(
                    ErrorCode.UNAUTHENTICATED,
                    f"the credential expired at {expires_at.isoformat()}; connect again "
                    "and authenticate with a valid key (authenticate before expires_at "
                    "to keep the subscriptions)",
                    reason="credential_expired",
                    expired_at=expires_at.isoformat(),
                )
            )
            return True
        # A revoke anywhere bumps `revocations` (NOTIFY): re-check at once, and in any
        # case every credential_check_seconds.
        revoked_somewhere = self.services.keys.revocations != self.revocations_seen
        due = now - self.last_credential_check > self.settings.credential_check_seconds
        if self.token is None or not (revoked_somewhere or due):
            return False
        self.last_credential_check = now
        self.revocations_seen = self.services.keys.revocations
        try:
            await self.services.keys.authenticate(self.token)
        except HeliosError as exc:
            if exc.code is not ErrorCode.UNAUTHENTICATED:
                return False  # the engine is unreachable: not the credential's fault
            await self.close_with(
                HeliosError(
                    ErrorCode.UNAUTHENTICATED,
                    "the credential was revoked (or expired); connect again and "
                    "authenticate with a valid key",
                    reason="credential_revoked",
                )
            )
            return True
        return False

    async def close_with(self, error: HeliosError, code: int | None = None) -> None:
        """Say why (an ``error`` message), then close."""
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(codec.encode_error(None, error_object(error)))
            await self.ws.close(code or CLOSE_CODES.get(error.code, 1008), error.message[:120])
